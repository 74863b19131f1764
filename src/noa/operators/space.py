"""The CNO parameter space: one declaration maps θ ∈ [0, 1]^P to operator hyper-parameters.

Datasets store θ in unit coordinates (what a Sobol sampler draws and what the NOA is
conditioned on); this module is the only place that turns unit values into physical ones and
back (:meth:`ParameterSpace.decode`, :meth:`ParameterSpace.encode`), so the dataset file, the
replay, the reports and a user's hand-written θ can never disagree about what θ means.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from noa.errors import NoaError

KINDS = ("int", "float", "log-float", "choice")
# How many float64 steps (ulps) either side of the closed-form inverse encode tries: the
# closed form is off by a few rounding steps at most, so the best u lies among these neighbours.
_ULP_SEARCH = 8


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

    @property
    def integer_choices(self) -> bool:
        """A choice whose options are all integers written as text (kernel_size "3", "5", "7")."""
        return self.kind == "choice" and all(c.isdigit() and str(int(c)) == c for c in self.choices)

    def physical(self, unit: float) -> Any:
        """:meth:`value`, with an integer choice as an int (kernel_size 5, not "5"). The options
        stay text in the space's definition and a dataset's stored space; :meth:`unit` takes both."""
        value = self.value(unit)
        return int(value) if self.integer_choices else value

    def index(self, unit: float) -> int:
        """For a choice: the index of the chosen option."""
        return self.choices.index(self.value(unit))

    def unit(self, value: Any) -> float:
        """The unit coordinate that :meth:`value` maps back to ``value``: its exact inverse.

        int and choice values get the centre of their share of [0, 1], so float32 rounding
        of θ can never tip them into a neighbour. float and log-float values get the float64
        u with ``self.value(u) == value`` exactly whenever one exists, which it does for every
        value that :meth:`value` produces. A hand-typed value may fall between two images
        (``-1 + 2u`` steps by 2.2e-16 near 0.9, where floats step by 1.1e-16): it then gets the
        u whose image is nearest, a few float64 rounding steps off (relative error about
        1e-15), far below the resolution of θ as float32.
        A value of the wrong type or outside the range is a NoaError.
        """
        if self.kind == "choice":
            return (self._choice_index(value) + 0.5) / len(self.choices)
        if self.kind == "int":
            lo, hi = int(self.low), int(self.high)
            return (self._integer(value, lo, hi) - lo + 0.5) / (hi - lo + 1)
        x = self._real(value)
        if self.kind == "float":
            guess = (x - self.low) / (self.high - self.low)
        else:
            guess = math.log(x / self.low) / math.log(self.high / self.low)
        return self._nearest_unit(x, min(max(guess, 0.0), 1.0))

    def _nearest_unit(self, x: float, guess: float) -> float:
        """Among ``guess`` and its float64 neighbours in [0, 1], the one decoding closest to x."""
        candidates = [guess]
        for direction in (0.0, 1.0):
            u = guess
            for _ in range(_ULP_SEARCH):
                u = math.nextafter(u, direction)
                candidates.append(u)
        return min(candidates, key=lambda u: (abs(self.value(u) - x), abs(u - guess)))

    def _choice_index(self, value: Any) -> int:
        # An integer option may be given as a number: kernel_size 5 means the choice "5".
        key = str(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
        if key not in self.choices:
            raise NoaError(f"θ {self.name} = {value!r} is not one of its options: {', '.join(map(repr, self.choices))}")
        return self.choices.index(key)

    def _integer(self, value: Any, lo: int, hi: int) -> int:
        integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            raise NoaError(f"θ {self.name} must be an integer in [{lo}, {hi}], got {value!r}")
        if not lo <= int(value) <= hi:
            raise NoaError(f"θ {self.name} = {value!r} is outside its range [{lo}, {hi}]")
        return int(value)

    def _real(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise NoaError(f"θ {self.name} must be a finite number in [{self.low:g}, {self.high:g}], got {value!r}")
        if not self.low <= float(value) <= self.high:
            raise NoaError(f"θ {self.name} = {value!r} is outside its range [{self.low:g}, {self.high:g}]")
        return float(value)


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
        """Physical values of one θ row, keyed by dimension name; a choice whose options are all
        integers comes back as an int (``kernel_size`` 5), the other choices as their text."""
        row = [float(v) for v in unit_row]
        if len(row) != self.size:
            raise NoaError(f"θ has {len(row)} values but the parameter space has {self.size} ({', '.join(self.names)})")
        return {d.name: d.physical(u) for d, u in zip(self.dims, row)}

    def encode(self, values: Mapping[str, Any]) -> torch.Tensor:
        """Unit coordinates ``[P]`` (float64) of physical values keyed by dimension name.

        The exact inverse of :meth:`decode`: ``decode(encode(v)) == v`` for every ``v`` that
        decode produces, and within a few float64 rounding steps for hand-typed float values
        (see :meth:`Dimension.unit`), so a θ written in physical units means the operator it
        names. Every dimension must be given, and nothing else: missing and unknown names are one
        NoaError listing them all; a value of the wrong type or outside its range is a NoaError
        naming its dimension and range.
        float64 keeps the inverse exact; the NOA and datasets use θ as float32, which moves
        continuous values by float32 rounding (about 1e-7 relative) and discrete ones not at all.
        """
        if not isinstance(values, Mapping):
            raise NoaError(f"θ in physical units is a mapping of dimension name to value, got {type(values).__name__}")
        missing = [name for name in self.names if name not in values]
        unknown = [str(name) for name in values if name not in self.names]
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else []
            )
            raise NoaError(
                f"θ in physical units needs exactly the dimensions {', '.join(self.names)}: {'; '.join(problems)}"
            )
        return torch.tensor([d.unit(values[d.name]) for d in self.dims], dtype=torch.float64)

    def to_json(self) -> str:
        return json.dumps([asdict(d) for d in self.dims])

    @classmethod
    def from_json(cls, text: str) -> ParameterSpace:
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
        Dimension(
            "weight_gain",
            "float",
            0.5,
            2.5,
            description="gain of the lift, mixing and projection weights (dynamics strength)",
        ),
        # "family basis tensor j" is basis bank T_j of noa.operators.weights. The words stay: every
        # dataset records the space, descriptions included, and is refused when it differs.
        Dimension(
            "weight_mix_1", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 1"
        ),
        Dimension(
            "weight_mix_2", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 2"
        ),
        Dimension(
            "weight_mix_3", "float", -1.0, 1.0, description="weight-space coordinate along family basis tensor 3"
        ),
    )
)
"""θ ∈ [0, 1]^13: the operator is a function of θ alone (see :mod:`noa.operators.weights`);
nothing else about an operator is random except its noise. Not every dimension acts on every
operator: ``update_policy`` picks which of ``dt`` (residual) and ``alpha`` (convex) is used, and
the other one is inert, so two θ that differ only in the inert one define the same operator."""
ACTS_ONLY_UNDER = {"dt": ("update_policy", "residual"), "alpha": ("update_policy", "convex")}
"""The dimensions that act under one option of another alone: a family without that option
fixes them (see :meth:`noa.families.OperatorFamily.inert`)."""
