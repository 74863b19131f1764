"""The feature registry: which columns each category produces, in which order, and what they mean.

The category modules compute named per-channel quantities; :func:`assemble` lays them out in the
order this registry lists, so names, dimensions and tensors cannot drift apart. Column order is
"feature-major": every channel of the first feature, then every channel of the next, then the
channel-pair correlations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import torch

FEATURE_CATEGORIES: tuple[str, str, str] = ("initial", "summary", "temporal")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: its category, unique name, meaning, and whether gradients flow through it."""

    category: str
    name: str
    description: str
    differentiable: bool


# (stem, description); every stem yields one column per channel, named f"{stem}_c{k}".
_PER_CHANNEL: dict[str, tuple[tuple[str, str], ...]] = {
    "initial": (
        ("mean", "spatial mean of frame 0, asinh-compressed"),
        ("std", "spatial standard deviation of frame 0, as 0.5*log1p(variance)"),
        ("skewness", "skewness of frame 0, asinh-compressed (0 for flat fields)"),
        ("kurtosis", "log1p of the fourth standardized moment of frame 0 (log1p(3) for Gaussian noise)"),
        ("max_abs", "soft max |x| of frame 0 (16-norm), log1p-compressed"),
        ("grad_energy", "log1p of mean |grad x|^2 of frame 0 on the unit periodic square (spectral)"),
        ("laplacian_energy", "log1p of mean (laplacian x)^2 of frame 0 on the unit periodic square (spectral)"),
        ("spectral_slope", "least-squares slope of log radially averaged power vs log |k|, shells 1..n/2"),
        ("spectral_centroid", "power-weighted mean |k| of frame 0 as a fraction of the Nyquist wavenumber n/2"),
        ("corr_length", "soft first 1/e crossing of the radial autocorrelation (via FFT), fraction of the domain"),
    ),
    "temporal": (
        ("mean", "spatial mean per frame, asinh-compressed"),
        ("std", "spatial standard deviation per frame, as 0.5*log1p(variance)"),
        ("max_abs", "soft max |x| per frame (16-norm), log1p-compressed"),
        ("grad_energy", "log1p of mean |grad x|^2 per frame on the unit periodic square (spectral)"),
        ("laplacian_energy", "log1p of mean (laplacian x)^2 per frame on the unit periodic square (spectral)"),
        ("power_band0", "fraction of spectral power with 0 < |k| <= n/16"),
        ("power_band1", "fraction of spectral power with n/16 < |k| <= n/8"),
        ("power_band2", "fraction of spectral power with n/8 < |k| <= n/4"),
        ("power_band3", "fraction of spectral power with |k| > n/4"),
    ),
    "summary": (
        ("growth_rate", "least-squares slope per step of log RMS (floored at 1e-6) over the rollout"),
        ("log_energy_ratio", "log of final over initial mean-square energy (each floored at 1e-12)"),
        ("norm_drift", "asinh(final RMS) - asinh(initial RMS)"),
        ("autocorr_lag1", "mean correlation between frames t and t+1 (standardized fields)"),
        ("autocorr_lag8", "mean correlation between frames t and t+min(8, T) (standardized fields)"),
        ("roughness", "mean squared temporal difference over spatio-temporal variance"),
        ("ic_corr_final", "correlation between the final frame and frame 0 (standardized fields)"),
        ("osc_crossings", "soft rate of sign changes of the detrended log-RMS series"),
        ("osc_peak", "soft-max share of a single temporal frequency in the detrended log-RMS power"),
        ("osc_freq", "power-weighted frequency (cycles/step) of the detrended log-RMS series"),
    ),
}

_PAIR_DESCRIPTION: dict[str, str] = {
    "initial": "spatial correlation of the two channels at frame 0",
    "temporal": "spatial correlation of the two channels per frame",
}


def channel_pairs(channels: int) -> list[tuple[int, int]]:
    """The channel pairs (i < j) that carry a correlation column, in column order."""
    return list(combinations(range(channels), 2))


def feature_specs(channels: int) -> dict[str, list[FeatureSpec]]:
    """Every column of every category for ``channels`` channels, in output order."""
    specs: dict[str, list[FeatureSpec]] = {}
    for category in FEATURE_CATEGORIES:
        columns = [
            FeatureSpec(category, f"{stem}_c{k}", f"{description} (channel {k})", True)
            for stem, description in _PER_CHANNEL[category]
            for k in range(channels)
        ]
        if category in _PAIR_DESCRIPTION:
            columns += [
                FeatureSpec(category, f"corr_c{i}_c{j}", f"{_PAIR_DESCRIPTION[category]} ({i}, {j})", True)
                for i, j in channel_pairs(channels)
            ]
        specs[category] = columns
    return specs


def feature_names(channels: int) -> dict[str, list[str]]:
    """Column names per category, in output order."""
    return {category: [spec.name for spec in specs] for category, specs in feature_specs(channels).items()}


def feature_dims(channels: int) -> dict[str, int]:
    """Number of columns per category."""
    return {category: len(specs) for category, specs in feature_specs(channels).items()}


def stems(category: str) -> tuple[str, ...]:
    """The per-channel feature stems of ``category``, in column order."""
    return tuple(stem for stem, _ in _PER_CHANNEL[category])


def assemble(category: str, per_channel: Mapping[str, torch.Tensor], pairs: torch.Tensor | None) -> torch.Tensor:
    """Concatenate per-channel tensors ``[..., C]`` (and pair tensors ``[..., P]``) in registry order."""
    if set(per_channel) != set(stems(category)):
        raise ValueError(
            f"{category} features computed {sorted(per_channel)}, registry lists {sorted(stems(category))}"
        )
    if (pairs is None) != (category not in _PAIR_DESCRIPTION):
        raise ValueError(f"{category} pair correlations do not match the registry")
    parts = [per_channel[stem] for stem in stems(category)]
    if pairs is not None:
        parts.append(pairs)
    return torch.cat(parts, dim=-1)
