"""The stochastic convolutional operator (CNO) family.

One operator, for one θ and one operator seed, maps a field x ∈ R^{C×H×W} (periodic grid) to

    O(x) = tanh(W_out · h_L + b_out),   h_0 = W_in · x + b_in,
    h_{i+1} = act(P_i · (D_i ⊛ h_i) + b_i)      for i < n_layers,

with 1×1 lift/projection (W_in, W_out), depthwise circular k×k convolutions D_i and pointwise
mixing P_i (a depthwise-separable CNN). A step is

    residual:  x' = x + dt·O(x) + σ·ξ        convex:  x' = α·x + (1-α)·O(x) + σ·ξ

where ξ is unit-variance Gaussian noise smoothed over ``noise_correlation`` of the domain and
drawn from a counter-based stream (:mod:`noa.operators.noise`). ``tanh`` bounds O, so no
operator of the family can blow up faster than linearly in time.

Batching heterogeneous operators: every operator is embedded in one padded shape
(``MAX_CHANNELS`` hidden channels, ``MAX_KERNEL`` taps, ``MAX_LAYERS`` blocks): unused
channels and taps hold zero weights (and act(0) = 0 for every activation, so padded channels
stay exactly zero), and blocks beyond ``n_layers`` are skipped per sample with a mask. A batch
of B operators then costs one grouped convolution and one batched matmul per block and step,
and a sample's arithmetic has the same shape whatever batch it sits in. The padding is part of
the operator's definition: replay always runs it, so the ground truth is one well-defined
computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from noa.operators.space import ACTIVATIONS, CNO_SPACE, UPDATE_POLICIES, ParameterSpace
from noa.seeding import derive_seed, generator

MAX_CHANNELS = 64
MAX_KERNEL = 7
MAX_LAYERS = 5


@dataclass
class OperatorBatch:
    """Padded weights and per-sample scalars of B operators, on one device."""

    w_in: torch.Tensor  # [B, MAX_CHANNELS, C]
    b_in: torch.Tensor  # [B, MAX_CHANNELS, 1]
    depthwise: torch.Tensor  # [MAX_LAYERS, B * MAX_CHANNELS, 1, K, K]
    pointwise: torch.Tensor  # [MAX_LAYERS, B, MAX_CHANNELS, MAX_CHANNELS]
    b_hidden: torch.Tensor  # [MAX_LAYERS, B, MAX_CHANNELS, 1]
    w_out: torch.Tensor  # [B, C, MAX_CHANNELS]
    b_out: torch.Tensor  # [B, C, 1]
    layer_active: torch.Tensor  # [MAX_LAYERS, B, 1, 1] bool
    activation_ids: list[int]  # per sample, index into ACTIVATIONS (host)
    layer_counts: list[int]  # per sample n_layers (host)
    residual: torch.Tensor  # [B, 1, 1, 1] bool: residual (True) or convex policy
    dt: torch.Tensor  # [B, 1, 1, 1]
    alpha: torch.Tensor  # [B, 1, 1, 1]
    noise_scale: torch.Tensor  # [B, 1, 1, 1]
    noise_filter: torch.Tensor  # [B, 1, H, W//2+1] real, unit-variance smoothing in Fourier space
    noise_keys: list[int]

    def __post_init__(self) -> None:
        # Host-side plans, fixed per batch, so the time loop never inspects device values.
        # Runs of consecutive rows sharing an activation (replay sorts rows so there are few).
        self.activation_runs: list[tuple[str, int, int]] = []
        for i, a in enumerate(self.activation_ids):
            if self.activation_runs and self.activation_runs[-1][0] == ACTIVATIONS[a]:
                name, start, _ = self.activation_runs[-1]
                self.activation_runs[-1] = (name, start, i + 1)
            else:
                self.activation_runs.append((ACTIVATIONS[a], i, i + 1))
        self.layer_plan = [
            "all" if min(self.layer_counts) > layer else "none" if max(self.layer_counts) <= layer else "mixed"
            for layer in range(MAX_LAYERS)
        ]

    @property
    def size(self) -> int:
        return self.w_in.shape[0]

    def repeat(self, m: int) -> "OperatorBatch":
        """Each operator repeated m times in a row (realizations share weights, not noise)."""
        def rep(t: torch.Tensor, dim: int) -> torch.Tensor:
            return t.repeat_interleave(m, dim=dim)

        b = self.size
        depthwise = self.depthwise.reshape(MAX_LAYERS, b, MAX_CHANNELS, 1, MAX_KERNEL, MAX_KERNEL)
        return OperatorBatch(
            w_in=rep(self.w_in, 0),
            b_in=rep(self.b_in, 0),
            depthwise=rep(depthwise, 1).reshape(MAX_LAYERS, b * m * MAX_CHANNELS, 1, MAX_KERNEL, MAX_KERNEL),
            pointwise=rep(self.pointwise, 1),
            b_hidden=rep(self.b_hidden, 1),
            w_out=rep(self.w_out, 0),
            b_out=rep(self.b_out, 0),
            layer_active=rep(self.layer_active, 1),
            activation_ids=[a for a in self.activation_ids for _ in range(m)],
            layer_counts=[n for n in self.layer_counts for _ in range(m)],
            residual=rep(self.residual, 0),
            dt=rep(self.dt, 0),
            alpha=rep(self.alpha, 0),
            noise_scale=rep(self.noise_scale, 0),
            noise_filter=rep(self.noise_filter, 0),
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


def _draw_weights(hp: dict[str, Any], channels: int, seed: int) -> dict[str, torch.Tensor]:
    """This operator's weights at their true sizes, drawn from its own seed (on CPU)."""
    gen = generator(seed, "cno-weights")
    ch, k, layers = hp["base_channels"], int(hp["kernel_size"]), hp["n_layers"]
    gain = hp["weight_gain"]

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    return {
        "w_in": normal(ch, channels, std=gain / channels**0.5),
        "b_in": normal(ch, std=0.1),
        "depthwise": normal(layers, ch, k, k, std=1.0 / k),
        "pointwise": normal(layers, ch, ch, std=gain / ch**0.5),
        "b_hidden": normal(layers, ch, std=0.1),
        "w_out": normal(channels, ch, std=gain / ch**0.5),
        "b_out": normal(channels, std=0.1),
    }


