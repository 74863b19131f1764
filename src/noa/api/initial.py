"""An initial condition of any family, drawn exactly as datasets draw theirs.

A thin layer over :func:`noa.data.ics.make_ics`: the family and the seed alone decide the field
(its amplitude level and length scale are drawn from the seed too), so
``make_initial_condition(family, seed=s)`` is sample i's IC whenever the dataset recorded that
family and ``ic_seed`` s for it.
"""

from __future__ import annotations

import numbers

import torch

from noa.data.ics import make_ics
from noa.errors import NoaError

# Seeds drawn from a generator lie in [0, 2**63 - 1): every stored seed fits an int64.
_SEED_BOUND = 2**63 - 1


def make_initial_condition(
    family: str,
    *,
    grid: int = 64,
    channels: int = 3,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The IC ``[channels, grid, grid]`` (float32, CPU) of ``family`` for one seed.

    Give exactly one of ``seed`` (reproducible by itself, the dataset's ``ic_seed``) or
    ``generator`` (one seed is drawn from it, so consecutive calls give different ICs and the
    caller's generator state alone decides them). Families: ``noa.IC_FAMILIES``; the grid is
    periodic and at least 8 cells wide.
    """
    if (seed is None) == (generator is None):
        raise NoaError("give exactly one of seed= (an int) or generator= (a torch.Generator) for the initial condition")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise NoaError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        seed = int(torch.randint(_SEED_BOUND, (), generator=generator, device=generator.device))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise NoaError(f"the IC seed must be an integer, got {seed!r}")
    for name, value in (("grid", grid), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise NoaError(f"the IC {name} must be an integer, got {value!r}")
    fields, _ = make_ics([family], [int(seed)], int(channels), int(grid))
    return fields[0]
