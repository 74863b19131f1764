"""Training curves for the report: per-batch losses from ``metrics.jsonl`` when the run left
one beside its checkpoint, else the checkpoint's per-epoch history.

Per-batch losses show what epoch means hide (how noisy the batches are, where the warmup
ends, a spike before a NaN skip). Losses a run did not compute (L_commit without a
tokenizer, L_latent without the projector) are None in both sources; they are left out, never
drawn as zero.

A run's one-step phase scores other quantities than its rollouts (the unit-scale error of one
step, the plain MSE of one step), so its batches get a panel of their own and the loss panels
hold the rollout phase and validation: a one-step MSE is never joined to a rollout's L_traj
(the jump at the switch would read as divergence).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (panel title, key in metrics.jsonl records, key in the checkpoint history after "train_"/"val_")
LOSS_PANELS = (
    ("total loss", "total", "loss"),
    ("L_traj", "traj", "traj"),
    ("L_commit", "commit", "commit"),
    ("L_latent", "latent", "latent"),
)
LR_PANEL = "learning rate"
ONE_STEP_PANEL = "one-step phase (train)"
# (label, key in metrics.jsonl batch records, epoch records' key, history key) of the one-step panel
ONE_STEP_SERIES = (
    ("unit-scale loss", "total", "train_one_step_total", "train_one_step_loss"),
    ("MSE", "traj", "train_one_step_traj", "train_one_step_traj"),
)
SMOOTH_FROM = 20  # batches from which a running mean is drawn over the per-batch losses
SMOOTH_POINTS = 50  # the running mean's window is the batch count over this (at least 5 batches)
MIN_POINTS = 3  # a rollout-phase series with fewer points shows no trend: the figure leaves it out


@dataclass
class Series:
    """One line of a panel: points whose value was recorded (None and NaN left out)."""

    label: str
    x: list[float]
    y: list[float]
    style: str = "points"  # "points" (epochs), "batch" (every batch, thin) or "trend" (a running mean)


@dataclass
class TrainingCurves:
    """Panels (title -> series) over ``x_label`` ("step" or "epoch"), and where they came from."""

    x_label: str
    source: str
    panels: dict[str, list[Series]] = field(default_factory=dict)

    def add(self, panel: str, series: Series) -> None:
        """Keep a series only when it has a point: a loss the run never computed gets no panel."""
        if series.y:
            self.panels.setdefault(panel, []).append(series)


def _points(pairs: Iterable[tuple[float, Any]]) -> tuple[list[float], list[float]]:
    """(x, y) of the pairs whose y is a finite number."""
    kept = [(float(x), float(y)) for x, y in pairs if isinstance(y, (int, float)) and math.isfinite(y)]
    return [x for x, _ in kept], [y for _, y in kept]


def running_mean(series: Series, what: str = "train") -> Series | None:
    """The mean over the last k batches at each batch: operators differ in scale, so single
    batches scatter widely and the trend is hard to see. None for short runs."""
    n = len(series.y)
    if n < SMOOTH_FROM:
        return None
    k = max(5, n // SMOOTH_POINTS)
    sums = [0.0]
    for value in series.y:
        sums.append(sums[-1] + value)
    means = [(sums[i + 1] - sums[max(0, i + 1 - k)]) / min(k, i + 1) for i in range(n)]
    return Series(f"{what} (mean of last {k} batches)", list(series.x), means, style="trend")


def read_metrics(path: Path, up_to_step: int | None) -> tuple[dict[int, dict], dict[int, dict], int]:
    """Batch and epoch records of ``metrics.jsonl`` by global step / epoch, and the count of
    unreadable lines (a line torn by a kill). A resumed run re-does the batches after its last
    checkpoint, so a later record of the same step replaces the earlier one; records past
    ``up_to_step`` belong to training after this checkpoint and are left out."""
    batches: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    torn = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        step = record.get("global_step") if isinstance(record, dict) else None
        if not isinstance(step, int) or (up_to_step is not None and step > up_to_step):
            continue
        if record.get("kind") == "train_batch":
            batches[step] = record
        elif record.get("kind") == "epoch":
            epochs[int(record.get("epoch", 0))] = record
    return batches, epochs, torn


def from_metrics(path: Path, up_to_step: int | None) -> TrainingCurves | None:
    """Per-batch curves (with epoch means and validation at each epoch's last step); None
    when the file holds no batch record."""
    batches, epochs, torn = read_metrics(path, up_to_step)
    if not batches:
        return None
    source = f"{path} ({len(batches)} batches, {len(epochs)} epochs"
    source += f"; {torn} unreadable line(s) skipped)" if torn else ")"
    curves = TrainingCurves("step", source)
    steps = sorted(batches)
    one_step = [s for s in steps if batches[s].get("phase") == "one-step"]
    rollout = [s for s in steps if batches[s].get("phase") != "one-step"]  # records before phases: rollouts
    ends = [epochs[e] for e in sorted(epochs)]
    for label, key, epoch_key, _ in ONE_STEP_SERIES:
        _batch_series(curves, ONE_STEP_PANEL, label, [(s, batches[s].get(key)) for s in one_step])
        curves.add(
            ONE_STEP_PANEL,
            Series(f"{label} (epoch mean)", *_points((r["global_step"], r.get(epoch_key)) for r in ends)),
        )
    for title, key, _ in LOSS_PANELS:
        _batch_series(curves, title, "train", [(s, batches[s].get(key)) for s in rollout])
        curves.add(
            title, Series("train (epoch mean)", *_points((r["global_step"], r.get(f"train_{key}")) for r in ends))
        )
        curves.add(title, Series("val", *_points((r["global_step"], r.get(f"val_{key}")) for r in ends)))
    curves.add(LR_PANEL, Series("lr", *_points((s, batches[s].get("lr")) for s in steps), style="trend"))
    return curves


def _batch_series(curves: TrainingCurves, panel: str, what: str, pairs: list[tuple[int, Any]]) -> None:
    """Per-batch points of ``panel`` and their running mean."""
    raw = Series(f"{what} (per batch)", *_points(pairs), style="batch")
    curves.add(panel, raw)
    smooth = running_mean(raw, what)
    if smooth is not None:
        curves.add(panel, smooth)


def from_history(history: Mapping[str, Any]) -> TrainingCurves | None:
    """Per-epoch curves from a checkpoint's ``history``; None when it holds none."""
    curves = TrainingCurves("epoch", "the checkpoint's history (per epoch; no metrics.jsonl beside it)")
    for label, _, _, key in ONE_STEP_SERIES:
        values = history.get(key)
        if isinstance(values, (list, tuple)):
            curves.add(ONE_STEP_PANEL, Series(label, *_points(enumerate(values, start=1))))
    for title, _, key in LOSS_PANELS:
        for split in ("train", "val"):
            values = history.get(f"{split}_{key}")
            if isinstance(values, (list, tuple)):
                curves.add(title, Series(split, *_points(enumerate(values, start=1))))
    lrs = history.get("lr")
    if isinstance(lrs, (list, tuple)) and curves.panels:
        curves.add(LR_PANEL, Series("lr (end of epoch)", *_points(enumerate(lrs, start=1))))
    return curves if curves.panels else None


def readable_panels(curves: TrainingCurves) -> tuple[dict[str, list[Series]], list[str]]:
    """The panels worth drawing, and what was left out. In the rollout panels (LOSS_PANELS) a
    series of fewer than MIN_POINTS points is left out, and a panel left with none is dropped:
    a recipe whose rollout phase is a few batches at the end (the quickstart's) would otherwise
    fill a panel with one or two dots. The one-step and learning-rate panels stay as they are."""
    rollout = {title for title, _, _ in LOSS_PANELS}
    panels: dict[str, list[Series]] = {}
    short: dict[str, list[str]] = {}  # series label -> the panels it was left out of
    for title, series in curves.panels.items():
        kept = [s for s in series if title not in rollout or len(s.x) >= MIN_POINTS]
        for s in series:
            if s not in kept:
                short.setdefault(s.label, []).append(title)
        if kept:
            panels[title] = kept
    return panels, [f"{label} of {', '.join(titles)}" for label, titles in short.items()]


def training_curves_of(checkpoint: str | Path, ckpt: Mapping[str, Any]) -> TrainingCurves | None:
    """The report's curves for a checkpoint: its directory's metrics.jsonl when present, else its history."""
    metrics = Path(checkpoint).parent / "metrics.jsonl"
    step = ckpt.get("global_step")
    curves = from_metrics(metrics, int(step) if step is not None else None) if metrics.is_file() else None
    return curves or from_history(ckpt.get("history") or {})
