"""PNG figures for the diagnostics report.

Figures are built on matplotlib's object API with an Agg canvas: no pyplot, no global backend
switch, so importing this module never changes how the caller's own plots behave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from noa import outputs
from noa.diagnostics.curves import LR_PANEL, MIN_POINTS, TrainingCurves, readable_panels
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
    """One panel per loss the run computed (log y) and the learning rate in its own panel, on two
    rows; rollout-phase series too short to show a trend are left out (:func:`readable_panels`),
    and the figure's title says which."""
    panels, left_out = readable_panels(curves)
    rows = 1 if len(panels) < 2 else 2
    cols = max(1, math.ceil(len(panels) / rows))
    fig = _figure(3.8 * cols, 2.9 * rows + (0.3 if left_out else 0.0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, title in zip(axes, panels):
        for series in panels[title]:
            ax.plot(series.x, series.y, label=series.label, **SERIES_STYLES[series.style])
        if title != LR_PANEL:
            ax.set_yscale("log", nonpositive="mask")
        ax.set_title(title)
        ax.set_xlabel(curves.x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.remove()
    if left_out:
        fig.suptitle(f"left out, fewer than {MIN_POINTS} points each: {'; '.join(left_out)}", fontsize="x-small")
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
    """Min and max of the finite values (0, 1 when there are none)."""
    both = torch.cat([f.flatten() for f in fields])
    finite = both[torch.isfinite(both)]
    return (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)


ROBUST_PERCENTILES = (1.0, 99.0)


def robust_range(later: torch.Tensor) -> tuple[float, float]:
    """The colour scale of a row: the 1st and 99th percentiles of its frames after t = 0 (CNO
    and NOA). A localized IC's peak, or one hot pixel, would otherwise set the scale of every
    frame and flatten them all; values beyond it show at the ends of the scale."""
    finite = later.flatten()[torch.isfinite(later.flatten())].double()
    if not finite.numel():
        return 0.0, 1.0
    lo, hi = (float(torch.quantile(finite, p / 100)) for p in ROBUST_PERCENTILES)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def frames_figure(cno: torch.Tensor, noa: torch.Tensor, times: Sequence[int], labels: Sequence[str]) -> Figure:
    """Frames ``[S, K, H, W]``: per operator a row titled ``labels[r]`` with CNO | NOA at each
    time on one colour scale, robust over the frames after t = 0 (:func:`robust_range`; the
    colour bar's arrows mark values beyond it), then |NOA - CNO| at the last time on its own scale."""
    rows, cols = cno.shape[0], 2 * len(times) + 1
    height = 1.5 + 0.15 * max((label.count("\n") + 1 for label in labels), default=1)
    fig = _figure(1.5 * cols + 1.2, height * rows + 0.3)
    later = slice(1, None) if len(times) > 1 else slice(None)
    for r, sub in enumerate(fig.subfigures(rows, 1, squeeze=False)[:, 0]):
        axes = sub.subplots(1, cols, squeeze=False)[0]
        lo, hi = robust_range(torch.stack([cno[r, later], noa[r, later]]))
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
        low_out, high_out = _range(cno[r], noa[r])
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
            (low_out < lo, high_out > hi)
        ]
        scale = "1st-99th percentile after t=0" if len(times) > 1 else "1st-99th percentile"
        bar = sub.colorbar(image, ax=list(axes[:-1]), shrink=0.8, extend=extend)
        bar.set_label(f"{scale}\n(all frames: {low_out:.3g} .. {high_out:.3g})", fontsize="x-small")
        sub.colorbar(shown, ax=axes[-1], shrink=0.8)
        sub.suptitle(labels[r], fontsize="x-small", horizontalalignment="left", x=0.01)
    return fig


def frames(cno: torch.Tensor, noa: torch.Tensor, times: Sequence[int], labels: Sequence[str], path: Path) -> Path:
    """The frames PNG (see :func:`frames_figure`)."""
    return _save(frames_figure(cno, noa, times, labels), path)


def usage_fractions(counts: Sequence[Sequence[int]]) -> np.ndarray:
    """``[codebooks, codes]`` the fraction of each codebook's tokens on each code (NaN past a
    smaller codebook's last code, and for a codebook with no tokens)."""
    width = max((len(c) for c in counts), default=0)
    out = np.full((len(counts), width), np.nan)
    for i, book in enumerate(counts):
        total = float(sum(book))
        if total > 0:
            out[i, : len(book)] = np.asarray(book, dtype=float) / total
    return out


def codebook_usage_figure(
    noa_counts: Sequence[Sequence[int]], cno_counts: Sequence[Sequence[int]], names: Sequence[str]
) -> Figure:
    """Three panels over the codebooks (one row each): the fraction of NOA tokens on each code,
    the same for the CNO rollouts (one colour scale), and how much of the two distributions
    overlap (1 - total variation distance: 1 when the NOA uses the codes as often as the CNO)."""
    noa, cno = usage_fractions(noa_counts), usage_fractions(cno_counts)
    overlap = 1.0 - 0.5 * np.nansum(np.abs(noa - cno), axis=1)
    overlap[np.isnan(noa).all(axis=1) | np.isnan(cno).all(axis=1)] = np.nan
    n = len(names)
    fig = _figure(13.0, 1.6 + 0.22 * n)
    grid = fig.add_gridspec(1, 3, width_ratios=[4, 4, 1.6])
    left = fig.add_subplot(grid[0])
    right = fig.add_subplot(grid[1], sharey=left)
    bars = fig.add_subplot(grid[2], sharey=left)
    top = float(np.nanmax([np.nanmax(noa, initial=0.0), np.nanmax(cno, initial=0.0)])) or 1.0
    for ax, fractions, who in ((left, noa, "NOA"), (right, cno, "CNO")):
        image = ax.imshow(fractions, aspect="auto", cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_title(f"{who} rollouts: share of each codebook's tokens", fontsize="small")
        ax.set_xlabel("code")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_yticks(range(n), list(names), fontsize="x-small")
    right.tick_params(labelleft=False)
    fig.colorbar(image, ax=[left, right], shrink=0.8, label="fraction of tokens")
    bars.barh(range(n), np.nan_to_num(overlap), color="tab:blue")
    bars.set_xlim(0.0, 1.0)
    bars.set_title("usage overlap\n(1 - TV distance)", fontsize="small")
    bars.tick_params(labelleft=False)
    sizes = (max((int(sum(c)) for c in counts), default=0) for counts in (noa_counts, cno_counts))
    fig.suptitle("tokens per codebook: {} of NOA rollouts, {} of CNO rollouts".format(*sizes), fontsize="small")
    return fig


def codebook_usage(
    noa_counts: Sequence[Sequence[int]], cno_counts: Sequence[Sequence[int]], names: Sequence[str], path: Path
) -> Path:
    """The codebook-usage PNG (see :func:`codebook_usage_figure`)."""
    return _save(codebook_usage_figure(noa_counts, cno_counts, names), path)


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
