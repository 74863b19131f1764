"""Has a trained NOA learned its family? Judged on fresh operators drawn from the family.

Draws ``--per-rule`` θ of each update rule from the family (the run's dataset's recorded family
unless ``--family`` names another; 192 each by default) with a seed no dataset of the quickstart
uses, an initial condition each, and replays the CNO; then, per update rule:

* horizon-mean MSE of the NOA's rollout against the CNO's, beside persistence's (the IC held);
* on states of the CNO rollout at steps 0, T/4, T/2, 3T/4, the two skills of
  :mod:`noa.diagnostics.skill`: the **one-step skill** (the NOA's step against the CNO's
  noise-free step, relative to persistence: what ``noa diagnose`` and ``noa compare`` show) and
  the **skill on O** (the NOA's output read at unit scale against O_θ(x)); each as the median
  over operators and pooled, with bootstrap 90% intervals and bins by gain third and activation.

Only the public API is used (``noa.load`` and the replay), so this is what a user measures.

    python benchmarks/fresh_skill.py quickstart/checkpoints/noa/best_model.pt
    python benchmarks/fresh_skill.py RUN/best_model.pt --family spinlock --per-rule 96
"""

from __future__ import annotations

import argparse
import json

import torch

import noa
from noa.data import h5
from noa.data.ics import make_ics
from noa.diagnostics.held_out import balanced_theta, cycled_ic_kinds, rules_of
from noa.diagnostics.skill import (
    ONE_STEP_SKILL,
    SKILL_ON_O,
    format_interval,
    markdown,
    rollout_states,
    step_tables,
)
from noa.families import OperatorFamily, load_family
from noa.operators.replay import replay
from noa.seeding import derive_seed


def family_of_run(agent: noa.NeuralOperatorAgent, spec: str | None) -> OperatorFamily:
    if spec:
        return load_family(spec)
    with h5.open_dataset(agent.training_args["dataset"]) as f:
        return h5.read_info(f).operator_family


@torch.no_grad()
def measure(
    agent: noa.NeuralOperatorAgent, family: OperatorFamily, per_rule: int, grid: int, timesteps: int, seed: int
) -> dict:
    """Per update rule: the horizon-mean MSEs, and both skills' tables (``one_step``, ``skill_on_o``)."""
    theta = balanced_theta(family, per_rule, seed)
    n = theta.shape[0]
    seeds = [derive_seed(seed, "fresh-skill", i) for i in range(n)]
    ics, _ = make_ics(cycled_ic_kinds(n), seeds, agent.config.channels, grid)
    cno = replay(theta, ics, seeds, timesteps)[:, 0]
    model = agent.model.cpu()
    noa_frames = agent.to("cpu").rollout(ics, theta, timesteps)
    states = rollout_states(cno, timesteps)
    tables = step_tables(model, family, theta, states, seed)
    rules = rules_of(family, theta)
    out: dict[str, dict] = {}
    for rule in sorted(set(rules)):
        rows = torch.tensor([r == rule for r in rules])
        noa_mse = (noa_frames[rows, 1:] - cno[rows, 1:]).pow(2).mean()
        persistence = (cno[rows, :1] - cno[rows, 1:]).pow(2).mean()
        out[rule] = {
            "operators": int(rows.sum()),
            "horizon_mse_noa": float(noa_mse),
            "horizon_mse_persistence": float(persistence),
            "noa_to_persistence": float(noa_mse / persistence),
            "one_step": tables["one_step"][rule],
            "skill_on_o": tables["skill_on_o"][rule],
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--family", default=None, help="family file or name (default: the run's dataset's family)")
    p.add_argument("--per-rule", type=int, default=192, help="fresh operators of each update rule")
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
    if args.per_rule < 1:
        p.error(f"--per-rule must be >= 1; got {args.per_rule}")
    result = measure(agent, family, args.per_rule, grid, timesteps, args.seed)
    print(f"family {family.name}, fresh operators ({args.per_rule} per update rule), grid {grid}, T={timesteps}")
    for rule, m in result.items():
        one, on_o = m["one_step"]["all"], m["skill_on_o"]["all"]
        print(
            f"  {rule:<8} ({m['operators']:>3}): NOA / persistence horizon-mean MSE {m['noa_to_persistence']:.3f} "
            f"({m['horizon_mse_noa']:.3g} vs {m['horizon_mse_persistence']:.3g}); {ONE_STEP_SKILL} pooled "
            f"{format_interval(one, 'pooled')}, median {format_interval(one, 'median')}; {SKILL_ON_O} median "
            f"{format_interval(on_o, 'median')}, pooled {format_interval(on_o, 'pooled')}"
        )
    for name, key in ((ONE_STEP_SKILL, "one_step"), (SKILL_ON_O, "skill_on_o")):
        print()
        print("\n".join(markdown({rule: m[key] for rule, m in result.items()}, name)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
