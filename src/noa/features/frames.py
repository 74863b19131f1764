"""Scale-safe per-frame statistics shared by every feature category.

Each frame (per channel) is divided by its max-abs value M (detached, floored at
``AMPLITUDE_FLOOR``) before any power is taken, so fields of any finite magnitude never
overflow or underflow in float32. Scale-dependent quantities are rebuilt in log space
(log E_x = 2 log M + log E_y), which keeps them exact and finite; because each such identity
holds for any fixed M, detaching M leaves the gradients exact too.

Shape statistics (correlations, moments, spectral fractions) standardize by a variance
floored by ``AMPLITUDE_FLOOR``^2 (absolute) and ``RELATIVE_RESOLUTION``^2 times the mean
square (about float32 round-off of an offset field): flat, zero and vanishing fields get shape
features near 0 and bounded gradients instead of amplified round-off.

Two sizes of intermediate: :class:`Fields` holds whole fields and spectra (as large as the
frames themselves) and lives for one chunk of frames; :class:`FrameStatistics` holds what the
TEMPORAL and SUMMARY features need from each frame, without spatial axes, so a whole
rollout's worth is cheap to keep and to differentiate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from noa.features import spectral
from noa.features.registry import channel_pairs

AMPLITUDE_FLOOR = 1e-6
RELATIVE_RESOLUTION = 1e-4
TINY = 1e-30
SHAPE_EPS = 1e-6  # added to the (at most 1) variance of a standardized field before dividing by it
SOFT_MAX_ORDER = 16  # the p of the p-norm used as a differentiable max |x|


@dataclass(frozen=True)
class Fields:
    """Frames ``[N, F, C, H, W]`` divided by their scale, and their weighted spectra. "y" is x / M."""

    scale: torch.Tensor  # M (detached), [N, F, C]
    scaled: torch.Tensor  # y, [N, F, C, H, W]
    spectrum: torch.Tensor  # weighted mean-free spectrum of y, complex [N, F, C, H, W//2+1]
    power: torch.Tensor  # its power, [N, F, C, H, W//2+1]; sums to the variance of y


def scaled_fields(x: torch.Tensor) -> Fields:
    """Divide frames ``x`` ``[N, F, C, H, W]`` (float32) by their max-abs value and take their spectra."""
    spatial = (-2, -1)
    detached = x.detach()
    scale = torch.maximum(detached.amax(dim=spatial), -detached.amin(dim=spatial)).clamp_min(AMPLITUDE_FLOOR)
    y = x / scale[..., None, None]
    spectrum = spectral.weighted_spectrum(y)
    return Fields(scale=scale, scaled=y, spectrum=spectrum, power=spectral.power(spectrum))


@dataclass(frozen=True)
class FrameStatistics:
    """Per-frame, per-channel statistics ``[N, F, C]`` unless stated: all that TEMPORAL and SUMMARY
    features need from a frame except the lagged covariances between frames."""

    scale: torch.Tensor  # M (detached, so never differentiated)
    mean: torch.Tensor  # spatial mean of y
    sums: torch.Tensor  # power @ spectral.mode_weights, [N, F, C, 4 + bands]; sums[..., 0] is the variance of y
    log_soft_max: torch.Tensor  # log of the SOFT_MAX_ORDER-norm of y
    pairs: torch.Tensor  # spatial covariance of y between channels i < j, [N, F, C(C-1)/2]

    @classmethod
    def differentiable(cls) -> tuple[str, ...]:
        """The fields that carry a gradient back to the frames (all but the detached scale)."""
        return tuple(f.name for f in fields(cls) if f.name != "scale")

    @classmethod
    def cat(cls, parts: list[FrameStatistics]) -> FrameStatistics:
        """Join statistics of consecutive chunks of frames along the frame axis."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=1) for f in fields(cls)})

    def frames(self, start: int, stop: int) -> FrameStatistics:
        """The statistics of frames ``start:stop``."""
        return FrameStatistics(**{f.name: getattr(self, f.name)[:, start:stop] for f in fields(self)})

    @property
    def log_scale(self) -> torch.Tensor:
        return self.scale.log()

    @property
    def var(self) -> torch.Tensor:
        """Spatial variance of y."""
        return self.sums[..., 0]

    @property
    def floor(self) -> torch.Tensor:
        """(AMPLITUDE_FLOOR / M)^2: the absolute variance floor in units of y."""
        return (AMPLITUDE_FLOOR / self.scale).square()

    @property
    def shape_var(self) -> torch.Tensor:
        """Floored variance of y used to standardize."""
        var = self.var
        return var + self.floor + RELATIVE_RESOLUTION**2 * (var + self.mean.square()) + TINY

    @property
    def log_norm(self) -> torch.Tensor:
        """log sqrt(mean(x^2) + AMPLITUDE_FLOOR^2): the log RMS, floored so zero fields stay finite."""
        return self.log_scale + 0.5 * torch.log(self.var + self.mean.square() + self.floor + TINY)


def frame_statistics(frames: Fields) -> FrameStatistics:
    """The small per-frame statistics of ``frames``."""
    y = frames.scaled
    cells = y.shape[-2] * y.shape[-1]
    soft_max = torch.linalg.vector_norm(y, ord=SOFT_MAX_ORDER, dim=(-2, -1)) / cells ** (1 / SOFT_MAX_ORDER)
    return FrameStatistics(
        scale=frames.scale,
        mean=y.mean(dim=(-2, -1)),
        sums=frames.power.flatten(-2) @ spectral.mode_weights(y.shape[-1], y.device),
        log_soft_max=torch.log(soft_max + TINY),
        pairs=pair_covariances(frames.spectrum),
    )


def pair_covariances(spectrum: torch.Tensor) -> torch.Tensor:
    """Spatial covariance of every channel pair: spectra ``[..., C, H, W//2+1]`` -> ``[..., C(C-1)/2]``.

    One batched Gram matrix over channels, rather than a product per pair, keeps the backward
    pass to a single matmul instead of a full-size gradient buffer per channel slice.
    """
    first, second = pair_indices(spectrum.shape[-3], spectrum.device)
    flat = torch.view_as_real(spectrum).flatten(-3)
    gram = flat @ flat.transpose(-1, -2)
    return gram[..., first, second]


def pair_indices(channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The channel indices (i, j), i < j, of each pair column."""
    pairs = channel_pairs(channels)
    first = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device)
    second = torch.tensor([j for _, j in pairs], dtype=torch.long, device=device)
    return first, second


def log1p_from_log(log_value: torch.Tensor) -> torch.Tensor:
    """log1p(exp(log_value)) without forming exp(log_value), which may overflow."""
    return torch.nn.functional.softplus(log_value)
