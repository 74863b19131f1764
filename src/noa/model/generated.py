"""A θ-generated operator path: a full-resolution conv stack whose weights θ mixes from learned banks.

FiLM changes a fixed network's per-channel scale and shift after a normalisation that removes
amplitude; an operator family whose members are one set of weights mixed differently and scaled
by a gain lies outside what it can express (issue 36). This path computes, per sample,

    h_0     = γ ⊙ (s_0·W_in(θ)·x + b_in(θ))
    m_l     = s_{l+1}·P_l(θ)·(D_l(θ) ⊛ h_l) + b_l(θ)                      for l < layers
    h_{l+1} = h_l + λ_l(θ)·(γ ⊙ Σ_a π_a(θ)·act_a(m_l) - h_l)
    f       = ρ(θ)·tanh(z) + (1 - ρ(θ))·z,   z = s_out·W_out(θ)·h_L + b_out(θ)

with depthwise circular k×k kernels D_l (the fields live on a torus) and pointwise mixing P_l.
Every weight tensor is a θ-dependent mixture ``Σ_k a_k(θ)·W_k`` of K learned banks; the biases
have their own coefficients, so a gain-like scale ``s`` (1 at init) can scale the weights alone.
Per θ, gates in (0, 1) choose channels (γ, after the lift and after every layer), kernel taps
(multiplying D_l) and layers (λ_l = 0 keeps h as it is), and a softmax mixes the activations.
All of it comes from one embedding of θ: its box-rescaled unit coordinates (as the U-AFNO's
embedding reads them) beside one-hot codes of the dimensions ``discrete`` names, which a gate can
turn into an exact choice. Nothing here knows how any generator builds its operators: the banks
start random and the shape (channels, layers, kernel) is only an upper bound.

The output starts near zero (small projection banks), so a branch added beside a trained or
fresh U-AFNO changes its first steps by little.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noa.operators.space import ParameterSpace
from noa.periodic import fourier_depthwise

# Generic nonlinearities the activation mixture chooses among (a softmax over them per θ).
ACTIVATIONS: tuple[tuple[str, Callable[[Tensor], Tensor]], ...] = (
    ("tanh", torch.tanh),
    ("gelu", F.gelu),
    ("silu", F.silu),
    ("sin", torch.sin),
    ("relu", torch.relu),
)
EMBED_DIM = 128  # width of the θ embedding that every coefficient is read from
COEFF_INIT_SCALE = 0.1  # the coefficients start near their biases, yet already depend on θ
GATE_INIT_LOGIT = 3.0  # gates start open (sigmoid(3) ≈ 0.95): every channel, tap and layer in use
BIAS_INIT_STD = 0.1  # bias banks start small and random, so their coefficients get gradients
OUTPUT_INIT_SCALE = 1e-2  # f starts near 0 (the projection banks are this much smaller)


@dataclass(frozen=True)
class GeneratedShape:
    """Upper bounds of the generated stack: hidden channels, layers, kernel width, banks."""

    channels: int
    layers: int
    kernel: int
    banks: int


class GeneratedStack(nn.Module):
    """``f(x, θ)`` at full resolution from θ-mixed weight banks (see the module docstring).

    ``discrete`` lists ``[θ index, options]`` pairs read as one-hot codes: option
    ``min(floor(u·options), options - 1)`` of unit coordinate u, the decoding of a choice or
    integer dimension.
    """

    def __init__(self, fields: int, param_dim: int, shape: GeneratedShape, discrete: list[list[int]]) -> None:
        super().__init__()
        self.fields, self.shape, self.discrete = fields, shape, [(int(i), int(n)) for i, n in discrete]
        ch, layers, k, banks = shape.channels, shape.layers, shape.kernel, shape.banks
        code_dim = sum(n for _, n in self.discrete)
        self.embed = nn.Sequential(
            nn.Linear(param_dim + code_dim, EMBED_DIM), nn.GELU(), nn.Linear(EMBED_DIM, EMBED_DIM), nn.GELU()
        )
        # Every per-θ coefficient, by name, and how many (forward says what each becomes).
        self.sizes = {
            "lift": banks,
            "lift_bias": banks,
            "depthwise": layers * banks,
            "pointwise": layers * banks,
            "bias": layers * banks,
            "out": banks,
            "out_bias": banks,
            "scale": layers + 2,
            "layer_gate": layers,
            "channel_gate": ch,
            "tap_gate": k * k,
            "activation": len(ACTIVATIONS),
            "output_tanh": 1,
        }
        self.coefficients = nn.Linear(EMBED_DIM, sum(self.sizes.values()))
        self.w_in = nn.Parameter(torch.randn(banks, ch, fields) / math.sqrt(fields))
        self.b_in = nn.Parameter(BIAS_INIT_STD * torch.randn(banks, ch))
        self.depthwise = nn.Parameter(torch.randn(layers, banks, ch, k, k) / k)
        self.pointwise = nn.Parameter(torch.randn(layers, banks, ch, ch) / math.sqrt(ch))
        self.b_hidden = nn.Parameter(BIAS_INIT_STD * torch.randn(layers, banks, ch))
        self.w_out = nn.Parameter(OUTPUT_INIT_SCALE * torch.randn(banks, fields, ch) / math.sqrt(ch))
        self.b_out = nn.Parameter(torch.zeros(banks, fields))
        self._init_coefficients()

    def _init_coefficients(self) -> None:
        """Bank coefficients start as a random mixture of unit norm (each bank its own share),
        scales at 1, gates open, the activation mixture uniform, the output half tanh."""
        banks = self.shape.banks
        bias = torch.zeros(self.coefficients.out_features)
        offset = 0
        for name, size in self.sizes.items():
            part = bias[offset : offset + size]
            if name in ("lift", "lift_bias", "depthwise", "pointwise", "bias", "out", "out_bias"):
                part.copy_(torch.randn(size) / math.sqrt(banks))
            elif name.endswith("_gate"):
                part.fill_(GATE_INIT_LOGIT)
            offset += size
        with torch.no_grad():
            self.coefficients.weight.mul_(COEFF_INIT_SCALE)
            self.coefficients.bias.copy_(bias)

    def codes(self, params: Tensor) -> Tensor:
        """One-hot codes ``[B, Σ options]`` of the discrete dimensions (empty without any)."""
        # A comparison with the option indices, not F.one_hot: no value check, so no host sync
        # (CUDA graphs), and the same arithmetic on every device.
        parts = [
            (
                (params[:, i, None].clamp(0.0, 1.0) * n).floor().clamp(max=n - 1)
                == torch.arange(n, device=params.device)
            ).to(params.dtype)
            for i, n in self.discrete
        ]
        return torch.cat(parts, dim=1) if parts else params.new_zeros(params.shape[0], 0)

    def forward(self, x: Tensor, scaled_theta: Tensor, params: Tensor) -> Tensor:
        """``[B, C, H, W]``, θ rescaled to its box ``[B, P]``, unit θ ``[B, P]`` -> f ``[B, C, H, W]``."""
        b, c, height, width = x.shape
        ch, layers, k, banks = self.shape.channels, self.shape.layers, self.shape.kernel, self.shape.banks
        emb = self.embed(torch.cat([scaled_theta, self.codes(params)], dim=1))
        raw = dict(zip(self.sizes, self.coefficients(emb).split(list(self.sizes.values()), dim=1)))
        scale = 1.0 + raw["scale"]
        channel_gate = torch.sigmoid(raw["channel_gate"])[:, :, None]
        taps = torch.sigmoid(raw["tap_gate"]).reshape(b, 1, k, k)
        layer_gate = torch.sigmoid(raw["layer_gate"])
        mixture = torch.softmax(raw["activation"], dim=1)
        per_layer = {name: raw[name].reshape(b, layers, banks) for name in ("depthwise", "pointwise", "bias")}

        w_in = torch.einsum("bk,kci->bci", raw["lift"], self.w_in) * scale[:, 0, None, None]
        h = torch.bmm(w_in, x.reshape(b, c, height * width)) + (raw["lift_bias"] @ self.b_in)[:, :, None]
        h = h * channel_gate
        for layer in range(layers):
            kernels = torch.einsum("bk,kcij->bcij", per_layer["depthwise"][:, layer], self.depthwise[layer]) * taps
            spatial = fourier_depthwise(h.reshape(b, ch, height, width), kernels).reshape(b, ch, -1)
            mixing = torch.einsum("bk,kcd->bcd", per_layer["pointwise"][:, layer], self.pointwise[layer])
            bias = per_layer["bias"][:, layer] @ self.b_hidden[layer]
            m = torch.bmm(mixing * scale[:, layer + 1, None, None], spatial) + bias[:, :, None]
            new = sum(mixture[:, a, None, None] * act(m) for a, (_, act) in enumerate(ACTIVATIONS))
            h = h + layer_gate[:, layer, None, None] * (new * channel_gate - h)
        w_out = torch.einsum("bk,kci->bci", raw["out"], self.w_out) * scale[:, -1, None, None]
        z = torch.bmm(w_out, h) + (raw["out_bias"] @ self.b_out)[:, :, None]
        rho = torch.sigmoid(raw["output_tanh"])[:, :, None]
        return (rho * torch.tanh(z) + (1.0 - rho) * z).reshape(b, c, height, width)


# The parameter-space dimensions that bound a generated stack's shape, when a space has them.
SHAPE_DIMENSIONS = {"channels": "base_channels", "layers": "n_layers", "kernel": "kernel_size"}


def largest_shape(space: ParameterSpace, box: list[list[float]]) -> dict[str, int]:
    """The largest hidden channels, layers and kernel width of the operators in ``box`` (unit
    [low, high] per dimension of ``space``): a generated stack of this size holds every one of
    them. A space without such a dimension leaves its size out (the config's default stays)."""
    shape = {}
    for key, name in SHAPE_DIMENSIONS.items():
        if name not in space.names:
            continue
        i = space.position(name)
        dim, (low, high) = space.dims[i], box[i]
        if dim.kind == "choice":
            inside = [dim.unit(c) for c in dim.choices if low <= dim.unit(c) <= high]
            shape[key] = max(int(dim.physical(u)) for u in inside)
        elif dim.kind == "int":
            shape[key] = int(dim.physical(high))
    return shape


def discrete_dimensions(space: ParameterSpace) -> list[list[int]]:
    """``[θ index, options]`` of every choice and integer dimension of ``space``: what the
    generated stack reads as one-hot codes."""
    out = []
    for i, dim in enumerate(space.dims):
        if dim.kind == "choice":
            out.append([i, len(dim.choices)])
        elif dim.kind == "int":
            out.append([i, int(dim.high) - int(dim.low) + 1])
    return out


def family_fields(space: ParameterSpace, box: list[list[float]]) -> dict[str, Any]:
    """The model-config fields of a generated stack for the operators in ``box``: its sizes
    (:func:`largest_shape`) and the dimensions it reads one-hot (:func:`discrete_dimensions`)."""
    shape = largest_shape(space, box)
    return {f"generated_{k}": v for k, v in shape.items()} | {"theta_discrete": discrete_dimensions(space)}
