"""The CNO generator's weight banks: one set of tensors from which θ alone picks an operator's weights.

The guide's NOA sees ``(IC, θ)``, so θ must identify the operator. Every operator's weights
are therefore cut from one set of *weight banks*, drawn once from the banks' seed at the
largest operator shape of the whole parameter space (``MAX_CHANNELS`` hidden channels,
``MAX_LAYERS`` blocks, ``MAX_KERNEL`` taps), in ``1 + N_BASIS`` independent copies (a base
bank T_0 and basis banks T_1..T_N):

- continuous weight-space coordinates c = (weight_mix_1..N) of θ combine them,
  ``T(c) = (T_0 + Σ_j c_j·T_j) / sqrt(1 + Σ_j c_j²)``: a smooth function of c whose entries keep
  unit variance at every c, so every operator is a typical random network and opposite corners
  (c_j = ±1) are uncorrelated operators;
- the discrete dimensions are *truncations* of the combined tensors: an operator with
  ``base_channels`` = c uses the first c hidden channels, ``n_layers`` = L the first L blocks and
  ``kernel_size`` = k the central k×k taps. Smaller operators are nested in larger ones, so
  operators share structure across every discrete dimension;
- ``weight_gain`` scales the lift, mixing and projection matrices (fan-in normalised at the
  operator's own size, so truncation does not change a layer's gain).

The noise stream is not part of this: it keeps its own per-sample key
(:mod:`noa.operators.noise`), so "another draw of the same θ" differs only by noise.

Everything here is elementwise arithmetic on CPU tensors in a fixed order, so an operator's
weights are bit-identical whichever batch, dataset or process builds them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from noa.seeding import generator

MAX_LAYERS = 5
MAX_CHANNELS = 64
MAX_KERNEL = 7
N_BASIS = 3
BIAS_STD = 0.1
# The order in which the bank tensors are drawn; changing it changes every operator (bump the version).
TENSORS = ("w_in", "b_in", "depthwise", "pointwise", "b_hidden", "w_out", "b_out")


@dataclass(frozen=True)
class WeightBanks:
    """The banks' definition, which a dataset records (its ``cno_family`` attribute, as JSON with
    these field names) so that its replay can be checked to use this code's banks."""

    name: str = "nested-cno"
    version: int = 2
    seed: int = 20261126
    n_basis: int = N_BASIS
    max_channels: int = MAX_CHANNELS
    max_layers: int = MAX_LAYERS
    max_kernel: int = MAX_KERNEL

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


BANKS = WeightBanks()


def tensor_shapes(channels: int) -> dict[str, tuple[int, ...]]:
    """Each bank tensor's shape at the largest operator sizes, for C = ``channels`` fields."""
    ch, layers, k = MAX_CHANNELS, MAX_LAYERS, MAX_KERNEL
    return {
        "w_in": (ch, channels),
        "b_in": (ch,),
        "depthwise": (layers, ch, k, k),
        "pointwise": (layers, ch, ch),
        "b_hidden": (layers, ch),
        "w_out": (channels, ch),
        "b_out": (channels,),
    }


@lru_cache(maxsize=8)
def bank_tensors(channels: int, seed: int = BANKS.seed) -> tuple[dict[str, torch.Tensor], ...]:
    """The banks T_0..T_N (unit normals, CPU, float32) for C = ``channels`` fields.

    Cached: they are a constant of the code. Callers must not modify them in place.
    """
    out = []
    for j in range(1 + N_BASIS):
        gen = generator(seed, "cno-family", channels, j)  # the key the banks were drawn with: keep it
        out.append(
            {
                name: torch.randn(*shape, generator=gen, dtype=torch.float32)
                for name, shape in tensor_shapes(channels).items()
            }
        )
    return tuple(out)


def mix_coordinates(hp: dict[str, Any]) -> list[float]:
    """The weight-space coordinates c_1..c_N of a decoded θ."""
    return [float(hp[f"weight_mix_{j + 1}"]) for j in range(N_BASIS)]


def operator_weights(hp: dict[str, Any], channels: int) -> dict[str, torch.Tensor]:
    """The weights of the operator with decoded θ ``hp``, at its own sizes (CPU, float32)."""
    tensors = bank_tensors(channels)
    coords = mix_coordinates(hp)
    norm = (1.0 + sum(c * c for c in coords)) ** 0.5
    mixed: dict[str, torch.Tensor] = {}
    for name in TENSORS:
        value = tensors[0][name].clone()
        for c, basis in zip(coords, tensors[1:]):
            value = value + c * basis[name]
        mixed[name] = value / norm
    ch, k, layers, gain = (
        int(hp["base_channels"]),
        int(hp["kernel_size"]),
        int(hp["n_layers"]),
        float(hp["weight_gain"]),
    )
    lo = (MAX_KERNEL - k) // 2
    return {
        "w_in": mixed["w_in"][:ch] * (gain / channels**0.5),
        "b_in": mixed["b_in"][:ch] * BIAS_STD,
        "depthwise": mixed["depthwise"][:layers, :ch, lo : lo + k, lo : lo + k] * (1.0 / k),
        "pointwise": mixed["pointwise"][:layers, :ch, :ch] * (gain / ch**0.5),
        "b_hidden": mixed["b_hidden"][:layers, :ch] * BIAS_STD,
        "w_out": mixed["w_out"][:, :ch] * (gain / ch**0.5),
        "b_out": mixed["b_out"] * BIAS_STD,
    }
