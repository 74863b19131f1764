"""The one entry point that turns rollouts into features, for dataset and model rollouts alike.

Features are computed in two steps, rollout -> :class:`RolloutStatistics` -> features, and
both callers take the same two steps: :func:`compute_features` (dataset rollouts, the
tokenizer's training data) runs them back to back, while NOA training
(``noa.train.step.alignment``) gathers the statistics chunk by chunk without gradients and
differentiates only the second step, so that its memory does not grow with T.

Realizations are flattened into the batch, featurized independently, then averaged over M
for every category (INITIAL included: it is identical across M whenever frame 0 is shared,
as it is for CNO and NOA rollouts). Nothing mixes samples, yet PyTorch's float32
log/asinh/rsqrt kernels differ in the last bit between their vectorised body and their tail,
whose split moves with the batch size and thread count. So the features a dataset stores
(``stable=True``) take the second step in float64 before rounding to float32, which keeps that
difference far below float32's resolution: a sample's stored features do not depend on its
batch or threads, to the byte. Training keeps float32, the precision its chunked gradient is
checked against.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from noa.errors import NoaError
from noa.features.initial import initial_columns
from noa.features.registry import assemble
from noa.features.statistics import RolloutStatistics, rollout_statistics
from noa.features.summary import summary_columns
from noa.features.temporal import temporal_columns

MIN_GRID = 4


def compute_features(trajectory: torch.Tensor, *, stable: bool = False) -> dict[str, torch.Tensor]:
    """Features of rollouts ``[B, T+1, C, H, W]`` or ``[B, M, T+1, C, H, W]``.

    Returns float32 tensors on the input's device: ``"initial"`` ``[B, D_i]``, ``"summary"``
    ``[B, D_s]`` and ``"temporal"`` ``[B, T+1, D_t]``, columns as listed by ``feature_specs(C)``.
    Finite and differentiable for every finite input; non-finite inputs propagate. ``stable``:
    the same bytes for a sample whatever its batch and threads (see the module docstring).
    """
    _validate(trajectory)
    batch = trajectory.shape[0]
    realizations = trajectory.shape[1] if trajectory.dim() == 6 else 1
    x = trajectory.reshape(batch * realizations, *trajectory.shape[-4:])
    stats = rollout_statistics(x)
    features = features_from_statistics(_float64(stats) if stable else stats)
    return {
        category: values.reshape(batch, realizations, *values.shape[1:]).mean(dim=1).float()
        for category, values in features.items()
    }


def _float64(stats: RolloutStatistics) -> RolloutStatistics:
    """``stats`` with every real float tensor in float64 (see the module docstring)."""

    def wide(t: torch.Tensor) -> torch.Tensor:
        return t.double() if t.dtype == torch.float32 else t

    frames = replace(stats.frames, **{f.name: wide(getattr(stats.frames, f.name)) for f in fields(stats.frames)})
    return replace(
        stats,
        frames=frames,
        covariances={lag: wide(c) for lag, c in stats.covariances.items()},
        initial={stem: wide(v) for stem, v in stats.initial.items()},
    )


def features_from_statistics(stats: RolloutStatistics) -> dict[str, torch.Tensor]:
    """Features ``{category: [N, ...]}`` of the N rollouts that ``stats`` describe (one per realization)."""
    temporal, temporal_pairs = temporal_columns(stats.frames)
    initial, initial_pairs = initial_columns(stats.frames, stats.initial, temporal, temporal_pairs)
    return {
        "initial": assemble("initial", initial, initial_pairs),
        "summary": assemble("summary", summary_columns(stats.frames, stats.covariances), None),
        "temporal": assemble("temporal", temporal, temporal_pairs),
    }


def _validate(trajectory: torch.Tensor) -> None:
    if not isinstance(trajectory, torch.Tensor):
        raise NoaError(f"features need a torch.Tensor trajectory, got {type(trajectory).__name__}")
    if not trajectory.is_floating_point():
        raise NoaError(
            f"features need a floating-point trajectory, got dtype {trajectory.dtype}; cast it with .float()"
        )
    if trajectory.dim() not in (5, 6):
        raise NoaError(
            f"features need a trajectory shaped [B, T+1, C, H, W] or [B, M, T+1, C, H, W], got shape "
            f"{tuple(trajectory.shape)}"
        )
    *leading, frames, channels, height, width = trajectory.shape
    if height != width:
        raise NoaError(f"features need a square periodic grid, got {height}x{width}; resample to H == W")
    if height < MIN_GRID:
        raise NoaError(f"features need a grid of at least {MIN_GRID}x{MIN_GRID}, got {height}x{width}")
    if frames < 2:
        raise NoaError(f"features need at least 2 frames (T+1 >= 2: the initial condition and one step), got {frames}")
    if channels < 1 or min(leading) < 1:
        raise NoaError(
            f"features need non-empty batch, realization and channel axes, got shape {tuple(trajectory.shape)}"
        )
