"""INITIAL features: the statistics and spatial structure of frame 0 (the initial condition).

The amplitude features are the temporal ones at frame 0, so the two categories agree exactly;
the rest describe the IC's shape: higher moments, the radially averaged power spectrum
(slope and centroid) and a differentiable correlation length.
"""

from __future__ import annotations

import math

import torch

from noa.features import spectral
from noa.features.frames import SHAPE_EPS, Fields, FrameStatistics

SHARED_WITH_TEMPORAL = ("mean", "std", "max_abs", "grad_energy", "laplacian_energy")
SPECTRUM_FLOOR = 1e-8  # relative shell power (white noise = 1) below which the slope fit stops resolving
CROSSING_LEVEL = math.exp(-1.0)
CROSSING_SOFTNESS = 0.05


def initial_shape(frame0: Fields, stats0: FrameStatistics) -> dict[str, torch.Tensor]:
    """The features ``{stem: [N, C]}`` that need frame 0's whole field: moments, spectral slope and
    correlation length. ``frame0`` and ``stats0`` hold frame 0 only (one frame on axis 1).

    Computed in float64 and rounded back: float32 kernels differ in the last bit with the batch
    size and threads (see :mod:`noa.features.compute`), and frame 0 is one frame, so it is cheap."""
    dtype = frame0.scaled.dtype
    y = frame0.scaled[:, 0].double()
    power = frame0.power[:, 0].double()
    n = y.shape[-1]
    mean, shape_var = stats0.mean[:, 0].double(), stats0.shape_var[:, 0].double()
    variance = _standardizing_variance(stats0).double()
    standardized = (y - mean[..., None, None]) * torch.rsqrt(shape_var)[..., None, None]
    shell_power = power.flatten(-2) @ spectral.shell_operator(n, y.device).double()
    columns = {
        "skewness": torch.asinh(standardized.pow(3).mean(dim=(-2, -1))),
        "kurtosis": torch.log1p(standardized.square().square().mean(dim=(-2, -1))),
        "spectral_slope": spectral_slope(shell_power * (n * n) / variance[..., None]),
        "corr_length": correlation_length(spectral.radial_autocorrelation(power) / variance[..., None]) / n,
    }
    return {stem: value.to(dtype) for stem, value in columns.items()}


def initial_columns(
    frames: FrameStatistics,
    shape: dict[str, torch.Tensor],
    temporal: dict[str, torch.Tensor],
    temporal_pairs: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-channel features ``{stem: [N, C]}`` and pair correlations ``[N, C(C-1)/2]`` of frame 0, from the
    rollout's per-frame statistics, frame 0's :func:`initial_shape` and the TEMPORAL features."""
    columns = {stem: temporal[stem][:, 0] for stem in SHARED_WITH_TEMPORAL}
    columns.update(shape)
    columns["spectral_centroid"] = frames.sums[:, 0, :, 3] / _standardizing_variance(frames.frames(0, 1))
    return columns, temporal_pairs[:, 0]


def _standardizing_variance(stats0: FrameStatistics) -> torch.Tensor:
    """Frame 0's variance plus the floors as a fraction of it: the denominator of its shape features."""
    return stats0.var[:, 0] + SHAPE_EPS * stats0.shape_var[:, 0]


def spectral_slope(relative_power: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of log shell power (white noise = 1) against log |k|; 0 for white noise and flat fields."""
    log_power = torch.log(relative_power + SPECTRUM_FLOOR)
    shells = torch.arange(1, relative_power.shape[-1] + 1, device=relative_power.device, dtype=relative_power.dtype)
    log_k = shells.log() - shells.log().mean()
    return (log_power * log_k).sum(dim=-1) / log_k.square().sum()


def correlation_length(correlation: torch.Tensor) -> torch.Tensor:
    """Soft count of the shells before the radial correlation first drops below 1/e.

    A running product of sigmoids is ~1 up to the first crossing and ~0 after it, so its sum is
    the e-folding distance in grid cells, yet every shell keeps a gradient.
    """
    above = torch.sigmoid((correlation - CROSSING_LEVEL) / CROSSING_SOFTNESS)
    return torch.cumprod(above, dim=-1).sum(dim=-1)
