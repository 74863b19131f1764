"""Scale-safe per-frame statistics shared by every feature family.

Each frame (per channel) is divided by its max-abs value M (detached, floored at
``AMPLITUDE_FLOOR``) before any power is taken, so fields of any finite magnitude never
overflow or underflow in float32. Scale-dependent quantities are rebuilt in log space
(log E_x = 2 log M + log E_y), which keeps them exact and finite; because each such identity
holds for any fixed M, detaching M leaves the gradients exact too.

Shape statistics (correlations, moments, spectral fractions) standardize by a variance
floored by ``AMPLITUDE_FLOOR``^2 (absolute) and ``RELATIVE_RESOLUTION``^2 times the mean
square (about float32 round-off of an offset field): flat, zero and vanishing fields get shape
features near 0 and bounded gradients instead of amplified round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noa.features import spectral

AMPLITUDE_FLOOR = 1e-6
RELATIVE_RESOLUTION = 1e-4
TINY = 1e-30
SHAPE_EPS = 1e-6  # added to the (at most 1) variance of a standardized field before dividing by it
SOFT_MAX_ORDER = 16  # the p of the p-norm used as a differentiable max |x|


@dataclass(frozen=True)
class Frames:
    """Statistics of rollouts ``[N, T+1, C, H, W]``; ``[N, T+1, C]`` unless stated. "y" is x / M."""

    scale: torch.Tensor  # M (detached)
    log_scale: torch.Tensor  # log M
    scaled: torch.Tensor  # y, [N, T+1, C, H, W]
    mean: torch.Tensor  # spatial mean of y
    var: torch.Tensor  # spatial variance of y
    shape_var: torch.Tensor  # floored variance of y used to standardize
    floor: torch.Tensor  # (AMPLITUDE_FLOOR / M)^2
    log_soft_max: torch.Tensor  # log of the SOFT_MAX_ORDER-norm of y
    spectrum: torch.Tensor  # weighted mean-free spectrum of y, complex [N, T+1, C, H, W//2+1]
    power: torch.Tensor  # its power, [N, T+1, C, H, W//2+1]; sums to ``var``
    sums: torch.Tensor  # power @ spectral.mode_weights: [N, T+1, C, 4 + bands]

    @property
    def log_norm(self) -> torch.Tensor:
        """log sqrt(mean(x^2) + AMPLITUDE_FLOOR^2): the log RMS, floored so zero fields stay finite."""
        return self.log_scale + 0.5 * torch.log(self.var + self.mean.square() + self.floor + TINY)


def normalize_frames(x: torch.Tensor) -> Frames:
    """Per-frame, per-channel statistics of ``x`` ``[N, T+1, C, H, W]`` (float32)."""
    spatial = (-2, -1)
    detached = x.detach()
    scale = torch.maximum(detached.amax(dim=spatial), -detached.amin(dim=spatial)).clamp_min(AMPLITUDE_FLOOR)
    y = x / scale[..., None, None]
    mean = y.mean(dim=spatial)
    spectrum = spectral.weighted_spectrum(y)
    power = spectral.power(spectrum)
    sums = power.flatten(-2) @ spectral.mode_weights(x.shape[-1], x.device)
    var = sums[..., 0]
    floor = (AMPLITUDE_FLOOR / scale).square()
    shape_var = var + floor + RELATIVE_RESOLUTION**2 * (var + mean.square()) + TINY
    cells = x.shape[-2] * x.shape[-1]
    soft_max = torch.linalg.vector_norm(y, ord=SOFT_MAX_ORDER, dim=spatial) / cells ** (1 / SOFT_MAX_ORDER)
    return Frames(
        scale=scale,
        log_scale=scale.log(),
        scaled=y,
        mean=mean,
        var=var,
        shape_var=shape_var,
        floor=floor,
        log_soft_max=torch.log(soft_max + TINY),
        spectrum=spectrum,
        power=power,
        sums=sums,
    )


def log1p_from_log(log_value: torch.Tensor) -> torch.Tensor:
    """log1p(exp(log_value)) without forming exp(log_value), which may overflow."""
    return torch.nn.functional.softplus(log_value)

