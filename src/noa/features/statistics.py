"""A rollout's statistics: everything the features read from its frames, computed chunk by chunk.

Features depend on the frames only through small per-frame statistics
(:class:`~noa.features.frames.FrameStatistics`), covariances between frames t and t+lag, and
frame 0's shape (:func:`~noa.features.initial.initial_shape`). None of these has spatial axes,
so a rollout of any length is summarized in memory proportional to T, not to T·H·W; the fields
and spectra they come from are needed one chunk of frames at a time.

That also makes the gradient cheap in memory. For a loss L of the statistics,
:func:`frame_gradient` returns dL/dx_t by back-propagating, one chunk at a time, the surrogate
Σ <dL/ds, s(chunk)> over the chunk's statistics s. A lagged covariance cov(t) = <S_t, S_{t+lag}>
is bilinear in two frames' spectra, so its share of dL/dS_t is dL/dcov(t)·S_{t+lag} +
dL/dcov(t-lag)·S_{t-lag}: the partners are recomputed without gradients and the sum over chunks
is exact, while the autograd graph alive at any moment spans one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noa.features import spectral
from noa.features.frames import Fields, FrameStatistics, frame_statistics, scaled_fields
from noa.features.initial import initial_shape
from noa.features.summary import covariance_lags


@dataclass(frozen=True)
class RolloutStatistics:
    """What the features of rollouts ``[N, T+1, C, H, W]`` are computed from."""

    frames: FrameStatistics  # [N, T+1, ...]
    covariances: dict[int, torch.Tensor]  # lag -> covariance of y_{t+lag} and y_t, [N, T+1-lag, C]
    initial: dict[str, torch.Tensor]  # frame 0's shape features, {stem: [N, C]}

    def leaves(self) -> list[torch.Tensor]:
        """The tensors a loss reaches the frames through, in :meth:`requiring_grad`'s order."""
        return [getattr(self.frames, name) for name in FrameStatistics.differentiable()] + list(
            self.covariances.values()
        )

    def requiring_grad(self) -> RolloutStatistics:
        """A detached copy whose per-frame statistics and covariances are autograd leaves.

        Frame 0's shape stays constant: a NOA rollout never changes its initial condition.
        """
        leaf = {name: getattr(self.frames, name).detach().requires_grad_() for name in FrameStatistics.differentiable()}
        return RolloutStatistics(
            frames=FrameStatistics(scale=self.frames.scale, **leaf),
            covariances={lag: c.detach().requires_grad_() for lag, c in self.covariances.items()},
            initial={stem: v.detach() for stem, v in self.initial.items()},
        )


def rollout_statistics(x: torch.Tensor, chunk: int | None = None) -> RolloutStatistics:
    """Statistics of rollouts ``x`` ``[N, T+1, C, H, W]``, taken ``chunk`` frames at a time (all at once by default).

    Differentiable when ``x`` is; under ``torch.no_grad`` the peak memory is a few chunks of frames.
    """
    frames = x.shape[1]
    chunk = chunk or frames
    lags = covariance_lags(frames - 1)
    parts: list[FrameStatistics] = []
    covariances: dict[int, list[torch.Tensor]] = {lag: [] for lag in lags}
    initial: dict[str, torch.Tensor] = {}
    for start in range(0, frames, chunk):
        stop = min(frames, start + chunk)
        fields = scaled_fields(x[:, start:stop].to(torch.float32))
        parts.append(frame_statistics(fields))
        if start == 0:
            initial = initial_shape(_first_frame(fields), parts[0].frames(0, 1))
        for lag in lags:
            rows = min(stop, frames - lag)  # frames t of this chunk that have a partner t + lag
            if rows > start:
                partners = _spectra(x, start + lag, rows + lag, fields.spectrum, start)
                covariances[lag].append(spectral.dot(partners, fields.spectrum[:, : rows - start]))
    return RolloutStatistics(
        frames=FrameStatistics.cat(parts),
        covariances={lag: torch.cat(pieces, dim=1) for lag, pieces in covariances.items()},
        initial=initial,
    )


def frame_gradient(loss: torch.Tensor, stats: RolloutStatistics, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """dL/dx ``[N, T+1, C, H, W]`` (float32) for a ``loss`` that depends on rollouts ``x`` only through
    ``stats = rollout_statistics(x).requiring_grad()``; frame 0 (the fixed initial condition) gets zeros.

    The statistics' own graph (no spatial axes) is freed first; then each chunk of ``chunk`` frames
    is differentiated on its own, so no graph over more than ``chunk`` frames is ever alive.
    """
    grads = torch.autograd.grad(loss, stats.leaves(), materialize_grads=True)
    names = FrameStatistics.differentiable()
    frame_grads = dict(zip(names, grads[: len(names)]))
    covariance_grads = dict(zip(stats.covariances, grads[len(names) :]))
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(1, x.shape[1], chunk):
        stop = min(x.shape[1], start + chunk)
        piece = x[:, start:stop].detach().to(torch.float32).requires_grad_()
        with torch.enable_grad():
            fields = scaled_fields(piece)
            part = frame_statistics(fields)
            surrogate = sum((frame_grads[name][:, start:stop] * getattr(part, name)).sum() for name in names)
            partners = _covariance_cotangent(x, covariance_grads, fields.spectrum.detach(), start)
            surrogate = surrogate + spectral.dot(partners, fields.spectrum).sum()
        out[:, start:stop] = torch.autograd.grad(surrogate, piece)[0]
    return out


@torch.no_grad()
def _covariance_cotangent(
    x: torch.Tensor, grads: dict[int, torch.Tensor], spectrum: torch.Tensor, start: int
) -> torch.Tensor:
    """Σ_lag dL/dcov_lag(t)·S_{t+lag} + dL/dcov_lag(t-lag)·S_{t-lag} for the frames t of a chunk whose
    (detached) spectra ``spectrum`` start at frame ``start``: the covariances' share of dL/dS_t."""
    frames, stop = x.shape[1], start + spectrum.shape[1]
    cotangent = torch.zeros_like(spectrum)
    for lag, grad in grads.items():
        ahead = min(stop, frames - lag)  # t < ahead has a partner t + lag
        if ahead > start:
            partners = _spectra(x, start + lag, ahead + lag, spectrum, start)
            cotangent[:, : ahead - start] += grad[:, start:ahead, :, None, None] * partners
        behind = max(start, lag)  # t >= behind has a partner t - lag
        if stop > behind:
            partners = _spectra(x, behind - lag, stop - lag, spectrum, start)
            cotangent[:, behind - start :] += grad[:, behind - lag : stop - lag, :, None, None] * partners
    return cotangent


def _spectra(x: torch.Tensor, first: int, last: int, known: torch.Tensor, known_start: int) -> torch.Tensor:
    """Weighted spectra of frames ``first:last`` of ``x``, reusing ``known`` (the spectra of frames from
    ``known_start`` on) where they overlap and computing the rest."""
    known_stop = known_start + known.shape[1]
    pieces = []
    if first < min(last, known_start):
        pieces.append(scaled_fields(x[:, first : min(last, known_start)].to(torch.float32)).spectrum)
    if max(first, known_start) < min(last, known_stop):
        pieces.append(known[:, max(first, known_start) - known_start : min(last, known_stop) - known_start])
    if max(first, known_stop) < last:
        pieces.append(scaled_fields(x[:, max(first, known_stop) : last].to(torch.float32)).spectrum)
    return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]


def _first_frame(fields: Fields) -> Fields:
    return Fields(fields.scale[:, :1], fields.scaled[:, :1], fields.spectrum[:, :1], fields.power[:, :1])
