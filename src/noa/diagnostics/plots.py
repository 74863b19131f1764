"""PNG figures for the diagnostics report.

Figures are built on matplotlib's object API with an Agg canvas: no pyplot, no global backend
switch, so importing this module never changes how the caller's own plots behave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from noa.diagnostics.rollout_quality import RolloutQuality

DPI = 110
# Loss groups of the training history, each a panel: (title, [(key, label)]).
HISTORY_PANELS = (
    ("total loss", (("train_loss", "train"), ("val_loss", "val"))),
    ("L_traj", (("train_traj", "train"), ("val_traj", "val"))),
    ("L_commit", (("train_commit", "train"), ("val_commit", "val"))),
    ("L_latent", (("train_latent", "train"), ("val_latent", "val"))),
)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _series(history: Mapping[str, object], key: str) -> list[float]:
    values = history.get(key)
    return [float(v) for v in values] if isinstance(values, (list, tuple)) else []


def training_curves(history: Mapping[str, object], path: Path) -> Path | None:
    """Per-epoch losses (log y), one panel per loss present; None when the history is empty."""
    panels = [(title, [(k, label) for k, label in keys if _series(history, k)]) for title, keys in HISTORY_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    fig = _figure(4.0 * len(panels), 3.2)
    for ax, (title, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, label in keys:
            values = _series(history, key)
            ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    return _save(fig, path)


def error_vs_horizon(quality: RolloutQuality, path: Path) -> Path:
    """NOA MSE per step against the noise floor, the family floor and persistence; VRMSE beside it."""
    fig = _figure(9.0, 3.4)
    left, right = fig.subplots(1, 2)
    left.plot(quality.steps, quality.mse, marker="o", label="NOA vs CNO (realization 0)")
    left.plot(quality.steps, quality.floor, linestyle="--", label="noise floor (same operator)")
    family = [float("nan") if v is None else v for v in quality.family_floor]
    left.plot(quality.steps, family, linestyle=":", label="family floor (same θ)")
    left.plot(quality.steps, quality.persistence, linestyle="-.", color="gray", label="persistence (IC held)")
    left.set_yscale("log", nonpositive="mask")
    left.set_xlabel("horizon step")
    left.set_ylabel("MSE")
    left.legend(fontsize="small")
    # Medians: a few near-uniform CNO frames (tiny spatial variance) dominate VRMSE means.
    right.plot(quality.steps, quality.vrmse_median, marker="o", color="tab:red", label="NOA (median)")
    right.plot(quality.steps, quality.vrmse, linestyle=":", color="tab:red", label="NOA (mean)")
    right.plot(quality.steps, quality.vrmse_persistence_median, linestyle="-.", color="gray", label="persistence (median)")
    right.plot(quality.steps, quality.vrmse_floor, linestyle="--", color="tab:green", label="noise floor (mean)")
    right.set_yscale("log", nonpositive="mask")
    right.set_xlabel("horizon step")
    right.set_ylabel("RMSE / std(CNO frame), per channel")
    right.set_title("VRMSE")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def frames(cno: torch.Tensor, noa: torch.Tensor, times: Sequence[int], labels: Sequence[str], path: Path) -> Path:
    """Channel-0 frames ``[S, K, H, W]``: per operator one row, CNO | NOA at each time, one colour scale per row."""
    rows, cols = cno.shape[0], 2 * len(times)
    fig = _figure(1.6 * cols + 0.8, 1.7 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        both = torch.cat([cno[r], noa[r]])
        finite = both[torch.isfinite(both)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        for k, t in enumerate(times):
            for j, (name, field) in enumerate((("CNO", cno), ("NOA", noa))):
                ax = axes[r, 2 * k + j]
                image = ax.imshow(field[r, k].numpy(), vmin=lo, vmax=hi, cmap="viridis")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name} t={t}", fontsize="small")
            if k == 0:
                axes[r, 0].set_ylabel(labels[r], fontsize="small")
        fig.colorbar(image, ax=list(axes[r]), shrink=0.8)
    return _save(fig, path)


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
