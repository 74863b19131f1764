"""PNG figures for the diagnostics report.

Figures are built on matplotlib's object API with an Agg canvas: no pyplot, no global backend
switch, so importing this module never changes how the caller's own plots behave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from noa import outputs
from noa.diagnostics.curves import LR_PANEL, TrainingCurves
from noa.diagnostics.rollout_quality import VRMSE_INFLATED, RolloutQuality

DPI = 110
NO_SKILL = "no skill: persistence (IC held)"
FRAME_MEAN = "no skill: frame mean (VRMSE = 1)"
SERIES_STYLES: dict[str, dict[str, Any]] = {
    "points": {"marker": "o"},
    "batch": {"linewidth": 0.6, "alpha": 0.45},
    "trend": {"linewidth": 1.5},
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """The figure as a PNG written whole (a reader never sees half an image), carrying noa's
    mark (:func:`noa.outputs.png_metadata`): only a marked PNG is ever replaced by a later run."""
    metadata = outputs.png_metadata(path.name)
    return outputs.write_atomic(path, lambda fh: fig.savefig(fh, dpi=DPI, format="png", metadata=metadata))


def training_figure(curves: TrainingCurves) -> Figure:
    """One panel per loss the run computed (log y) and the learning rate in its own panel."""
    titles = list(curves.panels)
    fig = _figure(3.6 * len(titles), 3.2)
    for ax, title in zip(fig.subplots(1, len(titles), squeeze=False)[0], titles):
        for series in curves.panels[title]:
            ax.plot(series.x, series.y, label=series.label, **SERIES_STYLES[series.style])
        if title != LR_PANEL:
            ax.set_yscale("log", nonpositive="mask")
        ax.set_title(title)
        ax.set_xlabel(curves.x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small")
    return fig


def training_curves(curves: TrainingCurves | None, path: Path) -> Path | None:
    """The training-curves PNG; None when the run left no curves."""
    return None if curves is None else _save(training_figure(curves), path)


def error_figure(quality: RolloutQuality) -> Figure:
    """NOA MSE per step against the noise and family floors and persistence (no skill); VRMSE
    beside it with the floor and the frame-mean line (no skill)."""
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    left.plot(quality.steps, quality.mse, marker="o", label="NOA vs CNO (realization 0)")
    left.plot(quality.steps, quality.floor, linestyle="--", label="noise floor (same operator)")
    family = [float("nan") if v is None else v for v in quality.family_floor]
    left.plot(quality.steps, family, linestyle=":", label="family floor (same θ)")
    left.plot(quality.steps, quality.persistence, linestyle="-.", color="gray", label=NO_SKILL)
    left.set_yscale("log", nonpositive="mask")
    left.set_xlabel("horizon step")
    left.set_ylabel("MSE")
    left.set_title("MSE")
    left.legend(fontsize="x-small", loc="best", framealpha=0.8)
    # Medians: a few near-uniform CNO frames (tiny spatial variance) dominate VRMSE means, so the
    # scale is set by the medians and the mean may leave the axes; its label says why.
    right.plot(quality.steps, quality.vrmse_median, marker="o", color="tab:red", label="NOA (median)")
    right.plot(
        quality.steps, quality.vrmse_persistence_median, linestyle="-.", color="gray", label="persistence (median)"
    )
    right.plot(
        quality.steps, quality.vrmse_floor_median, linestyle="--", color="tab:green", label="noise floor (median)"
    )
    right.axhline(1.0, color="black", linewidth=0.8, label=FRAME_MEAN)
    right.plot(quality.steps, quality.vrmse, linestyle=":", color="tab:red", label=mean_label(quality))
    shown = [*quality.vrmse_median, *quality.vrmse_persistence_median, *quality.vrmse_floor_median, 1.0]
    right.set_ylim(*_log_limits(shown))
    right.set_yscale("log", nonpositive="mask")
    right.set_xlabel("horizon step")
    right.set_ylabel("RMSE / std(CNO frame), per channel")
    right.set_title("VRMSE")
    right.legend(fontsize="x-small", loc="best", framealpha=0.8)  # inside the axes, whatever it covers least
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _log_limits(values: Sequence[float]) -> tuple[float, float]:
    """Log-axis limits around the finite positive values, with a margin."""
    kept = [v for v in values if v > 0 and math.isfinite(v)]
    return (min(kept) / 1.5, max(kept) * 1.5) if kept else (0.1, 10.0)


def mean_label(quality: RolloutQuality) -> str:
    """The legend entry of the NOA's mean VRMSE: how many frames lift it above the median."""
    return (
        f"NOA (mean; {quality.vrmse_frames_inflated} of {quality.vrmse_frames} frames above "
        f"{VRMSE_INFLATED:g},\noff the scale when they dominate)"
    )


