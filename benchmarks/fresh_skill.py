"""Has a trained NOA learned its family? Judged on fresh operators drawn from the family.

Draws ``--operators`` θ from the family (the run's dataset's recorded family unless ``--family``
names another) with a seed no dataset of the quickstart uses, an initial condition each, and
replays the CNO; then, per update rule:

* horizon-mean MSE of the NOA's rollout against the CNO's, beside persistence's (the IC held);
* the one-step skill on states of the CNO rollout at steps 0, T/4, T/2, 3T/4:
  1 - Σ|NOA update - CNO update|² / Σ|CNO update|², the CNO update taken without noise.

Only the public API is used (``noa.load`` and the replay), so this is what a user measures.

    python benchmarks/fresh_skill.py quickstart/checkpoints/noa/best_model.pt
    python benchmarks/fresh_skill.py RUN/best_model.pt --family spinlock --operators 96
"""

from __future__ import annotations

import argparse
import json

import torch
from common import OneStepSkill

import noa
from noa.data import h5
from noa.data.ics import IC_FAMILIES, make_ics
from noa.families import OperatorFamily, load_family
from noa.model.update_rule import CONVEX, RESIDUAL, UpdateRule
from noa.operators.replay import noise_free_steps, replay
from noa.seeding import derive_seed


def family_of_run(agent: noa.NeuralOperatorAgent, spec: str | None) -> OperatorFamily:
    if spec:
        return load_family(spec)
    with h5.open_dataset(agent.training_args["dataset"]) as f:
        return h5.read_info(f).operator_family


@torch.no_grad()
def measure(
    agent: noa.NeuralOperatorAgent, family: OperatorFamily, operators: int, grid: int, timesteps: int, seed: int
) -> dict:
    theta = torch.from_numpy(family.draw(operators, seed))
    seeds = [derive_seed(seed, "fresh-skill", i) for i in range(operators)]
    ics, _ = make_ics([IC_FAMILIES[i % len(IC_FAMILIES)] for i in range(operators)], seeds, agent.config.channels, grid)
    cno = replay(theta, ics, seeds, timesteps)[:, 0]
    model = agent.model.cpu()
    noa_frames = agent.to("cpu").rollout(ics, theta, timesteps)
    steps = [0, timesteps // 4, timesteps // 2, 3 * timesteps // 4]
    states = cno[:, steps]
    clean = noise_free_steps(theta, states)
    guess = model(states.flatten(0, 1), theta.repeat_interleave(len(steps), 0)).view_as(states)
    residual = UpdateRule.from_space(family.space).residual(theta)
    out: dict[str, dict] = {}
    for rule, rows in ((RESIDUAL, residual), (CONVEX, ~residual)):
        if not rows.any():
            continue
        noa_mse = (noa_frames[rows, 1:] - cno[rows, 1:]).pow(2).mean()
        persistence = (cno[rows, :1] - cno[rows, 1:]).pow(2).mean()
        skill = OneStepSkill()
        skill.add([rule], guess[rows] - states[rows], clean[rows] - states[rows])
        out[rule] = {
            "operators": int(rows.sum()),
            "horizon_mse_noa": float(noa_mse),
            "horizon_mse_persistence": float(persistence),
            "noa_to_persistence": float(noa_mse / persistence),
            "one_step_skill": skill.pooled()[rule][0],
        }
    return dict(sorted(out.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--family", default=None, help="family file or name (default: the run's dataset's family)")
    p.add_argument("--operators", type=int, default=48)
    p.add_argument("--grid", type=int, default=None, help="default: the run's dataset's grid")
    p.add_argument("--timesteps", type=int, default=None, help="default: the run's T")
    p.add_argument("--seed", type=int, default=7919)
    args = p.parse_args()
    agent = noa.load(args.checkpoint, device="cpu")
    family = family_of_run(agent, args.family)
    grid = args.grid
    if grid is None:
        with h5.open_dataset(agent.training_args["dataset"]) as f:
            grid = h5.read_info(f).grid
    timesteps = args.timesteps or int(agent.training_args["timesteps"])
    result = measure(agent, family, args.operators, grid, timesteps, args.seed)
    print(f"family {family.name}, {args.operators} fresh operators, grid {grid}, T={timesteps}")
    for rule, m in result.items():
        print(
            f"  {rule:<8} ({m['operators']:>2}): NOA / persistence horizon-mean MSE {m['noa_to_persistence']:.3f} "
            f"({m['horizon_mse_noa']:.3g} vs {m['horizon_mse_persistence']:.3g}); one-step skill {m['one_step_skill']:.3f}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
