"""Learning-rate schedule: linear warmup from 0.1·lr to lr, then cosine to 0 (or constant).

The learning rate is a pure function of the global step and the plan, so resuming restores the
exact learning rate (no warmup restart) and an old checkpoint without scheduler state can be
synced from its step alone. When a resume changes the run's length (``--epochs``), the plan
changes with it: a longer run takes the cosine of the new length from here on (as if it had
been planned that long from the start), so extending a finished or nearly finished run trains
at a useful learning rate rather than at the old plan's ~0; a shorter run bends the cosine from
the current learning rate down to zero at the new end, so it never jumps up.
"""

from __future__ import annotations

import math
from typing import Any

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


def _cosine_from(step: int, start_step: int, start_lr: float, total_steps: int) -> float:
    """Cosine decay from ``start_lr`` at ``start_step`` to 0 at ``total_steps``."""
    progress = min(1.0, (step - start_step) / max(1, total_steps - start_step))
    return start_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimizer's lr for each step; its state is the step and the plan."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        kind: str = "cosine",
    ):
        self.optimizer = optimizer
        self.base_lr, self.warmup_steps, self.total_steps, self.kind = base_lr, warmup_steps, total_steps, kind
        self.replanned_at: tuple[int, float] | None = None  # (step, lr) where a re-planned cosine starts
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return self.lr_of(self.step_count)

    def lr_of(self, step: int) -> float:
        if self.replanned_at is not None and step >= self.replanned_at[0]:
            return _cosine_from(step, *self.replanned_at, self.total_steps)
        return lr_at(step, self.base_lr, self.warmup_steps, self.total_steps, self.kind)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def sync_to(self, step: int) -> None:
        self.step_count = step
        self._apply()

    def replan(self, total_steps: int) -> str | None:
        """Plan for ``total_steps`` in all: longer takes the new length's cosine, shorter bends
        from the current lr to 0 at the new end (see the module docstring).

        Returns the line that says so, or None when nothing changes (same length, a constant
        schedule, or still in warmup, where the new length simply applies after warmup).
        """
        if total_steps == self.total_steps:
            return None
        old_total, now = self.total_steps, self.step_count
        if self.kind == "constant" or now < self.warmup_steps:
            self.total_steps = total_steps
            self._apply()
            return None
        current, old_next = self.lr, self.lr_of(now + 1)
        if total_steps > old_total:
            self.replanned_at, self.total_steps = None, total_steps
            self._apply()
            change = f"the cosine of a {total_steps}-step run from step {now} (was step {old_total}); lr {current:.2e} → {self.lr:.2e}"
        else:
            self.replanned_at, self.total_steps = (now, current), total_steps
            self._apply()
            change = (
                f"cosine from lr={current:.2e} at step {now} to 0 at step {total_steps} (was step {old_total}); "
                f"next step's lr {old_next:.2e} → {self.lr_of(now + 1):.2e}"
            )
        return f"  ✓ LR schedule re-planned for the new length: {change}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
            "replanned_at": None if self.replanned_at is None else list(self.replanned_at),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved plan and step (checkpoints before format 3 saved the step alone that counted)."""
        self.base_lr = float(state.get("base_lr", self.base_lr))
        self.warmup_steps = int(state.get("warmup_steps", self.warmup_steps))
        self.total_steps = int(state.get("total_steps", self.total_steps))
        self.kind = str(state.get("kind", self.kind))
        replanned = state.get("replanned_at")
        self.replanned_at = None if replanned is None else (int(replanned[0]), float(replanned[1]))
        self.sync_to(int(state["step"]))
