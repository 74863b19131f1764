"""The stochastic convolutional operators (CNO): one operator per θ.

One operator, for one θ, maps a field x ∈ R^{C×H×W} (periodic grid) to

    O(x) = tanh(W_out · h_L + b_out),   h_0 = W_in · x + b_in,
    h_{i+1} = act(P_i · (D_i ⊛ h_i) + b_i)      for i < n_layers,

with 1×1 lift/projection (W_in, W_out), depthwise circular k×k convolutions D_i and pointwise
mixing P_i (a depthwise-separable CNN). Its weights are a deterministic, smooth function of θ
alone: truncations and combinations of one set of weight banks (:mod:`noa.operators.weights`).
A step is

    residual:  x' = x + dt·O(x) + σ·ξ        convex:  x' = α·x + (1-α)·O(x) + σ·ξ

where ξ is unit-variance Gaussian noise smoothed over ``noise_correlation`` of the domain and
drawn from a counter-based stream keyed by the sample's noise seed (:mod:`noa.operators.noise`):
the noise is the only thing about a rollout that θ and the IC do not fix. ``tanh`` bounds O, so
no CNO operator can blow up faster than linearly in time.

Batching heterogeneous operators: each operator is embedded in a padded shape that depends on
itself alone: hidden channels rounded up to a multiple of ``CHANNEL_BUCKET`` (16, 32, 48 or
64) with its own kernel size. Unused channels hold zero weights (act(0) = 0 for every
activation, so they stay exactly zero). Operators that share a padded shape form a group that
costs one grouped depthwise convolution and one batched matmul per block and step; blocks
beyond a sample's ``n_layers`` are skipped by a per-sample mask, which selects values exactly.
So a batch of B operators costs at most 12 group calls per block (4 channel buckets × 3
kernels), not B rollouts, and a sample's arithmetic has the same shape whatever batch it sits
in. The padding is part of the operator's definition: replay always runs it, so the ground
truth is one well-defined computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from noa.operators.space import ACTIVATIONS, CNO_SPACE, UPDATE_POLICIES, ParameterSpace
from noa.operators.weights import MAX_LAYERS, operator_weights
from noa.periodic import periodic_pad
from noa.seeding import derive_seed

CHANNEL_BUCKET = 16


def padded_shape(hp: dict[str, Any]) -> tuple[int, int]:
    """(hidden channels rounded up to the bucket, kernel size): a sample's computing shape."""
    return -(-hp["base_channels"] // CHANNEL_BUCKET) * CHANNEL_BUCKET, int(hp["kernel_size"])


def _runs(keys: list[Any]) -> list[tuple[Any, int, int]]:
    """Maximal runs of equal consecutive keys as (key, start, end)."""
    runs: list[tuple[Any, int, int]] = []
    for i, key in enumerate(keys):
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1], i + 1)
        else:
            runs.append((key, i, i + 1))
    return runs


@dataclass
class ShapeGroup:
    """Operators with one padded shape: rows ``start:end`` of the batch, weights stacked."""

    start: int
    end: int
    channels: int
    kernel: int
    w_in: torch.Tensor  # [n, ch, C]
    b_in: torch.Tensor  # [n, ch, 1]
    depthwise: torch.Tensor  # [MAX_LAYERS, n * ch, 1, k, k]
    pointwise: torch.Tensor  # [MAX_LAYERS, n, ch, ch]
    b_hidden: torch.Tensor  # [MAX_LAYERS, n, ch, 1]
    w_out: torch.Tensor  # [n, C, ch]
    b_out: torch.Tensor  # [n, C, 1]
    layer_active: torch.Tensor  # [MAX_LAYERS, n, 1, 1] bool
    activation_ids: list[int]  # per row, index into ACTIVATIONS (host)
    layer_counts: list[int]  # per row n_layers (host)

    def __post_init__(self) -> None:
        # Host-side plans, fixed per batch, so the time loop never inspects device values.
        self.activation_runs = [(ACTIVATIONS[a], s, e) for a, s, e in _runs(self.activation_ids)]
        self.layer_plan = [
            "all" if min(self.layer_counts) > layer else "none" if max(self.layer_counts) <= layer else "mixed"
            for layer in range(MAX_LAYERS)
        ]

    def repeat(self, m: int) -> ShapeGroup:
        """Each operator repeated m times in a row (realizations share weights, not noise)."""
        n, ch, k = self.end - self.start, self.channels, self.kernel

        def rep(t: torch.Tensor, dim: int) -> torch.Tensor:
            return t.repeat_interleave(m, dim=dim)

        depthwise = self.depthwise.reshape(MAX_LAYERS, n, ch, 1, k, k)
        return ShapeGroup(
            start=self.start * m,
            end=self.end * m,
            channels=ch,
            kernel=k,
            w_in=rep(self.w_in, 0),
            b_in=rep(self.b_in, 0),
            depthwise=rep(depthwise, 1).reshape(MAX_LAYERS, n * m * ch, 1, k, k),
            pointwise=rep(self.pointwise, 1),
            b_hidden=rep(self.b_hidden, 1),
            w_out=rep(self.w_out, 0),
            b_out=rep(self.b_out, 0),
            layer_active=rep(self.layer_active, 1),
            activation_ids=[a for a in self.activation_ids for _ in range(m)],
            layer_counts=[c for c in self.layer_counts for _ in range(m)],
        )


