"""The parameter space's declared update rule, applied by the NOA's output head.

A CNO step is ``x' = x + dt·O(x)`` (residual) or ``x' = α·x + (1-α)·O(x)`` (convex), with the
rule, dt and α read from θ. Both are ``x' = keep·x + scale·g`` with (keep, scale) = (1, dt) or
(α, 1-α). A head that applies this rule to the network's output ``g`` lets the network learn
O itself, at unit scale, whatever dt or α is: without it the network must learn ``dt·O`` for dt
from 0.01 to 0.5 and ``(1-α)(O - x)``, and a plain loss on the update hears almost only the
convex operators (see ``benchmarks/learnability.py``).

The rule comes from the dataset's parameter space (:meth:`UpdateRule.from_space`): where the
dimensions it needs are absent the model keeps the generic head ``x' = x + g``. It is stored in
the model's config as plain data, so a checkpoint carries the rule it was trained with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from noa.errors import NoaError
from noa.operators.space import Dimension, ParameterSpace

RESIDUAL, CONVEX = "residual", "convex"


@dataclass(frozen=True)
class UnitDecoder:
    """One θ dimension's unit coordinate -> its physical value, on tensors (see :class:`Dimension`)."""

    index: int
    kind: str
    low: float
    high: float

    def __call__(self, params: Tensor) -> Tensor:
        u = params[:, self.index].clamp(0.0, 1.0)
        if self.kind == "log-float":
            return self.low * torch.exp(u * math.log(self.high / self.low))
        return self.low + u * (self.high - self.low)


@dataclass(frozen=True)
class UpdateRule:
    """``x' = keep·x + scale·g`` per sample, from θ's update_policy, dt and alpha."""

    policy_index: int
    policy_choices: tuple[str, ...]
    dt: UnitDecoder
    alpha: UnitDecoder

    @classmethod
    def from_space(cls, space: ParameterSpace) -> UpdateRule | None:
        """The rule a parameter space declares, or None when it lacks the dimensions it needs."""
        dims = {d.name: (i, d) for i, d in enumerate(space.dims)}
        policy, dt, alpha = dims.get("update_policy"), dims.get("dt"), dims.get("alpha")
        if policy is None or dt is None or alpha is None:
            return None
        if policy[1].kind != "choice" or set(policy[1].choices) != {RESIDUAL, CONVEX}:
            return None
        if any(d.kind not in ("float", "log-float") for _, d in (dt, alpha)):
            return None
        return cls(policy[0], policy[1].choices, _decoder(*dt), _decoder(*alpha))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "policy_choices": list(self.policy_choices)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UpdateRule:
        try:
            return cls(
                int(d["policy_index"]),
                tuple(d["policy_choices"]),
                UnitDecoder(**d["dt"]),
                UnitDecoder(**d["alpha"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise NoaError(f"model config: update_rule is not a valid rule ({err!r}): {d!r}") from err

    def residual(self, params: Tensor) -> Tensor:
        """[B] bool: which rows use the residual rule (the choice decoded as the replay does)."""
        n = len(self.policy_choices)
        index = (params[:, self.policy_index] * n).floor().clamp(0, n - 1).long()
        return index == self.policy_choices.index(RESIDUAL)

    def coefficients(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(keep, scale), each [B, 1, 1, 1]."""
        residual = self.residual(params)
        dt, alpha = self.dt(params), self.alpha(params)
        keep = torch.where(residual, torch.ones_like(alpha), alpha)
        scale = torch.where(residual, dt, 1.0 - alpha)
        return keep[:, None, None, None], scale[:, None, None, None]

    def apply(self, x: Tensor, g: Tensor, params: Tensor) -> Tensor:
        keep, scale = self.coefficients(params.float())
        return keep * x + scale * g


def _decoder(index: int, dim: Dimension) -> UnitDecoder:
    return UnitDecoder(index, dim.kind, float(dim.low), float(dim.high))
