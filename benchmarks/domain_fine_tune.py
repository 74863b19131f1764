"""Does the guide's fine-tune pay? A general NOA, fine-tuned on a domain family, against the
general NOA as it is and against a NOA trained from scratch on the domain data.

1. a general dataset (``--general``, default ``spinlock``) and a domain dataset
   (``--domain``: a family file or name; default: ``spinlock`` narrowed to the residual rule at
   weight_gain 1.0-1.5 and 2-3 layers, written to ``.work/``), both at the quickstart's grid and T;
2. ``noa train`` on the general data (``--general-epochs``) with the quickstart's widths and
   recipe (one-step phase then rollouts, one state per operator and one-step batch), physics
   only (L_traj: no tokenizer, so the comparison is about the map, and a CPU finishes it);
3. from the general run's best model, a fine-tune on the domain data (``--init-from``,
   ``--lr`` / 10, ``--domain-epochs``); from scratch, the same recipe and number of updates
   on the domain data;
4. each of the three judged on ``--per-rule`` fresh θ of each update rule of the domain family
   (``fresh_skill.py``: the one-step skill, pooled and over the median operator, and the
   horizon-mean MSE against persistence, per rule).

    python benchmarks/domain_fine_tune.py --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from fresh_skill import measure

import noa
from noa.data.generate import GenerateConfig, generate
from noa.families import OperatorFamily, family_from_text, load_family

WORK = Path(__file__).resolve().parent / ".work" / "domain_fine_tune"
DOMAIN = """name: spinlock-residual-strong
description: the spinlock family's residual operators at a stronger gain and 2-3 layers
dimensions:
  activation: {fixed: gelu}
  update_policy: {fixed: residual}
  dt: {range: [0.01, 0.05]}
  n_layers: {range: [2, 3]}
  weight_gain: {range: [1.0, 1.5]}
"""
MODEL = dict(base_channels=16, encoder_levels=2, modes=8, afno_blocks=2)


def dataset(family: OperatorFamily, n: int, seed: int, grid: int, timesteps: int) -> Path:
    """The family's dataset, generated once and cached under its content: an edited --domain
    file that keeps its name is another family, and gets its own file."""
    content = hashlib.blake2b(family.to_json().encode(), digest_size=6).hexdigest()
    path = WORK / f"{family.name}_{content}_n{n}_g{grid}_t{timesteps}_s{seed}.h5"
    if not path.exists():
        config = GenerateConfig(n_samples=n, grid=grid, timesteps=timesteps, seed=seed, store_trajectories=True,
                                features=False, family=family.as_dict())  # fmt: skip
        generate(config, path, batch_size=32, progress=False)
    return path


def run(name: str, data: Path, epochs: int, args: argparse.Namespace, **extra: object) -> tuple[Path, float, int]:
    from noa.train.loop import train

    started = time.perf_counter()
    flags = dict(dataset=str(data), checkpoint_dir=str(WORK / name), epochs=epochs, batch_size=args.batch_size,
                 lr=args.lr, timesteps=args.timesteps, bptt_window=8, warmup_steps=20, save_every=0, log_every=1000,
                 one_step_states=args.one_step_states, seed=0, device="cpu", overwrite=True, **MODEL)  # fmt: skip
    flags.update(extra)
    result = train(flags)
    return WORK / name / "best_model.pt", time.perf_counter() - started, result.global_step


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--general", default="spinlock", help="the general family (file or name)")
    p.add_argument("--domain", default=None, help="the domain family (file or name); default: see the docstring")
    p.add_argument("--general-samples", type=int, default=1024)
    p.add_argument("--domain-samples", type=int, default=256)
    p.add_argument("--general-epochs", type=int, default=4)
    p.add_argument("--domain-epochs", type=int, default=3)
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--one-step-states", type=int, default=1, help="as noa train's (the quickstart's recipe: 1)")
    p.add_argument("--per-rule", type=int, default=96, help="fresh domain θ judged, of each update rule")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    general_family = load_family(args.general)
    domain_family = load_family(args.domain) if args.domain else family_from_text(DOMAIN, "the default domain")
    general_data = dataset(general_family, args.general_samples, 0, args.grid, args.timesteps)
    domain_data = dataset(domain_family, args.domain_samples, 1, args.grid, args.timesteps)
    general, general_s, general_steps = run("general", general_data, args.general_epochs, args)
    tuned, tuned_s, tuned_steps = run(
        "fine_tuned", domain_data, args.domain_epochs, args, init_from=str(general), lr=args.lr / 10
    )
    scratch, scratch_s, scratch_steps = run("scratch", domain_data, args.domain_epochs, args)
    rows = {}
    for name, checkpoint, seconds, steps in (
        ("general", general, general_s, general_steps),
        ("scratch on the domain", scratch, scratch_s, scratch_steps),
        ("general, fine-tuned", tuned, tuned_s, tuned_steps),
    ):
        agent = noa.load(checkpoint, device="cpu")
        rows[name] = {
            "updates": steps,
            "seconds": round(seconds),
            "skill": measure(agent, domain_family, args.per_rule, args.grid, args.timesteps, seed=7919),
        }
    print(
        f"\nDomain family {domain_family.name}, {args.per_rule} fresh θ per rule; general family {general_family.name}"
    )
    print(
        "| NOA | updates on its data | one-step skill per rule (pooled / median operator) | NOA / persistence horizon MSE per rule |"
    )
    print("|---|---:|---|---|")
    for name, row in rows.items():
        skills = ", ".join(
            f"{rule} {m['one_step']['all']['pooled']:.3f} / {m['one_step']['all']['median']:.3f}"
            for rule, m in row["skill"].items()
        )
        ratios = ", ".join(f"{rule} {m['noa_to_persistence']:.3f}" for rule, m in row["skill"].items())
        print(f"| {name} | {row['updates']} ({row['seconds']} s) | {skills} | {ratios} |")
    (WORK / "summary.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
