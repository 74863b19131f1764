"""The benchmarks' research candidates: models measured against the NOA, never built by `noa train`.

``benchmarks/learnability.py`` and ``benchmarks/long_curve.py`` train these on the family's
one-step map (g ≈ O_θ(x), the update rule applied outside the network), and
``benchmarks/theta_conditioning.py`` wraps the NOA in :class:`ThetaBlind`. They live here, beside
the product's models, so that the scripts only measure and every model is importable and tested
in one place. Each is initialised from the global RNG (a benchmark seeds it with
``torch.manual_seed`` before building one): their parameters, state-dict keys and order of
draws are those of the runs already recorded, so saved benchmark checkpoints keep loading.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noa.model.uafno import HEAD_INIT_SCALE, UAFNO, FiLM, UAFNOConfig
from noa.operators.space import CNO_SPACE
from noa.periodic import fourier_depthwise, periodic_pad

CHANNELS = 3  # the fields of every benchmark's CNO state
# The CNO's five activations, mixed per layer.
BASIS_ACTIVATIONS: tuple[Callable[[Tensor], Tensor], ...] = (torch.tanh, F.gelu, F.silu, torch.sin, torch.relu)


class ThetaFeatures(nn.Module):
    """Unit θ -> one-hot for choices and ints with few values, centred raw values otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes = [
            len(d.choices)
            if d.kind == "choice"
            else int(d.high - d.low + 1)
            if d.kind == "int" and d.high - d.low < 8
            else 0
            for d in CNO_SPACE.dims
        ]
        self.dim = sum(max(n, 1) for n in self.sizes)

    def forward(self, theta: Tensor) -> Tensor:
        parts = []
        for i, n in enumerate(self.sizes):
            u = theta[:, i]
            parts.append(F.one_hot((u * n).floor().clamp(0, n - 1).long(), n).float() if n else (2 * u - 1)[:, None])
        return torch.cat(parts, dim=1)


class HyperStack(nn.Module):
    """g(x, θ): a depthwise-separable CNN whose every weight is generated from θ (learnability's
    ``hyper``): θ-dependent mixtures of learned basis tensors, channel / tap / layer gates and an
    activation mixture, periodic depthwise convolutions done in Fourier space."""

    def __init__(
        self, channels: int = 3, hidden: int = 64, layers: int = 5, kernel: int = 7, n_basis: int = 4, embed: int = 128
    ) -> None:
        super().__init__()
        self.hidden, self.layers, self.kernel, self.n_basis = hidden, layers, kernel, n_basis
        self.features = ThetaFeatures()
        self.embed = nn.Sequential(nn.Linear(self.features.dim, embed), nn.GELU(), nn.Linear(embed, embed), nn.GELU())
        k2, acts = kernel * kernel, len(BASIS_ACTIVATIONS)
        self.w_in = nn.Parameter(torch.randn(n_basis, hidden, channels) / math.sqrt(channels))
        self.b_in = nn.Parameter(torch.zeros(n_basis, hidden))
        self.depthwise = nn.Parameter(torch.randn(layers, n_basis, hidden, k2) / kernel)
        self.pointwise = nn.Parameter(torch.randn(layers, n_basis, hidden, hidden) / math.sqrt(hidden))
        self.bias = nn.Parameter(torch.zeros(layers, n_basis, hidden))
        self.w_out = nn.Parameter(torch.randn(n_basis, channels, hidden) / math.sqrt(hidden))
        self.b_out = nn.Parameter(torch.zeros(n_basis, channels))
        self.mix = nn.Linear(embed, n_basis * (2 + 2 * layers))  # basis coefficients per tensor
        self.gates = nn.Linear(embed, layers * (hidden + k2 + acts + 1))
        with torch.no_grad():  # start at basis 0, ungated, an even activation mixture
            self.mix.weight.mul_(0.1)
            self.mix.bias.zero_()
            self.mix.bias.view(-1, n_basis)[:, 0] = 1.0
            self.gates.weight.mul_(0.1)
            self.gates.bias.zero_()

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        b, c, n, _ = x.shape
        hid, layers, k = self.hidden, self.layers, self.kernel
        e = self.embed(self.features(theta))
        a = self.mix(e).view(b, 2 + 2 * layers, self.n_basis)
        channel_gate, tap_gate, act_mix, layer_gate = (
            self.gates(e).view(b, layers, -1).split([hid, k * k, len(BASIS_ACTIVATIONS), 1], dim=2)
        )
        channel_gate, tap_gate = 2 * torch.sigmoid(channel_gate), 1 + tap_gate
        act_mix, layer_gate = torch.softmax(act_mix, dim=-1), torch.sigmoid(layer_gate + 2.0)
        h = torch.bmm(torch.einsum("bk,khc->bhc", a[:, 0], self.w_in), x.reshape(b, c, n * n))
        h = (h + torch.einsum("bk,kh->bh", a[:, 0], self.b_in)[:, :, None]).reshape(b, hid, n, n)
        for layer in range(layers):
            kernels = (
                torch.einsum("bk,khq->bhq", a[:, 1 + 2 * layer], self.depthwise[layer]) * tap_gate[:, layer, None, :]
            )
            spatial = fourier_depthwise(h, kernels.reshape(b, hid, k, k)).reshape(b, hid, n * n)
            m = torch.bmm(torch.einsum("bk,kij->bij", a[:, 2 + 2 * layer], self.pointwise[layer]), spatial)
            m = m + torch.einsum("bk,kh->bh", a[:, 2 + 2 * layer], self.bias[layer])[:, :, None]
            new = sum(act_mix[:, layer, j, None, None] * f(m) for j, f in enumerate(BASIS_ACTIVATIONS))
            gate = layer_gate[:, layer, :, None, None]
            h = gate * (new * channel_gate[:, layer, :, None]).reshape(b, hid, n, n) + (1 - gate) * h
        out = torch.bmm(torch.einsum("bk,kch->bch", a[:, -1], self.w_out), h.reshape(b, hid, n * n))
        return torch.tanh(out + torch.einsum("bk,kc->bc", a[:, -1], self.b_out)[:, :, None]).reshape(b, c, n, n)


