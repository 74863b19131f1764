"""An initial condition of any kind, drawn exactly as datasets draw theirs.

A thin layer over :mod:`noa.data.ics`: the IC kind and the seed alone decide the field (its
amplitude level and length scale are drawn from the seed too, by :func:`draw_spec`), so
``make_initial_condition(kind, seed=s)`` is sample i's IC whenever the dataset recorded that
kind and ``ic_seed`` s for it. Fixing the amplitude level or the length scale by hand keeps
the rest of the draw.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import torch

from noa.data.ics import draw_spec, make_ic
from noa.errors import NoaError

# Seeds drawn from a generator lie in [0, 2**63 - 1): every stored seed fits an int64.
_SEED_BOUND = 2**63 - 1


def make_initial_condition(
    kind: str | None = None,
    *,
    grid: int = 64,
    channels: int = 3,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    amplitude: str | None = None,
    length_scale: float | None = None,
    family: str | None = None,
) -> torch.Tensor:
    """The IC ``[channels, grid, grid]`` (float32, CPU) of ``kind`` for one seed.

    Give exactly one of ``seed`` (reproducible by itself, the dataset's ``ic_seed``) or
    ``generator`` (one seed is drawn from it, so consecutive calls give different ICs and the
    caller's generator state alone decides them). Kinds: ``noa.IC_KINDS``; the grid is
    periodic and at least 8 cells wide. ``amplitude`` ('low', 'medium', 'high': each channel's
    RMS is 0.25, 1 or 2.5) and ``length_scale`` (a fraction of the domain in (0, 0.5]; what it
    means for each kind is in :mod:`noa.data.ics`) replace the values the seed would draw.
    ``family=`` is the deprecated name of ``kind``.
    """
    kind = _kind_of(kind, family)
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
    spec = draw_spec(kind, int(seed))
    if amplitude is not None:
        spec = dataclasses.replace(spec, amplitude_level=amplitude)
    if length_scale is not None:
        if isinstance(length_scale, bool) or not isinstance(length_scale, numbers.Real):
            raise NoaError(f"the IC length_scale must be a number (a fraction of the domain), got {length_scale!r}")
        spec = dataclasses.replace(spec, length_scale=float(length_scale))
    return make_ic(spec, int(seed), int(channels), int(grid))


def _kind_of(kind: str | None, family: str | None) -> str:
    """The IC kind asked for, from ``kind`` or the deprecated keyword ``family``."""
    if family is not None:
        if kind is not None:
            raise NoaError("give the IC kind once: kind= (family= is its deprecated name)")
        warnings.warn(
            "make_initial_condition(family=...) is deprecated; use make_initial_condition(kind=...)",
            DeprecationWarning,
            stacklevel=3,
        )
        return family
    if kind is None:
        raise NoaError("give the IC kind, one of noa.IC_KINDS (e.g. make_initial_condition('sinusoid', seed=0))")
    return kind
