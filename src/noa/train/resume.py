"""Starting points of a run: fresh, resumed (exactly), fine-tuned, or from an old checkpoint.

Resume restores every piece of training state and prints the guide's lines. Nothing in
training draws from a stateful random generator (data order is a function of (seed, epoch),
initialisation of (seed)), so restoring the data cursor, the weights, the optimizer and the
schedule step is all it takes for a resumed run to equal an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from noa.errors import NoaError
from noa.train.checkpoint import load_checkpoint, step_from_name

CHECKPOINT_GLOBS = ("step_*.pt", "epoch_*.pt", "best_model.pt")


@dataclass
class Cursor:
    """Where training stands: epoch (0-based) and batches of it already done."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0


@dataclass
class Progress:
    """Training state beyond weights that a checkpoint carries."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_val_loss: float = float("inf")
    epochs_without_improvement: int = 0
    nan_skips_total: int = 0
    nan_skips_in_a_row: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_val_loss": self.best_val_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "nan_skips_total": self.nan_skips_total,
            "nan_skips_in_a_row": self.nan_skips_in_a_row,
            "epoch_sums": self.epoch_sums,
        }


def find_latest(checkpoint_dir: str | Path, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint in the directory that loads; torn ones are reported and passed over."""
    directory = Path(checkpoint_dir)
    candidates = sorted(
        {p for pattern in CHECKPOINT_GLOBS for p in directory.glob(pattern)},
        key=lambda p: (p.stat().st_mtime_ns, p.name),
        reverse=True,
    )
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except NoaError as err:
            log(f"  ⚠ Skipping {path.name}: {err}")
    raise NoaError(f"--resume auto found no intact checkpoint in {directory}; start without --resume")


def locked_differences(ckpt_args: dict[str, Any], values: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"--{k.replace('_', '-')}: checkpoint {ckpt_args[k]!r}, now {values[k]!r}" for k in keys if k in ckpt_args and ckpt_args[k] != values[k]]


def infer_global_step(path: Path, ckpt: dict[str, Any], batches_per_epoch: int, log: Callable[[str], None]) -> int:
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
    log(f"  ⚠ Old checkpoint format detected - inferred global_step={step} from filename")
    return step


def cursor_of(ckpt: dict[str, Any], global_step: int, batches_per_epoch: int) -> Cursor:
    """The data cursor to continue from (the next unprocessed batch)."""
    if "batch_in_epoch" in ckpt and "epoch" in ckpt:
        epoch, batch = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
    else:
        epoch, batch = divmod(global_step, batches_per_epoch)
    if batch >= batches_per_epoch:
        epoch, batch = epoch + 1, 0
    return Cursor(epoch=epoch, batch=batch, global_step=global_step)


def progress_of(ckpt: dict[str, Any]) -> Progress:
    saved = ckpt.get("progress", {})
    return Progress(
        history={k: list(v) for k, v in ckpt.get("history", {}).items()},
        best_val_loss=float("inf") if ckpt.get("best_val_loss") is None else float(ckpt["best_val_loss"]),
        epochs_without_improvement=int(saved.get("epochs_without_improvement", 0)),
        nan_skips_total=int(saved.get("nan_skips_total", 0)),
        nan_skips_in_a_row=int(saved.get("nan_skips_in_a_row", 0)),
        epoch_sums=dict(saved.get("epoch_sums", {})),
    )


OLD_PROJECTOR_WARNING = """  ⚠⚠ WARNING: Old checkpoint has no projector weights!
      Projector will restart from random initialization.
      L_latent training will be inconsistent with pre-crash training.
      Recommend: Either disable --enable-latent-loss or train from scratch."""