class UAFNOBranch(nn.Module):
    """The NOA at the quickstart's U-AFNO widths; g = its residual branch f(x, θ). With
    ``theta_box`` (learnability's ``--theta-box``: the operator family's, as `noa train` sets it)
    the θ embedding reads θ rescaled to that box; without it, the whole space's unit coordinates.
    ``backbone`` and ``generated`` (the stack's sizes and one-hot dimensions) are `noa train`'s
    model fields."""

    def __init__(
        self,
        theta_box: list[list[float]] | None = None,
        backbone: str = "uafno",
        generated: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        config = UAFNOConfig(
            base_channels=16,
            encoder_levels=2,
            modes=8,
            afno_blocks=2,
            theta_box=theta_box,
            backbone=backbone,
            **(generated or {}),
        )
        self.net = UAFNO(config)

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        return self.net(x, theta) - x


class WideUAFNOBranch(nn.Module):
    """long_curve's ``uafno4x``: :class:`UAFNOBranch` at base_channels 32, every convolution 4×
    the weights, the same depth and modes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UAFNO(UAFNOConfig(base_channels=32, encoder_levels=2, modes=8, afno_blocks=2))

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        return self.net(x, theta) - x


class LocalBlock(nn.Module):
    """ConvNeXt-style, at full resolution: periodic k×k depthwise conv, GroupNorm, FiLM from θ,
    1×1 expansion, GELU, 1×1 projection, residual: the CNO's own layer shape, θ-modulated."""

    def __init__(self, width: int, embed_dim: int, kernel: int, ratio: int = 2) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.depthwise = nn.Conv2d(width, width, kernel, groups=width)
        self.norm = nn.GroupNorm(1, width)
        self.film = FiLM(embed_dim, width)
        self.expand = nn.Conv2d(width, ratio * width, 1)
        self.project = nn.Conv2d(ratio * width, width, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)
        z = self.norm(self.depthwise(periodic_pad(h, self.pad, self.pad)))
        z = z * scale[:, :, None, None] + shift[:, :, None, None]
        return h + self.project(F.gelu(self.expand(z)))


class LocalUAFNO(nn.Module):
    """long_curve's ``uafno-local``: g = f_U-AFNO(x, θ) + head(blocks(lift(x))), the quickstart
    U-AFNO plus a full-resolution local path; its head starts near 0, so training starts from the
    U-AFNO alone."""

    def __init__(self, width: int = 32, blocks: int = 4, kernel: int = 7) -> None:
        super().__init__()
        self.uafno = UAFNOBranch()
        embed_dim = 4 * width
        self.embed = nn.Sequential(
            nn.Linear(CNO_SPACE.size, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim), nn.GELU()
        )
        self.lift = nn.Conv2d(CHANNELS, width, 1)
        self.blocks = nn.ModuleList(LocalBlock(width, embed_dim, kernel) for _ in range(blocks))
        self.head = nn.Conv2d(width, CHANNELS, 1)
        with torch.no_grad():
            self.head.weight.mul_(HEAD_INIT_SCALE)
            nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]  # a Conv2d built with bias=True has one

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        emb = self.embed(2.0 * theta - 1.0)
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.uafno(x, theta) + self.head(h)


class ThetaBlind(nn.Module):
    """theta_conditioning's blind NOA: the wrapped U-AFNO with θ replaced by zeros in every call
    (same parameters), so a run measures what θ-conditioning buys."""

    def __init__(self, model: UAFNO) -> None:
        super().__init__()
        self.model = model
        self.bottleneck_channels = model.bottleneck_channels

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        return self.model(x, torch.zeros_like(params))

    def step(self, x: Tensor, params: Tensor, return_bottleneck: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        return self.model.step(x, torch.zeros_like(params), return_bottleneck=return_bottleneck)
