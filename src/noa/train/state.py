"""The stateful parts of a run beyond weights: where it stands, what it logged, when to stop.

Each part owns ``state_dict``/``load_state_dict``; loading accepts the formats older
checkpoints wrote (the fallbacks live here, next to the state they rebuild). Nothing in
training draws from a stateful random generator (data order is a function of (seed, epoch),
initialisation of (seed)), so these parts, the weights, the optimizer and the schedule are
all a resumed run needs to equal an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cursor:
    """Where training stands: ``epoch`` (0-based), its batches done, and whether its end
    (validation, history, epoch checkpoint, early stopping) has been done too."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    epoch_ended: bool = False
    global_batch: int = 1  # samples per step over all ranks; a resume keeps it (N ranks -> M ranks)

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.epoch_ended = self.epoch + 1, 0, False

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch,
            "global_step": self.global_step,
            "epoch_ended": self.epoch_ended,
            "global_batch": self.global_batch,
            "samples_in_epoch": self.batch * self.global_batch,
        }

    def load_state_dict(
        self, state: dict[str, Any], global_step: int, batches_per_epoch: int, legacy_epoch_ended: bool
    ) -> None:
        """Restore; ``legacy_epoch_ended`` says whether an old checkpoint that stands at an
        epoch's last batch was written after that epoch's end (its file name tells). The
        global batch is the run's (settled before), so batch k means the same samples on any
        number of ranks."""
        self.global_step = global_step
        if "batch_in_epoch" in state and "epoch" in state:
            self.epoch, self.batch = int(state["epoch"]), int(state["batch_in_epoch"])
        else:
            self.epoch, self.batch = divmod(global_step, batches_per_epoch)
            if self.epoch and not self.batch:  # a step at an epoch boundary ends the previous epoch
                self.epoch, self.batch = self.epoch - 1, batches_per_epoch
        self.epoch_ended = bool(state.get("epoch_ended", legacy_epoch_ended and self.batch >= batches_per_epoch))
        if self.epoch_ended:
            self.next_epoch()


@dataclass
class Progress:
    """What the run has logged: the per-epoch history, the running sums and seconds of the
    current epoch (so a mid-epoch resume reports the same epoch means and the epoch's whole
    time) and the non-finite update counters.

    The sums are kept per phase (one-step, rollout: different losses, never averaged together)
    and per loss with the number of batches that had it (L_commit and L_latent exist in rollout
    batches only): ``epoch_sums[phase][key] = [sum, batches]``.
    """

    history: dict[str, list[float | None]] = field(default_factory=dict)
    epoch_sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    epoch_seconds: float = 0.0
    nan_skips_total: int = 0
    nan_skips_in_a_row: int = 0

    def add_batch(self, phase: str, losses: dict[str, float | None]) -> None:
        sums = self.epoch_sums.setdefault(phase, {})
        for key, value in losses.items():
            if value is not None:
                total, count = sums.get(key, [0.0, 0.0])
                sums[key] = [total + value, count + 1]

    def batches(self, phase: str) -> int:
        """Batches of ``phase`` added this epoch (every batch has a total)."""
        return int(self.epoch_sums.get(phase, {}).get("total", [0.0, 0.0])[1])

    def epoch_means(self, keys: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
        """Per phase that had batches this epoch: each key's mean over the batches that had it."""
        return {
            phase: {key: (sums[key][0] / sums[key][1] if key in sums else None) for key in keys}
            for phase, sums in self.epoch_sums.items()
        }

    def append(self, entries: dict[str, float | None]) -> None:
        for key, value in entries.items():
            self.history.setdefault(key, []).append(value)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "epoch_sums": self.epoch_sums,
            "epoch_seconds": self.epoch_seconds,
            "nan_skips_total": self.nan_skips_total,
            "nan_skips_in_a_row": self.nan_skips_in_a_row,
        }

    def load_state_dict(
        self, state: dict[str, Any], legacy_history: dict[str, list[float]] | None = None, legacy_phase: str = ""
    ) -> None:
        """Restore; sums written before phases were kept apart (flat, with one ``count``) are
        taken as ``legacy_phase``'s, every loss over every batch, as they were reported."""
        self.history = {k: list(v) for k, v in (state.get("history") or legacy_history or {}).items()}
        sums = state.get("epoch_sums", {})
        if sums and not all(isinstance(v, dict) for v in sums.values()):
            count = float(sums.get("count", 0.0))
            sums = {legacy_phase: {k: [float(v), count] for k, v in sums.items() if k != "count"}} if count else {}
        self.epoch_sums = {
            phase: {k: [float(v[0]), float(v[1])] for k, v in keys.items()} for phase, keys in sums.items()
        }
        self.epoch_seconds = float(state.get("epoch_seconds", 0.0))
        self.nan_skips_total = int(state.get("nan_skips_total", 0))
        self.nan_skips_in_a_row = int(state.get("nan_skips_in_a_row", 0))


@dataclass
class EarlyStopping:
    """The best validation loss so far, the epochs since it last improved, and whether the run
    ended there (``stopped``: recorded so that a restart of the same command does not train on)."""

    patience: int | None = None
    best: float = float("inf")
    epochs_without_improvement: int = 0
    stopped: bool = False

    def update(self, val_loss: float | None) -> bool:
        """Record an epoch's validation loss; True if it is a new best."""
        if val_loss is not None and val_loss < self.best:
            self.best, self.epochs_without_improvement = val_loss, 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_val_loss": self.best,
            "epochs_without_improvement": self.epochs_without_improvement,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any], legacy_stopped: bool = False) -> None:
        """Restore; ``legacy_stopped`` is what a checkpoint written before ``stopped`` was
        recorded tells of it (see :func:`noa.train.bundle.stopped_early`)."""
        best = state.get("best_val_loss")
        self.best = float("inf") if best is None else float(best)
        self.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        self.stopped = bool(state.get("stopped", legacy_stopped))
