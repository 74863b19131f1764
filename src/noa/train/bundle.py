"""The checkpoint of a run: its stateful parts bundled with the guide's top-level keys.

:meth:`TrainingState.checkpoint` is the one place a checkpoint dict is written and
:meth:`TrainingState.restore` the one place it is read back (printing the guide's resume
lines). The guide's keys (``model_state_dict``, ``optimizer_state_dict``,
``scheduler_state_dict``, ``epoch``, ``global_step``, ``history``, ``best_val_loss``,
``alignment_state``, ``config``, ``args``) stay at the top so the guide's code and people can
read them; the parts' own states sit under ``parts``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noa.errors import NoaError
from noa.model import UAFNO, LatentProjector
from noa.train.checkpoint import FORMAT_VERSION, recorded_args, step_from_name
from noa.train.config import TrainConfig
from noa.train.lineage import SOURCE_KEY
from noa.train.optim import load_optimizer_state
from noa.train.phases import phase_of
from noa.train.schedule import WarmupCosine
from noa.train.state import Cursor, EarlyStopping, Progress

log = logging.getLogger("noa.train")

OLD_PROJECTOR_WARNING = """  ⚠⚠ WARNING: Old checkpoint has no projector weights!
      Projector will restart from random initialization.
      L_latent training will be inconsistent with pre-crash training.
      Recommend: Either disable --enable-latent-loss or train from scratch."""


@dataclass
class TrainingState:
    """Everything a resumed run needs to continue exactly."""

    config: TrainConfig
    model: UAFNO
    projector: LatentProjector | None
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    cursor: Cursor
    progress: Progress
    early_stopping: EarlyStopping
    fingerprints: dict[str, str | None]
    source: str | None = None  # the checkpoint this run was fine-tuned from (noa.train.lineage)

    def checkpoint(self) -> dict[str, Any]:
        projector = self.projector
        return {
            "format_version": FORMAT_VERSION,
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.schedule.state_dict(),
            "epoch": self.cursor.epoch,
            "global_step": self.cursor.global_step,
            "history": self.progress.history,
            "best_val_loss": self.early_stopping.best,
            "alignment_state": None
            if projector is None
            else {
                "state_dict": projector.state_dict(),
                "in_channels": projector.in_channels,
                "latent_dim": projector.latent_dim,
                "hidden": projector.hidden,
            },
            "config": self.config.model.to_dict(),
            "args": recorded_args(self.config.flags()),
            "launch_dir": os.getcwd(),
            "fingerprints": self.fingerprints,
            SOURCE_KEY: self.source,
            "parts": {
                "cursor": self.cursor.state_dict(),
                "progress": self.progress.state_dict(),
                "early_stopping": self.early_stopping.state_dict(),
            },
            "rng": {
                "scheme": "stateless: data order = f(seed, epoch), init = f(seed)",
                "torch_cpu_state": torch.get_rng_state(),
            },
        }

    # ---------------------------------------------------------------- reading

    def restore(self, path: Path, ckpt: dict[str, Any], batches_per_epoch: int) -> None:
        """Resume exactly from ``ckpt``: weights, optimizer, schedule, cursor, logs, stopping state."""
        log.info(f"Resuming from checkpoint: {path}")
        projector_loaded = self.load_weights(ckpt)
        if "optimizer_state_dict" in ckpt:
            fresh = load_optimizer_state(self.optimizer, ckpt["optimizer_state_dict"])
            log.info("  ✓ Loaded optimizer state")
            if "projector" in fresh and projector_loaded:
                log.info(
                    "  ⚠ The checkpoint has no optimizer state for the projector: its Adam moments start from zero"
                )
            self._apply_weight_decay()
        else:
            log.info("  ⚠ No optimizer state in the checkpoint: Adam moments restart from zero")
        step = _global_step(path, ckpt, batches_per_epoch)
        if "scheduler_state_dict" in ckpt:
            self.schedule.load_state_dict(ckpt["scheduler_state_dict"])
            log.info("  ✓ Loaded scheduler state")
        else:
            log.info(f"  ⚠ Syncing scheduler to step {step}...")
            self.schedule.sync_to(step)
            log.info(f"  ✓ Scheduler synced to step {step}, lr={self.schedule.lr:.2e}")
        replanned = self.schedule.replan(self.config.epochs * batches_per_epoch)
        if replanned:
            log.info(replanned)
        parts = ckpt.get("parts", {})
        legacy = {**ckpt, **ckpt.get("progress", {})}  # format 2 kept these at the top and under "progress"
        self.cursor.load_state_dict(
            parts.get("cursor", ckpt), step, batches_per_epoch, legacy_epoch_ended=not path.name.startswith("step_")
        )
        # Older sums mixed the phases; they go to the phase of the last batch done (an epoch that
        # straddled the switch on an older build cannot be split).
        self.progress.load_state_dict(
            parts.get("progress", legacy),
            legacy_history=ckpt.get("history"),
            legacy_phase=phase_of(self.config, step - 1),
        )
        self.early_stopping.load_state_dict(parts.get("early_stopping", legacy), legacy_stopped=stopped_early(ckpt))
        if self.cursor.epoch >= self.config.epochs:
            raise NoaError(
                f"{path.name} has already finished epoch {self.cursor.epoch} of --epochs {self.config.epochs}; "
                f"raise --epochs to train on (the LR decay is re-planned), or fine-tune from it with --init-from"
            )
        if self.early_stopping.stopped and self.early_stopping.should_stop:
            raise NoaError(
                f"{path.name} {stop_story(ckpt)}; raise --early-stop-patience to train on, or fine-tune from it with --init-from"
            )
        self.early_stopping.stopped = False  # the run trains on (a larger --early-stop-patience)
        self._log_position()
        if self.projector is not None:
            if projector_loaded:
                log.info("  ✓ Loaded latent projector weights")
            elif int(ckpt.get("format_version", 1)) < 2:
                log.info(OLD_PROJECTOR_WARNING)
            else:
                log.info(
                    "  ⚠ The checkpoint was trained without L_latent: the latent projector starts from random initialization"
                )
        elif ckpt.get("alignment_state"):
            log.info("  ⚠ L_latent is off in this run: the checkpoint's latent projector is not carried on")

    def _apply_weight_decay(self) -> None:
        """The run's --weight-decay over the decay the loaded groups saved: the value recorded
        in the checkpoint's args is the one applied, to every group alike."""
        decay = self.config.weight_decay
        saved = sorted({float(group["weight_decay"]) for group in self.optimizer.param_groups} - {decay})
        for group in self.optimizer.param_groups:
            group["weight_decay"] = decay
        if saved:
            log.info(
                f"  ✓ Weight decay {', '.join(f'{v:g}' for v in saved)} → {decay:g} (--weight-decay), for every parameter group"
            )

    def _log_position(self) -> None:
        cursor = self.cursor
        log.info(f"  ✓ Resuming from epoch {cursor.epoch + 1}, step {cursor.global_step}")
        if cursor.batch:
            log.info(f"    (Will skip first {cursor.batch} batches of epoch {cursor.epoch + 1})")
        if math.isfinite(self.early_stopping.best):
            log.info(f"  ✓ Best val loss so far: {self.early_stopping.best:.6f}")
        else:
            log.info("  ✓ No validation history (first epoch incomplete)")

    def init_from(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Fine-tuning: weights only; optimizer, schedule and counters start afresh."""
        log.info(f"Fine-tuning from {path}:")
        projector_loaded = self.load_weights(ckpt)
        if self.projector is not None:
            log.info(
                "  ✓ Loaded latent projector weights"
                if projector_loaded
                else "  ⚠ The checkpoint has no projector weights: the projector starts from random initialization"
            )
        elif ckpt.get("alignment_state"):
            log.info("  ⚠ L_latent is off in this run: the checkpoint's latent projector is not carried on")
        log.info("  ✓ Fresh optimizer, LR schedule (with warmup) and epoch count")

    def load_weights(self, ckpt: dict[str, Any]) -> bool:
        """Model and (when both sides have one) projector weights; True if the projector loaded.
        A generated stack the checkpoint lacks (a fine-tune that adds it beside a trained U-AFNO)
        keeps its initialization; every other weight must be there."""
        weights = ckpt["model_state_dict"]
        fresh_stack = (
            self.model.generated is not None
            and (ckpt.get("config") or {}).get("backbone", "uafno") == "uafno"
            and not any(k.startswith("generated.") for k in weights)
        )
        try:
            loaded = self.model.load_state_dict(weights, strict=not fresh_stack)
        except RuntimeError as err:
            raise NoaError(f"the checkpoint's model weights do not fit its config: {str(err).splitlines()[0]}") from err
        absent = [k for k in loaded.missing_keys if not k.startswith("generated.")] + loaded.unexpected_keys
        if absent:
            raise NoaError(f"the checkpoint's model weights do not fit its config: {', '.join(absent[:5])} differ")
        if fresh_stack:
            log.info("  ✓ Loaded model weights; the θ-generated stack beside them starts near zero (fresh)")
        else:
            log.info("  ✓ Loaded model weights")
        align = ckpt.get("alignment_state")
        if self.projector is None or not align:
            return False
        if int(align["latent_dim"]) != self.projector.latent_dim:
            raise NoaError(
                f"the checkpoint's projector outputs {align['latent_dim']} dims but tokenizer "
                f"{self.config.vqvae_path} has latent_dim {self.projector.latent_dim}"
            )
        if int(align.get("hidden", self.projector.hidden)) != self.projector.hidden:
            raise NoaError(
                f"the checkpoint's projector has hidden width {align['hidden']}, the run asks --projector-hidden "
                f"{self.projector.hidden}; drop --projector-hidden to keep the checkpoint's"
            )
        try:
            self.projector.load_state_dict(align["state_dict"])
        except RuntimeError as err:
            raise NoaError(
                f"the checkpoint's latent projector weights do not fit its alignment_state: {str(err).splitlines()[0]}"
            ) from err
        return True


def stopped_early(ckpt: dict[str, Any]) -> bool:
    """Whether the run that wrote ``ckpt`` ended there by early stopping: recorded since it was,
    else told by a checkpoint written at an epoch's end with as many epochs without improvement
    as the run's patience (the run stopped right after writing it)."""
    parts = ckpt.get("parts", {})
    state = parts.get("early_stopping", {})
    if "stopped" in state:
        return bool(state["stopped"])
    patience = (ckpt.get("args") or {}).get("early_stop_patience")
    at_epoch_end = bool(parts.get("cursor", {}).get("epoch_ended"))
    return at_epoch_end and patience is not None and int(state.get("epochs_without_improvement", 0)) >= int(patience)


def stop_story(ckpt: dict[str, Any]) -> str:
    """How an early-stopped run ended, for the lines that meet it again."""
    state = ckpt.get("parts", {}).get("early_stopping", {})
    args = ckpt.get("args") or {}
    n = int(state.get("epochs_without_improvement", 0))
    unit = "epoch" if int(args.get("val_every", 1)) == 1 else "validation"
    epoch = int(ckpt.get("parts", {}).get("cursor", {}).get("epoch", ckpt.get("epoch", 0))) + 1
    return (
        f"ended the run by early stopping after epoch {epoch} of {args.get('epochs')} (no validation improvement for "
        f"{n} {unit}{'s' if n != 1 else ''}, --early-stop-patience {args.get('early_stop_patience')})"
    )


def _global_step(path: Path, ckpt: dict[str, Any], batches_per_epoch: int) -> int:
    """The checkpoint's global step, from its key or, for old files, from its name."""
    if "global_step" in ckpt:
        return int(ckpt["global_step"])
    parsed = step_from_name(path)
    if parsed is None:
        raise NoaError(
            f"old checkpoint {path.name} has no global_step and its name is not step_N.pt or epoch_N.pt; "
            "rename it after the step it was saved at, or start afresh from its weights with --init-from"
        )
    kind, n = parsed
    step = n if kind == "step" else n * batches_per_epoch
    log.info(f"  ⚠ Old checkpoint format detected - inferred global_step={step} from filename")
    return step
