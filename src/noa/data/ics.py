"""Initial-condition (IC) kinds for CNO rollouts.

Every IC is a periodic field ``[C, grid, grid]`` on the unit torus (pixel ``i`` sits at
``i / grid``), drawn on the CPU in float64 from ``noa.seeding.generator(seed, "ic", ...)``
and returned as float32, so one (spec, seed) pair gives the same bytes on every machine and
never depends on other samples. Channels are drawn independently.

Kinds and what ``ICSpec.length_scale`` (a fraction of the domain) means for each:

- ``gaussian_random_field``: white noise filtered by the Gaussian envelope
  ``exp(-pi^2 l^2 |k|^2 / 2)`` (k integer wavenumbers, mean mode removed). Its covariance
  is ``exp(-r^2 / l^2)``, so ``l`` is the distance at which the autocorrelation falls to
  ``exp(-1)``: the quantity :func:`correlation_length` measures. Measured at grid 64 (mean
  of 4 seeds) it is within 4% of ``l`` up to 0.08 and 11% short at 0.16: a zero-mean field on
  the torus cannot stay correlated over much of the domain, hence the draw range tops at 0.2.
- ``multiscale_grf``: 2-4 GRFs at scales ``l, l*q, l*q^2, ...`` (ratio ``q`` in [0.35, 0.6])
  with decreasing weights; ``l`` is the largest and heaviest-weighted scale.
- ``structured``: circles (``l`` = mean radius), stripes (``l`` = half-period) or
  level-set blobs (``l`` = scale of the GRF whose tanh-thresholded sign gives the blobs);
  the pattern is drawn from the seed. Edges are tanh profiles at least 1.5 pixels (and 0.1 l)
  wide, so nothing is aliased.
- ``localized``: 1-4 Gaussian bumps with random centres and signs on a zero background;
  ``l`` = mean bump standard deviation (at least one pixel).
- ``sinusoid``: 2-5 plane waves with integer wavevectors (hence exactly periodic) and random
  phases; ``l`` = ``1 / k_max``, the shortest wavelength allowed, with ``|k|`` drawn in
  ``[k_max / 2, k_max]``.

Normalisation: each channel is scaled so its RMS, ``sqrt(mean(x^2))``, equals
``AMPLITUDE_LEVELS[spec.amplitude_level]`` (RMS rather than max-abs, so the energy fed to
the operator is comparable across kinds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from noa.errors import NoaError
from noa.seeding import generator

# The order is part of every IC's seed (draw_spec and make_ic key their generators by the
# kind's index here): append new kinds, never reorder, or every dataset's ICs change.
IC_KINDS: tuple[str, ...] = (
    "gaussian_random_field",
    "multiscale_grf",
    "structured",
    "localized",
    "sinusoid",
)
# IC kinds were called "IC families" when the dataset format was fixed, and files keep those
# names: the root attribute listing a dataset's kinds (also their key in its ``config``
# attribute and in a diagnose report's data) and the per-sample index array under /metadata.
# Datasets and reports written before read back unchanged.
IC_KINDS_KEY = "ic_families"
IC_KIND_KEY = "ic_family"
AMPLITUDE_LEVELS: dict[str, float] = {"low": 0.25, "medium": 1.0, "high": 2.5}
STRUCTURED_PATTERNS: tuple[str, ...] = ("circles", "stripes", "blobs")
# Ranges draw_spec samples length_scale from (log-uniform); sinusoid draws k_max in 2..8.
LENGTH_SCALE_RANGES: dict[str, tuple[float, float]] = {
    "gaussian_random_field": (0.04, 0.2),
    "multiscale_grf": (0.12, 0.3),
    "structured": (0.06, 0.2),
    "localized": (0.03, 0.08),
    "sinusoid": (1 / 8, 1 / 2),
}
MIN_GRID = 8
MAX_LENGTH_SCALE = 0.5  # half the domain: beyond that a periodic field has no such scale
_EDGE_PIXELS = 1.5  # narrowest tanh edge, in pixels, that stays free of aliasing

_SPEC_STREAM = 0
_FIELD_STREAM = 1


@dataclass(frozen=True)
class ICSpec:
    """What was drawn for one sample; stored per sample in the dataset."""

    kind: str
    amplitude_level: str
    length_scale: float

    def __post_init__(self) -> None:
        validate_kinds([self.kind])
        if self.amplitude_level not in AMPLITUDE_LEVELS:
            raise NoaError(
                f"unknown IC amplitude level {self.amplitude_level!r}; use one of {', '.join(AMPLITUDE_LEVELS)}"
            )
        ell = float(self.length_scale)
        if not (math.isfinite(ell) and 0.0 < ell <= MAX_LENGTH_SCALE):
            raise NoaError(
                f"IC length_scale must be a fraction of the domain in (0, {MAX_LENGTH_SCALE}], "
                f"got {self.length_scale!r}"
            )


def validate_kinds(names: Sequence[str]) -> tuple[str, ...]:
    """The given IC kind names as a tuple, or a NoaError naming the unknown one."""
    if isinstance(names, str):
        names = [names]
    if len(names) == 0:
        raise NoaError(f"no IC kinds given; use one or more of {', '.join(IC_KINDS)}")
    for name in names:
        if name not in IC_KINDS:
            raise NoaError(f"unknown IC kind {name!r}; valid kinds: {', '.join(IC_KINDS)}")
    return tuple(names)


def draw_spec(kind: str, seed: int) -> ICSpec:
    """Amplitude level and length scale for ``kind``, drawn from ``seed`` alone."""
    (kind,) = validate_kinds([kind])
    gen = generator(seed, "ic", IC_KINDS.index(kind), _SPEC_STREAM)
    levels = list(AMPLITUDE_LEVELS)
    level = levels[_randint(gen, len(levels))]
    if kind == "sinusoid":
        ell = 1.0 / (2 + _randint(gen, 7))
    else:
        lo, hi = LENGTH_SCALE_RANGES[kind]
        ell = math.exp(_uniform(gen, math.log(lo), math.log(hi)))
    return ICSpec(kind=kind, amplitude_level=level, length_scale=ell)


def make_ic(spec: ICSpec, seed: int, channels: int = 3, grid: int = 64) -> torch.Tensor:
    """The IC field ``[channels, grid, grid]`` (float32, CPU) for ``spec`` and ``seed``."""
    _check_size(channels, grid)
    gen = generator(seed, "ic", IC_KINDS.index(spec.kind), _FIELD_STREAM)
    field = _BUILDERS[spec.kind](spec.length_scale, gen, channels, grid)
    return _normalise_rms(field, AMPLITUDE_LEVELS[spec.amplitude_level]).to(torch.float32)


def make_ics(
    kinds: Sequence[str], seeds: Sequence[int], channels: int = 3, grid: int = 64
) -> tuple[torch.Tensor, list[ICSpec]]:
    """A batch ``[N, C, grid, grid]`` whose sample i depends only on (kinds[i], seeds[i])."""
    if len(kinds) != len(seeds):
        raise NoaError(f"got {len(kinds)} IC kinds but {len(seeds)} seeds; give one of each per sample")
    _check_size(channels, grid)
    specs = [draw_spec(kind, seed) for kind, seed in zip(kinds, seeds)]
    fields = [make_ic(spec, seed, channels, grid) for spec, seed in zip(specs, seeds)]
    if not fields:
        return torch.empty(0, channels, grid, grid), specs
    return torch.stack(fields), specs


def correlation_length(field: torch.Tensor) -> float:
    """Distance (fraction of the domain) where the autocorrelation first drops below 1/e.

    The periodic autocorrelation of each mean-removed channel comes from the FFT, is averaged
    radially (lags binned by whole pixels, each bin placed at its mean distance) and over the
    channels that vary, and the crossing is linearly interpolated. A field with no variation
    gives 0.0; one that stays correlated out to half the domain gives that largest distance.
    """
    if field.dim() == 2:
        field = field.unsqueeze(0)
    if field.dim() != 3:
        raise NoaError(f"correlation_length expects a field [C, H, W] or [H, W], got {tuple(field.shape)}")
    x = field.detach().to(torch.float64)
    height, width = x.shape[-2:]
    # A channel varies if its std exceeds 1e-10 of its RMS: rounding noise on a constant does not.
    mean_square = x.square().mean(dim=(-2, -1))
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()
    acf = torch.fft.ifft2(power).real / (height * width)
    variance = acf[:, 0, 0]
    varying = variance > 1e-20 * mean_square
    if not bool(varying.any()):
        return 0.0
    acf = (acf[varying] / variance[varying, None, None]).mean(dim=0)

    size = max(height, width)
    dy = _periodic_lag(height, x.device) * (size / height)
    dx = _periodic_lag(width, x.device) * (size / width)
    # Lags in pixels of the longer side.
    radius = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2).flatten()
    bins = torch.round(radius).long()
    keep = bins <= size // 2
    bins, radius, values = bins[keep], radius[keep], acf.flatten()[keep]
    counts = torch.bincount(bins).to(torch.float64)
    mean_r = torch.bincount(bins, weights=radius) / counts
    profile = torch.bincount(bins, weights=values) / counts

    threshold = math.exp(-1.0)
    below = torch.nonzero(profile < threshold)
    if below.numel() == 0:
        return float(mean_r[-1]) / size
    i = int(below[0])
    r0, r1 = float(mean_r[i - 1]), float(mean_r[i])
    c0, c1 = float(profile[i - 1]), float(profile[i])
    return (r0 + (c0 - threshold) / (c0 - c1) * (r1 - r0)) / size


# --- builders, one per kind: (length_scale, generator, channels, grid) -> float64 [C, grid, grid] ---


def _gaussian_random_field(ell: float, gen: torch.Generator, channels: int, grid: int) -> torch.Tensor:
    noise = torch.randn(channels, grid, grid, generator=gen, dtype=torch.float64)
    k = torch.fft.fftfreq(grid, d=1.0 / grid, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    envelope = torch.exp(-0.5 * (math.pi * ell) ** 2 * k2)
    envelope[0, 0] = 0.0
    return torch.fft.ifft2(torch.fft.fft2(noise) * envelope).real


def _multiscale_grf(ell: float, gen: torch.Generator, channels: int, grid: int) -> torch.Tensor:
    count = 2 + _randint(gen, 3)
    ratio = _uniform(gen, 0.35, 0.6)
    total = torch.zeros(channels, grid, grid, dtype=torch.float64)
    weight = 1.0
    for j in range(count):
        scale = max(ell * ratio**j, _EDGE_PIXELS / grid)
        total += weight * _normalise_rms(_gaussian_random_field(scale, gen, channels, grid), 1.0)
        weight *= _uniform(gen, 0.3, 0.7)
    return total


def _structured(ell: float, gen: torch.Generator, channels: int, grid: int) -> torch.Tensor:
    pattern = STRUCTURED_PATTERNS[_randint(gen, len(STRUCTURED_PATTERNS))]
    edge = max(_EDGE_PIXELS / grid, 0.1 * ell)
    if pattern == "blobs":
        # tanh(g / w) has edges w / |grad g| wide; scale w so even the steepest one is `edge`.
        smooth = _gaussian_random_field(ell, gen, channels, grid)
        steep = torch.hypot(smooth - smooth.roll(1, -1), smooth - smooth.roll(1, -2)) * grid
        return torch.tanh(smooth / (edge * steep.amax(dim=(-2, -1), keepdim=True)))
    coord = torch.arange(grid, dtype=torch.float64) / grid
    out = torch.zeros(channels, grid, grid, dtype=torch.float64)
    for c in range(channels):
        if pattern == "circles":
            for _ in range(1 + _randint(gen, 5)):
                radius = ell * _uniform(gen, 0.7, 1.3)
                dist = _periodic_distance(coord, _uniform(gen, 0, 1), _uniform(gen, 0, 1))
                value = _random_sign(gen) * _uniform(gen, 0.5, 1.0)
                out[c] += value * 0.5 * (1.0 - torch.tanh((dist - radius) / edge))
        else:  # stripes: integer wavevector so the pattern wraps around the torus
            angle = _uniform(gen, 0.0, math.pi)
            magnitude = 1.0 / (2.0 * ell)
            kx, ky = round(magnitude * math.cos(angle)), round(magnitude * math.sin(angle))
            if kx == 0 and ky == 0:
                kx = 1
            phase = _wave_phase(coord, kx, ky) + _uniform(gen, 0.0, 2.0 * math.pi)
            sharpness = 2.0 * math.pi * math.hypot(kx, ky) * edge
            out[c] = torch.tanh(torch.sin(phase) / sharpness)
    return out


def _localized(ell: float, gen: torch.Generator, channels: int, grid: int) -> torch.Tensor:
    coord = torch.arange(grid, dtype=torch.float64) / grid
    out = torch.zeros(channels, grid, grid, dtype=torch.float64)
    for c in range(channels):
        for _ in range(1 + _randint(gen, 4)):
            sigma = max(ell * _uniform(gen, 0.7, 1.3), 1.0 / grid)  # never between pixels
            dist = _periodic_distance(coord, _uniform(gen, 0, 1), _uniform(gen, 0, 1))
            value = _random_sign(gen) * _uniform(gen, 0.5, 1.0)
            out[c] += value * torch.exp(-0.5 * (dist / sigma) ** 2)
    return out


def _sinusoid(ell: float, gen: torch.Generator, channels: int, grid: int) -> torch.Tensor:
    k_max = min(max(1, round(1.0 / ell)), grid // 4)
    # Upper half-plane only, so no wave can cancel its mirror image.
    lattice = [
        (kx, ky)
        for kx in range(-k_max, k_max + 1)
        for ky in range(0, k_max + 1)
        if (ky > 0 or kx > 0) and k_max / 2 <= math.hypot(kx, ky) <= k_max
    ]
    coord = torch.arange(grid, dtype=torch.float64) / grid
    out = torch.zeros(channels, grid, grid, dtype=torch.float64)
    for c in range(channels):
        for _ in range(2 + _randint(gen, 4)):
            kx, ky = lattice[_randint(gen, len(lattice))]
            phase = _uniform(gen, 0.0, 2.0 * math.pi)
            value = _uniform(gen, 0.5, 1.0)
            out[c] += value * torch.cos(_wave_phase(coord, kx, ky) + phase)
    return out


_BUILDERS = {
    "gaussian_random_field": _gaussian_random_field,
    "multiscale_grf": _multiscale_grf,
    "structured": _structured,
    "localized": _localized,
    "sinusoid": _sinusoid,
}


# --- helpers ---


def _check_size(channels: int, grid: int) -> None:
    if int(grid) < MIN_GRID:
        raise NoaError(f"IC grid must be at least {MIN_GRID} pixels per side, got {grid}")
    if int(channels) < 1:
        raise NoaError(f"IC channels must be at least 1, got {channels}")


def _normalise_rms(field: torch.Tensor, amplitude: float) -> torch.Tensor:
    rms = field.square().mean(dim=(-2, -1), keepdim=True).sqrt()
    return field * (amplitude / rms)


def _periodic_lag(n: int, device: torch.device) -> torch.Tensor:
    """Signed minimal-image lag of each FFT index, in pixels."""
    lag = torch.arange(n, dtype=torch.float64, device=device)
    return torch.where(lag > n / 2, lag - n, lag)


def _periodic_distance(coord: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """Distance on the unit torus from (cx, cy) to every pixel, as [grid, grid]."""
    dx = coord - cx
    dy = coord - cy
    dx = dx - torch.round(dx)
    dy = dy - torch.round(dy)
    return torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)


def _wave_phase(coord: torch.Tensor, kx: int, ky: int) -> torch.Tensor:
    """Phase 2 pi (kx x + ky y) of a plane wave on the unit torus, as [grid, grid]."""
    return 2.0 * math.pi * (kx * coord[None, :] + ky * coord[:, None])


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=gen))


def _random_sign(gen: torch.Generator) -> float:
    return 1.0 if _randint(gen, 2) else -1.0
