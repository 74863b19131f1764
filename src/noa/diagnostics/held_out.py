"""Fresh operators of a family and the CNO's noise-free targets on their states: what a skill is
measured on.

A held-out set is θ drawn from the family with a seed no training set uses, one initial
condition per operator (the IC kinds cycled), CNO realization 0 replayed for T steps, and
O_θ applied to its states without noise. The set is balanced per update rule: residual and
convex operators behave differently and are reported apart, so each rule present in the family
gets its own ``per_rule`` operators (:func:`balanced_theta`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from noa.data.ics import IC_KINDS, make_ics
from noa.families import OperatorFamily
from noa.model.update_rule import CONVEX, RESIDUAL, UpdateRule
from noa.operators.cno import apply_operator, build_operators
from noa.operators.replay import replay

CHUNK = 32  # operators replayed together


@dataclass
class StateSet:
    """θ ``[N, P]``, CNO states ``[N, S, C, H, W]`` and O_θ on them (noise-free, unit scale)."""

    theta: Tensor
    states: Tensor
    maps: Tensor

    def head(self, n: int) -> StateSet:
        return StateSet(self.theta[:n], self.states[:n], self.maps[:n])

    def picked(self, steps: list[int]) -> StateSet:
        """The same operators on the states at ``steps`` only."""
        return StateSet(self.theta, self.states[:, steps], self.maps[:, steps])


def skill_steps(timesteps: int) -> list[int]:
    """The states a skill is measured on: steps 0, T/4, T/2 and 3T/4 of a T-step rollout, each
    once (for T < 4 some coincide)."""
    return sorted({0, timesteps // 4, timesteps // 2, 3 * timesteps // 4})


def ic_seeds(seed: int, n: int) -> list[int]:
    """The initial-condition (and noise) seeds of n operators drawn with ``seed``: the ladder's rule,
    shared by every benchmark so that the same seed means the same states."""
    return [seed * 1_000_003 + i for i in range(n)]


def cycled_ic_kinds(n: int) -> list[str]:
    """Row i gets initial-condition kind i mod 5."""
    return [IC_KINDS[i % len(IC_KINDS)] for i in range(n)]


@torch.no_grad()
def rollouts(
    theta: Tensor,
    ic_seeds: list[int],
    ic_kinds: list[str],
    channels: int,
    grid: int,
    timesteps: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> StateSet:
    """States of one CNO realization per row at steps 0..T-1 and O_θ on them, made on ``device``
    in chunks of 32 operators (the initial conditions are drawn on the host and moved)."""
    states, maps, n = [], [], theta.shape[0]
    for start in range(0, n, CHUNK):
        rows = slice(start, min(start + CHUNK, n))
        ics, _ = make_ics(ic_kinds[rows], ic_seeds[rows], channels, grid)
        x = replay(theta[rows], ics, ic_seeds[rows], timesteps, device=device)[:, 0, :timesteps]
        ops = build_operators(theta[rows], ic_seeds[rows], channels, grid, device).repeat(timesteps)
        states.append(x)
        maps.append(apply_operator(ops, x.flatten(0, 1)).view_as(x))
        if log is not None and (start // CHUNK) % 16 == 15:
            log(f"    {rows.stop} / {n} operators replayed")
    return StateSet(theta.to(device), torch.cat(states), torch.cat(maps))


def rules_of(family: OperatorFamily, theta: Tensor) -> list[str]:
    """Each row's update rule, read as the replay reads it (all residual where the space has no rule)."""
    rule = UpdateRule.from_space(family.space)
    if rule is None:
        return [RESIDUAL] * theta.shape[0]
    return [RESIDUAL if r else CONVEX for r in rule.residual(theta).tolist()]


def balanced_theta(family: OperatorFamily, per_rule: int, seed: int) -> Tensor:
    """θ rows with ``per_rule`` operators of each update rule the family draws (residual first).

    The family's Sobol draw is taken at growing sizes until every rule it produces has its
    count, and each rule's first ``per_rule`` rows are kept: a family that draws one rule only
    gives that rule's ``per_rule`` rows (a rule drawn rarer than 1 in 64 keeps what it has).
    """
    if per_rule < 1:
        raise ValueError(f"per_rule must be >= 1; got {per_rule}")
    n = 2 * per_rule
    while True:
        theta = torch.from_numpy(family.draw(n, seed))
        rules = rules_of(family, theta)
        counts = {r: rules.count(r) for r in (RESIDUAL, CONVEX) if r in rules}
        if all(c >= per_rule for c in counts.values()) or n >= 64 * per_rule:
            keep = [i for r in counts for i in [j for j, x in enumerate(rules) if x == r][:per_rule]]
            return theta[keep]
        n *= 2


def held_out_operators(
    family: OperatorFamily,
    per_rule: int,
    seed: int,
    channels: int,
    grid: int,
    timesteps: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> StateSet:
    """``per_rule`` fresh operators of each update rule, their states at :func:`skill_steps` of a
    T-step rollout and O_θ on them. The IC (and noise) seeds come from ``seed`` alone."""
    theta = balanced_theta(family, per_rule, seed)
    n = theta.shape[0]
    full = rollouts(theta, ic_seeds(seed, n), cycled_ic_kinds(n), channels, grid, timesteps, device, log)
    return full.picked(skill_steps(timesteps))