def error_vs_horizon(quality: RolloutQuality, path: Path) -> Path:
    """The error-vs-horizon PNG (see :func:`error_figure`)."""
    return _save(error_figure(quality), path)


def _range(*fields: torch.Tensor) -> tuple[float, float]:
    """Min and max of the finite values (0, 1 when there are none): one colour scale for a row."""
    both = torch.cat([f.flatten() for f in fields])
    finite = both[torch.isfinite(both)]
    return (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)


def frames_figure(cno: torch.Tensor, noa: torch.Tensor, times: Sequence[int], labels: Sequence[str]) -> Figure:
    """Frames ``[S, K, H, W]``: per operator a row titled ``labels[r]`` with CNO | NOA at each
    time on one colour scale, then |NOA - CNO| at the last time on its own scale."""
    rows, cols = cno.shape[0], 2 * len(times) + 1
    height = 1.5 + 0.15 * max((label.count("\n") + 1 for label in labels), default=1)
    fig = _figure(1.5 * cols + 1.2, height * rows + 0.3)
    for r, sub in enumerate(fig.subfigures(rows, 1, squeeze=False)[:, 0]):
        axes = sub.subplots(1, cols, squeeze=False)[0]
        lo, hi = _range(cno[r], noa[r])
        for k, t in enumerate(times):
            for j, (name, field) in enumerate((("CNO", cno), ("NOA", noa))):
                ax = axes[2 * k + j]
                image = ax.imshow(field[r, k].numpy(), vmin=lo, vmax=hi, cmap="viridis")
                ax.set_title(f"{name} t={t}", fontsize="small")
        error = (noa[r, -1] - cno[r, -1]).abs()
        shown = axes[-1].imshow(error.numpy(), vmin=0.0, vmax=_range(error)[1] or 1.0, cmap="magma")
        axes[-1].set_title(f"|NOA − CNO| t={times[-1]}", fontsize="small")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        sub.colorbar(image, ax=list(axes[:-1]), shrink=0.8)
        sub.colorbar(shown, ax=axes[-1], shrink=0.8)
        sub.suptitle(labels[r], fontsize="x-small", horizontalalignment="left", x=0.01)
    return fig


def frames(cno: torch.Tensor, noa: torch.Tensor, times: Sequence[int], labels: Sequence[str], path: Path) -> Path:
    """The frames PNG (see :func:`frames_figure`)."""
    return _save(frames_figure(cno, noa, times, labels), path)


def codebook_usage(
    noa_counts: Sequence[Sequence[int]], cno_counts: Sequence[Sequence[int]], names: Sequence[str], path: Path
) -> Path:
    """Code-usage bars per codebook: NOA rollouts as bars, CNO rollouts as an outline."""
    n = len(names)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _figure(4.0 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name, ours, theirs in zip(axes, names, noa_counts, cno_counts):
        codes = range(len(ours))
        ax.bar(codes, ours, width=1.0, color="tab:blue", alpha=0.7, label="NOA")
        ax.step(codes, theirs, where="mid", color="black", linewidth=0.8, label="CNO")
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("code")
        ax.set_ylabel("count")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize="small")
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, path)


def comparison_figure(runs: dict[str, tuple[list[int], list[float], list[float]]], baseline: Any) -> Figure:
    """One line per run: MSE per step against the noise floor and persistence (the same rows for
    every run, so one of each), and VRMSE (median over samples) against the frame-mean line."""
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    for label, (steps, mse, vrmse) in runs.items():
        left.plot(steps, mse, marker="o", markersize=3, label=label)
        right.plot(steps, vrmse, marker="o", markersize=3, label=label)
    left.plot(baseline.steps, baseline.floor, linestyle="--", color="black", label="noise floor")
    left.plot(baseline.steps, baseline.persistence, linestyle="-.", color="gray", label=NO_SKILL)
    right.axhline(1.0, color="black", linewidth=0.8, label="no skill: frame mean (VRMSE = 1)")
    left.set_yscale("log", nonpositive="mask")
    right.set_yscale("log", nonpositive="mask")
    for ax, title, unit in ((left, "MSE", "MSE"), (right, "VRMSE (median over samples)", "RMSE / std(CNO frame)")):
        ax.set_title(title)
        ax.set_xlabel("horizon step")
        ax.set_ylabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small", loc="best", framealpha=0.8)
    return fig


def comparison(runs: dict[str, tuple[list[int], list[float], list[float]]], baseline: Any, path: Path) -> Path:
    """The comparison's error-vs-horizon PNG (see :func:`comparison_figure`)."""
    return _save(comparison_figure(runs, baseline), path)
