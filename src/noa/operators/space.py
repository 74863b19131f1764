"""The CNO parameter space: one declaration maps θ ∈ [0, 1]^P to operator hyper-parameters.

Datasets store θ in unit coordinates (what a Sobol sampler draws and what the NOA is
conditioned on); this module is the only place that turns unit values into physical ones, so
the dataset file, the replay and the reports can never disagree about what θ means.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from noa.errors import NoaError

KINDS = ("int", "float", "log-float", "choice")


@dataclass(frozen=True)
class Dimension:
    """One axis of the parameter space.

    ``low``/``high`` bound ``int``/``float``/``log-float`` kinds; ``choices`` lists the options
    of a ``choice`` kind. Unit value u maps to: int -> round(low + u·(high - low + 1) - 0.5)
    clamped (each integer gets an equal share of [0, 1]); float -> low + u·(high - low);
    log-float -> low·(high/low)^u; choice -> choices[min(floor(u·n), n - 1)].
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dimension {self.name!r}: unknown kind {self.kind!r}")
        if self.kind == "choice" and len(self.choices) < 2:
            raise ValueError(f"dimension {self.name!r}: a choice needs at least two options")
        if self.kind == "log-float" and not 0 < self.low < self.high:
            raise ValueError(f"dimension {self.name!r}: log-float needs 0 < low < high")

    def value(self, unit: float) -> Any:
        """The physical value of unit coordinate ``unit`` (clamped to [0, 1])."""
        u = min(max(float(unit), 0.0), 1.0)
        if self.kind == "int":
            lo, hi = int(self.low), int(self.high)
            return min(max(int(math.floor(lo + u * (hi - lo + 1))), lo), hi)
        if self.kind == "float":
            return self.low + u * (self.high - self.low)
        if self.kind == "log-float":
            return self.low * (self.high / self.low) ** u
        n = len(self.choices)
        return self.choices[min(int(math.floor(u * n)), n - 1)]

    def index(self, unit: float) -> int:
        """For a choice: the index of the chosen option."""
        return self.choices.index(self.value(unit))


@dataclass(frozen=True)
class ParameterSpace:
    dims: tuple[Dimension, ...]

    @property
    def size(self) -> int:
        return len(self.dims)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def position(self, name: str) -> int:
        return self.names.index(name)

    def decode(self, unit_row: Sequence[float] | torch.Tensor) -> dict[str, Any]:
        """Physical values of one θ row, keyed by dimension name."""
        row = [float(v) for v in unit_row]
        if len(row) != self.size:
            raise NoaError(f"θ has {len(row)} values but the parameter space has {self.size} ({', '.join(self.names)})")
        return {d.name: d.value(u) for d, u in zip(self.dims, row)}

    def to_json(self) -> str:
        return json.dumps([asdict(d) for d in self.dims])

    @classmethod
    def from_json(cls, text: str) -> "ParameterSpace":
        try:
            items = json.loads(text)
            return cls(tuple(Dimension(**{**item, "choices": tuple(item.get("choices", ()))}) for item in items))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise NoaError(f"the stored parameter space is not valid: {err}") from err


ACTIVATIONS = ("tanh", "gelu", "silu", "sin", "relu")
UPDATE_POLICIES = ("residual", "convex")

CNO_SPACE = ParameterSpace(
    (
        Dimension("n_layers", "int", 2, 5, description="spatial conv blocks in O"),
        Dimension("base_channels", "int", 16, 64, description="hidden channels of O"),
        Dimension("kernel_size", "choice", choices=("3", "5", "7"), description="depthwise kernel width"),
        Dimension("activation", "choice", choices=ACTIVATIONS, description="nonlinearity between blocks"),
        Dimension("noise_scale", "log-float", 1e-5, 1.0, description="std of the additive noise per step"),
        Dimension("noise_correlation", "float", 0.0, 0.2, description="noise correlation length (fraction of domain)"),
        Dimension("update_policy", "choice", choices=UPDATE_POLICIES, description="x+dt·O(x) or α·x+(1-α)·O(x)"),
        Dimension("dt", "log-float", 0.01, 0.5, description="step size of the residual policy"),
        Dimension("alpha", "float", 0.1, 0.95, description="memory of the convex policy"),
        Dimension("weight_gain", "float", 0.5, 2.5, description="gain of the lift, mixing and projection weights (dynamics strength)"),
        Dimension("weight_mix_1", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 1"),
        Dimension("weight_mix_2", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 2"),
        Dimension("weight_mix_3", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 3"),
    )
)
"""θ ∈ [0, 1]^13: every dimension is part of the operator's definition (see
:mod:`noa.operators.family`); nothing else about an operator is random except its noise."""