@dataclass
class OperatorBatch:
    """B operators on one device: shape groups plus per-sample update and noise settings."""

    groups: list[ShapeGroup]
    residual: torch.Tensor  # [B, 1, 1, 1] bool: residual (True) or convex policy
    dt: torch.Tensor  # [B, 1, 1, 1]
    alpha: torch.Tensor  # [B, 1, 1, 1]
    noise_scale: torch.Tensor  # [B, 1, 1, 1]
    noise_filter: torch.Tensor  # [B, 1, H, W//2+1] real, unit-variance smoothing in Fourier space
    noise_keys: list[int]

    @property
    def size(self) -> int:
        return self.residual.shape[0]

    def repeat(self, m: int) -> OperatorBatch:
        """Each operator repeated m times in a row (realizations share weights, not noise)."""
        return OperatorBatch(
            groups=[g.repeat(m) for g in self.groups],
            residual=self.residual.repeat_interleave(m, dim=0),
            dt=self.dt.repeat_interleave(m, dim=0),
            alpha=self.alpha.repeat_interleave(m, dim=0),
            noise_scale=self.noise_scale.repeat_interleave(m, dim=0),
            noise_filter=self.noise_filter.repeat_interleave(m, dim=0),
            noise_keys=[k for k in self.noise_keys for _ in range(m)],
        )