def build_operators(
    params: torch.Tensor,
    seeds: list[int],
    channels: int,
    grid: int,
    device: torch.device | str = "cpu",
    space: ParameterSpace = CNO_SPACE,
) -> OperatorBatch:
    """The padded weights of B operators from unit θ rows [B, P] and operator seeds."""
    b = params.shape[0]
    c, K = channels, MAX_KERNEL
    w_in = torch.zeros(b, MAX_CHANNELS, c)
    b_in = torch.zeros(b, MAX_CHANNELS, 1)
    depthwise = torch.zeros(MAX_LAYERS, b, MAX_CHANNELS, K, K)
    pointwise = torch.zeros(MAX_LAYERS, b, MAX_CHANNELS, MAX_CHANNELS)
    b_hidden = torch.zeros(MAX_LAYERS, b, MAX_CHANNELS, 1)
    w_out = torch.zeros(b, c, MAX_CHANNELS)
    b_out = torch.zeros(b, c, 1)
    layer_active = torch.zeros(MAX_LAYERS, b, 1, 1, dtype=torch.bool)
    scalars = {name: torch.zeros(b, 1, 1, 1) for name in ("dt", "alpha", "noise_scale")}
    residual = torch.zeros(b, 1, 1, 1, dtype=torch.bool)
    activation_ids: list[int] = []
    layer_counts: list[int] = []
    filters = torch.zeros(b, 1, grid, grid // 2 + 1)
    for i in range(b):
        hp = space.decode(params[i].tolist())
        w = _draw_weights(hp, c, int(seeds[i]))
        ch, k, layers = hp["base_channels"], int(hp["kernel_size"]), hp["n_layers"]
        off = (K - k) // 2
        w_in[i, :ch] = w["w_in"]
        b_in[i, :ch, 0] = w["b_in"]
        depthwise[:layers, i, :ch, off : off + k, off : off + k] = w["depthwise"]
        pointwise[:layers, i, :ch, :ch] = w["pointwise"]
        b_hidden[:layers, i, :ch, 0] = w["b_hidden"]
        w_out[i, :, :ch] = w["w_out"]
        b_out[i, :, 0] = w["b_out"]
        layer_active[:layers, i] = True
        activation_ids.append(ACTIVATIONS.index(hp["activation"]))
        layer_counts.append(layers)
        residual[i] = hp["update_policy"] == UPDATE_POLICIES[0]
        for name in scalars:
            scalars[name][i] = hp[name]
        filters[i, 0] = _noise_filter(hp["noise_correlation"], grid)
    dev = torch.device(device)
    return OperatorBatch(
        w_in=w_in.to(dev),
        b_in=b_in.to(dev),
        depthwise=depthwise.reshape(MAX_LAYERS, b * MAX_CHANNELS, 1, K, K).to(dev),
        pointwise=pointwise.to(dev),
        b_hidden=b_hidden.to(dev),
        w_out=w_out.to(dev),
        b_out=b_out.to(dev),
        layer_active=layer_active.to(dev),
        activation_ids=activation_ids,
        layer_counts=layer_counts,
        residual=residual.to(dev),
        dt=scalars["dt"].to(dev),
        alpha=scalars["alpha"].to(dev),
        noise_scale=scalars["noise_scale"].to(dev),
        noise_filter=filters.to(dev),
        noise_keys=[derive_seed(int(s), "cno-noise") for s in seeds],
    )


_ACTIVATION_FNS = {"tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu, "sin": torch.sin, "relu": torch.relu}


def _activate(h: torch.Tensor, ops: OperatorBatch) -> torch.Tensor:
    """Per-sample activation: each run of rows gets its own function (elementwise, so a
    sample's values never depend on its neighbours)."""
    if len(ops.activation_runs) == 1:
        return _ACTIVATION_FNS[ops.activation_runs[0][0]](h)
    return torch.cat([_ACTIVATION_FNS[name](h[start:end]) for name, start, end in ops.activation_runs])


def apply_operator(ops: OperatorBatch, x: torch.Tensor) -> torch.Tensor:
    """O(x) for a batch of states x [B, C, H, W] (one operator per row)."""
    b, c, hgt, wid = x.shape
    pad = MAX_KERNEL // 2
    h = torch.bmm(ops.w_in, x.reshape(b, c, hgt * wid)) + ops.b_in  # [B, Ch, HW]
    for layer, plan in enumerate(ops.layer_plan):
        if plan == "none":
            break
        grid = F.pad(h.reshape(1, b * MAX_CHANNELS, hgt, wid), (pad, pad, pad, pad), mode="circular")
        spatial = F.conv2d(grid, ops.depthwise[layer], groups=b * MAX_CHANNELS)
        mixed = torch.bmm(ops.pointwise[layer], spatial.reshape(b, MAX_CHANNELS, hgt * wid)) + ops.b_hidden[layer]
        new = _activate(mixed, ops)
        h = new if plan == "all" else torch.where(ops.layer_active[layer], new, h)
    out = torch.bmm(ops.w_out, h) + ops.b_out
    return torch.tanh(out).reshape(b, c, hgt, wid)


def smooth_noise(ops: OperatorBatch, white: torch.Tensor) -> torch.Tensor:
    """White noise [B, C, H, W] smoothed by each sample's filter, still unit variance."""
    spectrum = torch.fft.rfft2(white, norm="ortho") * ops.noise_filter
    return torch.fft.irfft2(spectrum, s=white.shape[-2:], norm="ortho")


def step(ops: OperatorBatch, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One stochastic step of every operator; ``noise`` is unit white noise shaped like x."""
    o = apply_operator(ops, x)
    deterministic = torch.where(ops.residual, x + ops.dt * o, ops.alpha * x + (1.0 - ops.alpha) * o)
    return deterministic + ops.noise_scale * smooth_noise(ops, noise)
