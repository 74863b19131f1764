"""How hard a family is to emulate, measured without training (seconds on a CPU).

A NOA must learn each operator's map O_θ(x) from θ. Two training-free properties of that map
ordered the learnability ladder's one-operator runs exactly as their learned skill did
(``benchmarks/learnability.py``): how strongly O depends on the state (the finite-difference
gain under a small perturbation, absolute and relative to |O(x)| / |x|) and how rough O(x) is
(the share of its spectral energy above wavenumber grid/4, which a spectral model at modes
grid/4 cannot represent). A map with relative gain near 0 is almost a θ-dependent constant
field; a map whose high-wavenumber share is large costs many updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noa.data.ics import IC_KINDS, make_ics
from noa.families.family import OperatorFamily
from noa.model.update_rule import CONVEX, RESIDUAL, UpdateRule
from noa.operators.cno import apply_operator, build_operators
from noa.operators.replay import replay
from noa.seeding import derive_seed, generator


@dataclass(frozen=True)
class MapRoughness:
    """Per-state measures of O_θ at a set of states (one value per state)."""

    gain: torch.Tensor  # |O(x+δ) - O(x)| / |δ|
    relative: torch.Tensor  # gain · |x| / |O(x)|
    high_fraction_map: torch.Tensor  # share of O(x)'s spectral energy above grid/4
    high_fraction_state: torch.Tensor  # the same share for x itself


def high_wavenumber_share(v: torch.Tensor) -> torch.Tensor:
    """Per sample of ``[B, C, N, N]``: the share of spectral energy at radial wavenumber > N/4."""
    grid = v.shape[-1]
    k = torch.fft.fftfreq(grid, 1 / grid)
    radius = (k[:, None] ** 2 + torch.fft.rfftfreq(grid, 1 / grid)[None, :] ** 2).sqrt()
    energy = torch.fft.rfft2(v).abs().pow(2).sum(1)
    return energy[:, radius > grid / 4].sum(1) / energy.flatten(1).sum(1)


@torch.no_grad()
def map_roughness(theta: torch.Tensor, states: torch.Tensor, seed: int = 0) -> MapRoughness:
    """The measures of O_θ at ``states`` ``[B, C, N, N]`` (row b under θ_b), with a perturbation
    δ of RMS 1e-3·RMS(x) drawn from ``seed``."""
    ops = build_operators(theta, list(range(states.shape[0])), states.shape[1], states.shape[-1])
    noise = torch.randn(states.shape, generator=generator(seed, "map-roughness"))
    delta = 1e-3 * states.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() * noise
    o, shifted = apply_operator(ops, states), apply_operator(ops, states + delta)

    def norm(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(1).norm(dim=1)

    gain = norm(shifted - o) / norm(delta)
    return MapRoughness(
        gain=gain,
        relative=gain * norm(states) / norm(o),
        high_fraction_map=high_wavenumber_share(o),
        high_fraction_state=high_wavenumber_share(states),
    )


def family_difficulty(
    family: OperatorFamily, operators: int = 32, grid: int = 32, timesteps: int = 16, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Median measures per update rule over ``operators`` operators drawn from the family, each
    at the states of its CNO rollout at steps 0, T/4, T/2 and 3T/4 (one IC per operator)."""
    theta = torch.from_numpy(family.draw(operators, seed))
    seeds = [derive_seed(seed, "difficulty", i) for i in range(operators)]
    ics, _ = make_ics([IC_KINDS[i % len(IC_KINDS)] for i in range(operators)], seeds, 3, grid)
    rollouts = replay(theta, ics, seeds, timesteps)[:, 0]
    steps = [0, timesteps // 4, timesteps // 2, 3 * timesteps // 4]
    states = rollouts[:, steps].flatten(0, 1)
    finite = torch.isfinite(states).flatten(1).all(1)
    rows = theta.repeat_interleave(len(steps), dim=0)
    measures = map_roughness(rows[finite], states[finite], seed)
    rule = UpdateRule.from_space(family.space)
    assert rule is not None, "a family is a region of the CNO space, which declares its update rule"
    rules = rule.residual(rows[finite])
    out: dict[str, dict[str, float]] = {}
    for name, mask in ((RESIDUAL, rules), (CONVEX, ~rules)):
        if not mask.any():
            continue
        out[name] = {
            "operators": int(mask.sum()) // len(steps),
            "gain": round(float(measures.gain[mask].median()), 4),
            "relative": round(float(measures.relative[mask].median()), 4),
            "high_fraction_map": round(float(measures.high_fraction_map[mask].median()), 4),
        }
    return out