def _noise_filter(correlation: float, grid: int) -> torch.Tensor:
    """Fourier multiplier [grid, grid//2+1] of a Gaussian smoothing whose output has unit variance.

    The smoothing kernel's std is ``correlation`` × grid cells (0 = white noise).
    """
    fy = torch.fft.fftfreq(grid, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(grid, dtype=torch.float64)[None, :]
    sigma = correlation * grid
    full = torch.exp(-2.0 * (torch.pi * sigma) ** 2 * (fx**2 + fy**2))
    # With norm="ortho", white noise stays unit variance and filtering scales it by mean |G|^2.
    full = full / torch.sqrt((full**2).mean())
    return full[:, : grid // 2 + 1].to(torch.float32)


def _build_group(hps: list[dict[str, Any]], start: int, end: int, channels: int, device: torch.device) -> ShapeGroup:
    n = end - start
    ch, k = padded_shape(hps[start])
    w_in = torch.zeros(n, ch, channels)
    b_in = torch.zeros(n, ch, 1)
    depthwise = torch.zeros(MAX_LAYERS, n, ch, k, k)
    pointwise = torch.zeros(MAX_LAYERS, n, ch, ch)
    b_hidden = torch.zeros(MAX_LAYERS, n, ch, 1)
    w_out = torch.zeros(n, channels, ch)
    b_out = torch.zeros(n, channels, 1)
    layer_active = torch.zeros(MAX_LAYERS, n, 1, 1, dtype=torch.bool)
    for row, i in enumerate(range(start, end)):
        hp = hps[i]
        w = operator_weights(hp, channels)
        c, layers = hp["base_channels"], hp["n_layers"]
        w_in[row, :c] = w["w_in"]
        b_in[row, :c, 0] = w["b_in"]
        depthwise[:layers, row, :c] = w["depthwise"]
        pointwise[:layers, row, :c, :c] = w["pointwise"]
        b_hidden[:layers, row, :c, 0] = w["b_hidden"]
        w_out[row, :, :c] = w["w_out"]
        b_out[row, :, 0] = w["b_out"]
        layer_active[:layers, row] = True
    return ShapeGroup(
        start=start,
        end=end,
        channels=ch,
        kernel=k,
        w_in=w_in.to(device),
        b_in=b_in.to(device),
        depthwise=depthwise.reshape(MAX_LAYERS, n * ch, 1, k, k).to(device),
        pointwise=pointwise.to(device),
        b_hidden=b_hidden.to(device),
        w_out=w_out.to(device),
        b_out=b_out.to(device),
        layer_active=layer_active.to(device),
        activation_ids=[ACTIVATIONS.index(hps[i]["activation"]) for i in range(start, end)],
        layer_counts=[hps[i]["n_layers"] for i in range(start, end)],
    )


def build_operators(
    params: torch.Tensor,
    noise_seeds: list[int],
    channels: int,
    grid: int,
    device: torch.device | str = "cpu",
    space: ParameterSpace = CNO_SPACE,
) -> OperatorBatch:
    """B operators from unit θ rows [B, P] (weights, update rule, noise law) and noise seeds
    (the key of each row's noise stream, nothing else).

    Consecutive rows with the same padded shape share a group; callers that sort rows by
    (padded shape, activation) get the fewest groups and activation runs.
    """
    dev = torch.device(device)
    hps = [space.decode(row.tolist()) for row in params]
    groups = [_build_group(hps, start, end, channels, dev) for _, start, end in _runs([padded_shape(hp) for hp in hps])]

    def column(name: str) -> torch.Tensor:
        return torch.tensor([float(hp[name]) for hp in hps], dtype=torch.float32).reshape(-1, 1, 1, 1).to(dev)

    return OperatorBatch(
        groups=groups,
        residual=torch.tensor([hp["update_policy"] == UPDATE_POLICIES[0] for hp in hps]).reshape(-1, 1, 1, 1).to(dev),
        dt=column("dt"),
        alpha=column("alpha"),
        noise_scale=column("noise_scale"),
        noise_filter=torch.stack([_noise_filter(hp["noise_correlation"], grid)[None] for hp in hps]).to(dev),
        noise_keys=[derive_seed(int(s), "cno-noise") for s in noise_seeds],
    )


_ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
    "sin": torch.sin,
    "relu": torch.relu,
}


def _activate(h: torch.Tensor, group: ShapeGroup) -> torch.Tensor:
    """Per-sample activation: each run of rows gets its own function (elementwise, so a
    sample's values never depend on its neighbours)."""
    if len(group.activation_runs) == 1:
        return _ACTIVATION_FNS[group.activation_runs[0][0]](h)
    return torch.cat([_ACTIVATION_FNS[name](h[start:end]) for name, start, end in group.activation_runs])


def _apply_group(g: ShapeGroup, x: torch.Tensor) -> torch.Tensor:
    n, c, hgt, wid = x.shape
    ch, pad = g.channels, g.kernel // 2
    h = torch.bmm(g.w_in, x.reshape(n, c, hgt * wid)) + g.b_in  # [n, ch, HW]
    for layer, plan in enumerate(g.layer_plan):
        if plan == "none":
            break
        padded = periodic_pad(h.reshape(1, n * ch, hgt, wid), pad, pad)
        spatial = F.conv2d(padded, g.depthwise[layer], groups=n * ch)
        mixed = torch.bmm(g.pointwise[layer], spatial.reshape(n, ch, hgt * wid)) + g.b_hidden[layer]
        new = _activate(mixed, g)
        h = new if plan == "all" else torch.where(g.layer_active[layer], new, h)
    return torch.tanh(torch.bmm(g.w_out, h) + g.b_out).reshape(n, c, hgt, wid)


def apply_operator(ops: OperatorBatch, x: torch.Tensor) -> torch.Tensor:
    """O(x) for a batch of states x [B, C, H, W] (one operator per row)."""
    if len(ops.groups) == 1:
        return _apply_group(ops.groups[0], x)
    return torch.cat([_apply_group(g, x[g.start : g.end]) for g in ops.groups])


def smooth_noise(ops: OperatorBatch, white: torch.Tensor) -> torch.Tensor:
    """White noise [B, C, H, W] smoothed by each sample's filter, still unit variance."""
    spectrum = torch.fft.rfft2(white, norm="ortho") * ops.noise_filter
    return torch.fft.irfft2(spectrum, s=white.shape[-2:], norm="ortho")


def deterministic_step(ops: OperatorBatch, x: torch.Tensor) -> torch.Tensor:
    """The noise-free part of a step: x + dt·O(x) or α·x + (1-α)·O(x), the step's conditional mean."""
    o = apply_operator(ops, x)
    return torch.where(ops.residual, x + ops.dt * o, ops.alpha * x + (1.0 - ops.alpha) * o)


def step(ops: OperatorBatch, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One stochastic step of every operator; ``noise`` is unit white noise shaped like x."""
    return deterministic_step(ops, x) + ops.noise_scale * smooth_noise(ops, noise)
