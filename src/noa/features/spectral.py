"""Spectral helpers for periodic square grids, on the half-plane layout of ``torch.fft.rfft2``.

Spectra are *weighted*: each half-plane coefficient is scaled by the square root of how many
full-plane modes it stands for (1 or 2), and the mean (DC) is removed. Plain sums of power,
and plain dot products of two weighted spectra, then equal the spatial variance and spatial
covariance (Parseval), which lets correlations and energies be read from the spectrum without
extra passes over the fields.

The same half-plane, read as lags, holds half of a periodic autocorrelation map, and the
periodic lag distance of cell (i, j) equals the wavenumber magnitude of mode (i, j): one
radial-shell operator serves both spectra and autocorrelations.
"""

from __future__ import annotations

import math

import torch

# Band edges as fractions of the Nyquist wavenumber n/2: (0, 1/8], (1/8, 1/4], (1/4, 1/2], (1/2, inf).
BAND_EDGES: tuple[float, ...] = (0.125, 0.25, 0.5)


def half_plane(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(radius, multiplicity)``, both ``[n, n//2 + 1]``: integer |k| (or periodic lag distance) per cell,
    and how many full-plane cells each half-plane cell stands for (1 or 2)."""
    ky = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=torch.float32)
    kx = torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=torch.float32)
    radius = torch.sqrt(ky[:, None].square() + kx[None, :].square())
    columns = torch.full((kx.numel(),), 2.0, device=device, dtype=torch.float32)
    columns[0] = 1.0
    if n % 2 == 0:
        columns[-1] = 1.0
    return radius, columns.expand(n, -1)


def weighted_spectrum(field: torch.Tensor) -> torch.Tensor:
    """Mean-free weighted half-plane spectrum of ``field`` ``[..., n, n]`` -> complex ``[..., n, n//2+1]``."""
    n = field.shape[-1]
    _, multiplicity = half_plane(n, field.device)
    weights = multiplicity.sqrt().clone()
    weights[0, 0] = 0.0
    return torch.fft.rfft2(field, norm="forward") * weights


def power(spectrum: torch.Tensor) -> torch.Tensor:
    """|spectrum|^2 from real and imaginary parts (never ``abs``, whose sqrt has no gradient at 0)."""
    return spectrum.real.square() + spectrum.imag.square()


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spatial covariance of two fields from their weighted spectra ``[..., n, n//2+1]`` -> ``[...]``."""
    return (torch.view_as_real(a) * torch.view_as_real(b)).sum(dim=(-3, -2, -1))


def mode_weights(n: int, device: torch.device) -> torch.Tensor:
    """``[modes, 4 + bands]`` weights turning a flattened weighted power into (variance, mean |grad|^2,
    mean (laplacian)^2, |k|-weighted power / (n/2), band powers...).

    Derivatives are taken on the unit periodic square, so energies of a resolved field do not depend on n.
    """
    radius, _ = half_plane(n, device)
    angular = 2.0 * math.pi * radius
    edges = [0.0, *(edge * (n // 2) for edge in BAND_EDGES), math.inf]
    bands = [((radius > lo) & (radius <= hi)).float() for lo, hi in zip(edges[:-1], edges[1:])]
    columns = [torch.ones_like(radius), angular.square(), angular.square().square(), radius / (n // 2), *bands]
    return torch.stack(columns, dim=-1).reshape(-1, len(columns))


def shell_operator(n: int, device: torch.device) -> torch.Tensor:
    """``[modes, n//2]``: maps a flattened weighted power to the mean full-plane power of shells |k| ~ 1..n/2."""
    radius, multiplicity = half_plane(n, device)
    shells = torch.arange(1, n // 2 + 1, device=device, dtype=radius.dtype)
    members = (radius.round().reshape(-1, 1) == shells).float()
    return members / (members * multiplicity.reshape(-1, 1)).sum(dim=0)


def radial_autocorrelation(weighted_power: torch.Tensor) -> torch.Tensor:
    """Periodic autocovariance averaged over lag shells 1..n/2, from a weighted power ``[..., n, n//2+1]``."""
    n = weighted_power.shape[-2]
    _, multiplicity = half_plane(n, weighted_power.device)
    lags = torch.fft.irfft2(weighted_power / multiplicity, s=(n, n), norm="forward")[..., : n // 2 + 1]
    shells = shell_operator(n, weighted_power.device) * multiplicity.reshape(-1, 1)
    return lags.flatten(-2) @ shells.to(lags.dtype)
