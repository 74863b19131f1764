"""Learning-rate schedule: linear warmup from 0.1·lr to lr, then cosine to 0 (or constant).

The schedule is a pure function of the global step, and its state is that step, so resuming
restores the exact learning rate (no warmup restart) and an old checkpoint without scheduler
state can be synced from its step alone.
"""

from __future__ import annotations

import math

import torch

WARMUP_START = 0.1  # warmup starts at this fraction of the peak lr (the guide's 3e-5 -> 3e-4)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "cosine") -> float:
    """The learning rate used for the update of batch ``step`` (0-based)."""
    if step < warmup_steps:
        return base_lr * (WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps)
    if kind == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimizer's lr for each step; ``state_dict`` is the step counter."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "cosine"):
        self.optimizer = optimizer
        self.base_lr, self.warmup_steps, self.total_steps, self.kind = base_lr, warmup_steps, total_steps, kind
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return lr_at(self.step_count, self.base_lr, self.warmup_steps, self.total_steps, self.kind)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def sync_to(self, step: int) -> None:
        self.step_count = step
        self._apply()

    def state_dict(self) -> dict[str, float | int | str]:
        return {"step": self.step_count, "base_lr": self.base_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        self.sync_to(int(state["step"]))
