"""What the public API accepts as (IC, θ), turned into the batches the NOA and the replay take.

Both sides of a comparison go through these functions, so the NOA and the CNO replay always
see the same float32 θ rows (as a dataset stores them) and the same ICs. θ is accepted as
unit coordinates (a ``[P]`` or ``[B, P]`` tensor) or in physical units (one mapping of
dimension name to value, or a list of them; see :meth:`ParameterSpace.encode`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from noa.errors import NoaError
from noa.operators.space import CNO_SPACE, ParameterSpace

Theta = torch.Tensor | Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""θ as unit coordinates ``[P]`` / ``[B, P]``, or physical values: a mapping or a list of them."""


def as_theta(theta: Theta, space: ParameterSpace = CNO_SPACE) -> torch.Tensor:
    """θ as float32 unit rows ``[B, P]`` on the CPU, checked to be finite and inside [0, 1].

    Values outside [0, 1] are refused rather than clamped: the replay would clamp them while
    the NOA saw the raw value, and the two would disagree about the operator.
    """
    if isinstance(theta, Mapping):
        rows = space.encode(theta)[None]
    elif isinstance(theta, torch.Tensor):
        rows = _unit_rows(theta, space)
    elif (
        isinstance(theta, Sequence)
        and not isinstance(theta, str)
        and theta
        and all(isinstance(t, Mapping) for t in theta)
    ):
        rows = torch.stack([space.encode(t) for t in theta])
    else:
        raise NoaError(
            f"θ must be a tensor of unit coordinates [P] or [B, P], a mapping of physical values "
            f"or a non-empty list of mappings; got {type(theta).__name__}"
        )
    return rows.to(torch.float32)


def _unit_rows(theta: torch.Tensor, space: ParameterSpace) -> torch.Tensor:
    rows = theta.detach().cpu()
    rows = rows[None] if rows.ndim == 1 else rows
    if rows.ndim != 2 or rows.shape[1] != space.size or rows.shape[0] == 0:
        raise NoaError(
            f"θ must be [P] or [B, P] with P = {space.size} ({', '.join(space.names)}); got shape {tuple(theta.shape)}"
        )
    if not rows.is_floating_point():
        raise NoaError(f"θ must be a floating-point tensor of unit coordinates, got dtype {theta.dtype}")
    if not bool(torch.isfinite(rows).all()) or bool(((rows < 0) | (rows > 1)).any()):
        raise NoaError(
            "θ must be unit coordinates in [0, 1] (finite); give physical values as a mapping to have them encoded"
        )
    return rows


def as_ics(ic: torch.Tensor) -> torch.Tensor:
    """Initial conditions as a float32 batch ``[B, C, H, W]`` (a single ``[C, H, W]`` becomes B = 1)."""
    if not isinstance(ic, torch.Tensor):
        raise NoaError(f"the initial condition must be a tensor [C, H, W] or [B, C, H, W], got {type(ic).__name__}")
    batch = ic[None] if ic.ndim == 3 else ic
    if batch.ndim != 4 or batch.shape[0] == 0:
        raise NoaError(f"the initial condition must be [C, H, W] or [B, C, H, W], got shape {tuple(ic.shape)}")
    if not batch.is_floating_point() or not bool(torch.isfinite(batch).all()):
        raise NoaError("the initial condition must hold finite floating-point values")
    return batch.to(torch.float32)


def paired(ic: torch.Tensor, theta: Theta, space: ParameterSpace = CNO_SPACE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ics [B, C, H, W], θ [B, P])`` with one side of batch 1 repeated to the other's B.

    One IC under many θ, or one θ from many ICs, is the common question; two batches of
    different sizes above 1 are refused, since no pairing of them is the obvious one.
    """
    ics, rows = as_ics(ic), as_theta(theta, space)
    b_ic, b_theta = ics.shape[0], rows.shape[0]
    if b_ic != b_theta and 1 not in (b_ic, b_theta):
        raise NoaError(f"got {b_ic} initial conditions but {b_theta} θ rows; give as many of each, or one of either")
    size = max(b_ic, b_theta)
    return ics.expand(size, *ics.shape[1:]), rows.to(ics.device).expand(size, -1)
