"""SUMMARY features: one row per rollout describing its dynamics as a whole.

Growth, drift and oscillation are read from the log-RMS series (floored, so a rollout that
decays to zero stays finite); memory from correlations between standardized frames;
roughness from frame-to-frame differences. Sign changes and spectral peaks use soft
surrogates (tanh signs, a softmax over frequencies) so gradients reach the rollout.
"""

from __future__ import annotations

import torch

from noa.features.frames import RELATIVE_RESOLUTION, TINY, FrameStatistics

LAGS = (1, 8)
LOG_NORM_RESOLUTION = 1e-3  # detrended log-RMS wiggles below this (in nats) do not count as oscillation
SIGN_SOFTNESS = 0.1  # in units of the detrended series' RMS
PEAK_SOFTNESS = 0.05  # temperature of the softmax over power fractions


def covariance_lags(steps: int) -> tuple[int, ...]:
    """The frame lags whose covariances the summary reads: 1, each of ``LAGS`` clamped to T, and T."""
    return tuple(sorted({1, steps, *(min(lag, steps) for lag in LAGS)}))


def summary_columns(frames: FrameStatistics, covariances: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel features ``{stem: [N, C]}`` of the rollouts behind ``frames``, given the lagged
    ``covariances`` ``{lag: [N, T+1-lag, C]}`` of y_{t+lag} and y_t for every lag of :func:`covariance_lags`."""
    log_norm = frames.log_norm
    steps = log_norm.shape[1] - 1
    time = torch.arange(steps + 1, device=log_norm.device, dtype=log_norm.dtype)
    time = (time - time.mean())[None, :, None]
    growth = (time * log_norm).sum(dim=1) / time.square().sum()
    detrended = log_norm - log_norm.mean(dim=1, keepdim=True) - growth[:, None] * time
    lags = {lag: min(lag, steps) for lag in LAGS}
    columns = {
        "growth_rate": growth,
        "log_energy_ratio": 2.0 * (log_norm[:, -1] - log_norm[:, 0]),
        "norm_drift": asinh_of_exp(log_norm[:, -1]) - asinh_of_exp(log_norm[:, 0]),
        "roughness": roughness(frames, covariances[1]),
        "ic_corr_final": standardize(covariances[steps], frames.shape_var, steps)[:, 0],
    }
    for lag, shift in lags.items():
        columns[f"autocorr_lag{lag}"] = standardize(covariances[shift], frames.shape_var, shift).mean(dim=1)
    columns.update(oscillation(detrended))
    return columns


def asinh_of_exp(log_value: torch.Tensor) -> torch.Tensor:
    """asinh(exp(log_value)) without overflow: log_value + log1p(sqrt(1 + exp(-2 log_value)))."""
    return log_value + torch.log1p(torch.sqrt(1.0 + torch.exp(-2.0 * log_value)))


def standardize(covariance: torch.Tensor, shape_var: torch.Tensor, lag: int) -> torch.Tensor:
    """Turn lagged covariances into correlations of the standardized frames (0 for flat frames)."""
    return covariance * torch.rsqrt(shape_var[:, lag:] * shape_var[:, :-lag])


def roughness(frames: FrameStatistics, covariance: torch.Tensor) -> torch.Tensor:
    """Mean squared frame-to-frame difference over the spatio-temporal variance, per channel (0 if static).

    Assembled from per-frame moments and the lag-1 ``covariance``, in units of the rollout's
    largest frame scale, so it needs no pass over the fields and cannot overflow.
    """
    relative = torch.exp(frames.log_scale - frames.log_scale.amax(dim=1, keepdim=True))  # M_t / max M, detached
    var = relative.square() * frames.var
    mean = relative * frames.mean
    cross = relative[:, 1:] * relative[:, :-1] * covariance
    increments = torch.relu(var[:, 1:] + var[:, :-1] - 2.0 * cross) + (mean[:, 1:] - mean[:, :-1]).square()
    total_var = var.mean(dim=1) + (mean - mean.mean(dim=1, keepdim=True)).square().mean(dim=1)
    mean_square = (var + mean.square()).mean(dim=1)
    floor = frames.floor.amin(dim=1)  # (AMPLITUDE_FLOOR / max M)^2
    return increments.mean(dim=1) / (total_var + floor + RELATIVE_RESOLUTION**2 * mean_square + TINY)


def oscillation(detrended: torch.Tensor) -> dict[str, torch.Tensor]:
    """Soft sign-change rate, peak power share and mean frequency of a detrended series ``[N, T+1, C]``."""
    length = detrended.shape[1]
    strength = detrended.square().mean(dim=1, keepdim=True) + LOG_NORM_RESOLUTION**2
    signs = torch.tanh(detrended * torch.rsqrt(strength) / SIGN_SOFTNESS)
    crossings = torch.relu(-signs[:, 1:] * signs[:, :-1]).mean(dim=1)
    coefficients = torch.fft.rfft(detrended, dim=1, norm="forward")
    multiplicity = torch.full((coefficients.shape[1],), 2.0, device=detrended.device, dtype=detrended.dtype)
    if length % 2 == 0:
        multiplicity[-1] = 1.0
    shares = (coefficients.real.square() + coefficients.imag.square())[:, 1:] * multiplicity[1:, None] / strength
    frequency = torch.fft.rfftfreq(length, device=detrended.device, dtype=detrended.dtype)[1:, None]
    return {
        "osc_crossings": crossings,
        "osc_peak": (shares * torch.softmax(shares / PEAK_SOFTNESS, dim=1)).sum(dim=1),
        "osc_freq": (shares * frequency).sum(dim=1),
    }
