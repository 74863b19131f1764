"""TEMPORAL features: one row per frame, so the tokenizer sees how a rollout evolves.

Every quantity is a smooth function of the frame (a p-norm instead of max, spectral
derivatives, power fractions), and scale-dependent ones are log-compressed so exploding
rollouts give moderate numbers.
"""

from __future__ import annotations

import torch

from noa.features.frames import SHAPE_EPS, TINY, FrameStatistics, log1p_from_log, pair_indices


def temporal_columns(frames: FrameStatistics) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-channel features ``{stem: [N, T+1, C]}`` and pair correlations ``[N, T+1, C(C-1)/2]``."""
    log_scale, sums = frames.log_scale, frames.sums
    grad_sq, laplacian_sq, bands = sums[..., 1], sums[..., 2], sums[..., 4:]
    fractions = bands / (frames.var + SHAPE_EPS * frames.shape_var)[..., None]
    columns = {
        "mean": torch.asinh(frames.scale * frames.mean),
        "std": 0.5 * log1p_from_log(2.0 * log_scale + torch.log(frames.var + TINY)),
        "max_abs": log1p_from_log(log_scale + frames.log_soft_max),
        "grad_energy": log1p_from_log(2.0 * log_scale + torch.log(grad_sq + TINY)),
        "laplacian_energy": log1p_from_log(2.0 * log_scale + torch.log(laplacian_sq + TINY)),
    }
    for band in range(fractions.shape[-1]):
        columns[f"power_band{band}"] = fractions[..., band]
    return columns, pair_correlations(frames.pairs, frames.shape_var)


def pair_correlations(covariances: torch.Tensor, shape_var: torch.Tensor) -> torch.Tensor:
    """Standardize channel-pair covariances ``[..., C(C-1)/2]`` by the channels' variances ``[..., C]``."""
    first, second = pair_indices(shape_var.shape[-1], shape_var.device)
    return covariances * torch.rsqrt(shape_var[..., first] * shape_var[..., second])
