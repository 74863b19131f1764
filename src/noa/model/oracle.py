"""The oracle student: the CNO's own computation with learnable banks. A research ceiling.

Every CNO operator is cut from one set of weight banks (:mod:`noa.operators.weights`): T_0..T_3, mixed
by θ's weight-space coordinates c as ``(T_0 + Σ_j c_j·T_j) / sqrt(1 + |c|²)``, truncated to the
operator's channels, layers and central k×k taps, scaled by the gain (weights, not biases), run
with one of five activations and a tanh output (:mod:`noa.operators.cno`). This model keeps all
of that structure, read from θ exactly, and learns only the tensors: K banks (K ≥ 4; more is an
over-parameterisation) mixed by ``M·(1, c) / sqrt(1 + |c|²)`` with a learnable K×4 matrix M.
With the generator's own banks loaded (:meth:`OracleStudent.load_generator_banks`) it computes
O_θ(x) itself, so its skill on O is 1; trained from scratch it says how much of the CNO's
operators a perfectly shaped model learns per update, the ceiling every product model is
measured against.

It uses the generator's structure and truncation rules, which a product model must not (it
would be tied to this one generator): it is measured by the benchmarks and never offered by
``noa train``. Its output is f = O_θ(x) at unit scale, what a rule head turns into a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noa.operators.space import ACTIVATIONS, CNO_SPACE, ParameterSpace
from noa.operators.weights import (
    BIAS_STD,
    MAX_CHANNELS,
    MAX_KERNEL,
    MAX_LAYERS,
    N_BASIS,
    TENSORS,
    bank_tensors,
    tensor_shapes,
)
from noa.periodic import fourier_depthwise
from noa.seeding import generator

GENERATOR_BANKS = 1 + N_BASIS  # the CNO generator's banks T_0..T_3
OUTPUT_INIT_SCALE = 1e-2  # a near-zero output's banks start at this fraction of a unit normal
ACTIVATION_FNS = (torch.tanh, F.gelu, F.silu, torch.sin, torch.relu)  # in ACTIVATIONS' order
OUTPUT_TENSORS = ("w_out", "b_out")


@dataclass(frozen=True)
class OracleConfig:
    """The student's size and initialisation: ``banks`` K ≥ 4, ``near_zero_output`` starts the
    output banks at 1e-2 of their scale (f ≈ 0 at the start), ``seed`` draws the initial banks."""

    channels: int = 3
    banks: int = GENERATOR_BANKS
    near_zero_output: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.banks < GENERATOR_BANKS:
            raise ValueError(f"the oracle needs at least the generator's {GENERATOR_BANKS} banks; got {self.banks}")


@dataclass
class Structure:
    """What the oracle reads from a batch of θ: truncations, gain, activation and mixing input."""

    mix_input: Tensor  # [B, 4]: (1, c_1, c_2, c_3) / sqrt(1 + |c|²)
    channel_mask: Tensor  # [B, MAX_CHANNELS] float: the operator's first base_channels
    tap_mask: Tensor  # [B, MAX_KERNEL, MAX_KERNEL] float: its central k×k taps
    layer_active: Tensor  # [MAX_LAYERS, B, 1, 1] bool
    kernel: Tensor  # [B] float
    gain_in: Tensor  # [B] gain / sqrt(C)
    gain_hidden: Tensor  # [B] gain / sqrt(base_channels)
    activation_rows: list[tuple[int, Tensor]]  # (index into ACTIVATIONS, rows using it)
    layers: int  # the batch's largest n_layers


def read_structure(theta: Tensor, channels: int, space: ParameterSpace = CNO_SPACE) -> Structure:
    """θ decoded as the replay decodes it (:meth:`ParameterSpace.decode`), on θ's device."""
    hps = [space.decode(row.tolist()) for row in theta.detach().cpu()]
    dev = theta.device

    def column(name: str) -> Tensor:
        return torch.tensor([float(hp[name]) for hp in hps], dtype=torch.float32, device=dev)

    coords = torch.stack([column(f"weight_mix_{j + 1}") for j in range(N_BASIS)], dim=1)
    ones = torch.ones(len(hps), 1, device=dev)
    mix_input = torch.cat([ones, coords], dim=1) / torch.sqrt(1.0 + coords.pow(2).sum(dim=1, keepdim=True))
    ch, k, layers, gain = column("base_channels"), column("kernel_size"), column("n_layers"), column("weight_gain")
    channel_mask = (torch.arange(MAX_CHANNELS, device=dev)[None] < ch[:, None]).float()
    offset = (torch.arange(MAX_KERNEL, device=dev) - MAX_KERNEL // 2).abs()
    inside = offset[None] <= (k[:, None] // 2)  # [B, K]
    tap_mask = (inside[:, :, None] & inside[:, None, :]).float()
    layer_active = (torch.arange(MAX_LAYERS, device=dev)[:, None] < layers[None]).reshape(MAX_LAYERS, -1, 1, 1)
    ids = torch.tensor([ACTIVATIONS.index(hp["activation"]) for hp in hps], device=dev)
    activation_rows = [(a, (ids == a).nonzero().flatten()) for a in sorted(set(ids.tolist()))]
    return Structure(
        mix_input=mix_input,
        channel_mask=channel_mask,
        tap_mask=tap_mask,
        layer_active=layer_active,
        kernel=k,
        gain_in=gain / channels**0.5,
        gain_hidden=gain / ch.sqrt(),
        activation_rows=activation_rows,
        layers=int(layers.max()),
    )


class OracleStudent(nn.Module):
    """f(x, θ) = O_θ(x) computed from K learnable banks with the CNO generator's structure."""

    def __init__(self, config: OracleConfig, space: ParameterSpace = CNO_SPACE) -> None:
        super().__init__()
        self.config, self.space = config, space
        gen = generator(config.seed, "oracle-student-banks")
        banks = {}
        for name, shape in tensor_shapes(config.channels).items():
            value = torch.randn(config.banks, *shape, generator=gen)
            if config.near_zero_output and name in OUTPUT_TENSORS:
                value = value * OUTPUT_INIT_SCALE
            banks[name] = nn.Parameter(value)
        self.banks = nn.ParameterDict(banks)
        mixing = torch.zeros(config.banks, GENERATOR_BANKS)
        mixing[:GENERATOR_BANKS] = torch.eye(GENERATOR_BANKS)
        if config.banks > GENERATOR_BANKS:  # extra banks start as small random mixtures of the inputs
            mixing[GENERATOR_BANKS:] = 0.1 * torch.randn(config.banks - GENERATOR_BANKS, GENERATOR_BANKS, generator=gen)
        self.mixing = nn.Parameter(mixing)

    @torch.no_grad()
    def load_generator_banks(self) -> None:
        """Banks 0..3 set to the generator's own banks, the rest and their mixing to zero: the
        student then computes the CNO's O_θ exactly (up to float rounding)."""
        true = bank_tensors(self.config.channels)
        for name in TENSORS:
            self.banks[name].zero_()
            for j, tensors in enumerate(true):
                self.banks[name][j] = tensors[name]
        self.mixing.zero_()
        self.mixing[:GENERATOR_BANKS] = torch.eye(GENERATOR_BANKS)

    def mixed(self, s: Structure) -> dict[str, Tensor]:
        """Each tensor of each row's operator, truncated and scaled as the generator does."""
        coef = s.mix_input @ self.mixing.T  # [B, K]
        m = {name: torch.einsum("bk,k...->b...", coef, bank) for name, bank in self.banks.items()}
        cm = s.channel_mask
        return {
            "w_in": m["w_in"] * cm[:, :, None] * s.gain_in.view(-1, 1, 1),
            "b_in": m["b_in"] * cm * BIAS_STD,
            "depthwise": m["depthwise"]
            * cm[:, None, :, None, None]
            * s.tap_mask[:, None, None]
            / s.kernel.view(-1, 1, 1, 1, 1),
            "pointwise": m["pointwise"]
            * (cm[:, None, :, None] * cm[:, None, None, :])
            * s.gain_hidden.view(-1, 1, 1, 1),
            "b_hidden": m["b_hidden"] * cm[:, None] * BIAS_STD,
            "w_out": m["w_out"] * cm[:, None, :] * s.gain_hidden.view(-1, 1, 1),
            "b_out": m["b_out"] * BIAS_STD,
        }

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        """``[B, C, H, W]``, ``[B, P]`` -> f ``[B, C, H, W]``, the student's O_θ(x) at unit scale."""
        b, c, n, _ = x.shape
        s = read_structure(theta, c, self.space)
        w = self.mixed(s)
        h = torch.bmm(w["w_in"], x.reshape(b, c, n * n)) + w["b_in"][:, :, None]
        for layer in range(s.layers):
            spatial = fourier_depthwise(h.reshape(b, MAX_CHANNELS, n, n), w["depthwise"][:, layer])
            m = torch.bmm(w["pointwise"][:, layer], spatial.reshape(b, MAX_CHANNELS, n * n))
            m = m + w["b_hidden"][:, layer, :, None]
            new = _activate(m, s.activation_rows)
            h = torch.where(s.layer_active[layer], new, h)
        out = torch.bmm(w["w_out"], h) + w["b_out"][:, :, None]
        return torch.tanh(out).reshape(b, c, n, n)


def _activate(m: Tensor, rows: list[tuple[int, Tensor]]) -> Tensor:
    """Each row's own activation (rows grouped by activation, put back in place)."""
    if len(rows) == 1:
        return ACTIVATION_FNS[rows[0][0]](m)
    out = torch.empty_like(m)
    for index, picked in rows:
        out[picked] = ACTIVATION_FNS[index](m[picked])
    return out
