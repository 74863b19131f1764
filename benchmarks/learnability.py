"""Where does learning the CNO family fail? A ladder of one-step probes, each a few minutes.

Every rung trains a candidate backbone on the family's *one-step map* directly, with the update
rule applied outside the network (the rule comes from θ: residual x + dt·g, convex
α·x + (1-α)·g), so the network learns g ≈ O_θ(x) at unit scale whatever dt or α is, on
noise-free targets (O_θ evaluated on the states of CNO rollouts). That removes rollout error,
noise and loss scaling from the question and leaves the one that matters: can the backbone,
conditioned on θ, turn θ into the operator's map?

Rungs (``--rung``):

* ``one``: one fixed θ; held out = new initial conditions;
* ``combo``: one discrete combination (layers, channels, kernel, activation, rule), the
  continuous coordinates (noise, gain, dt/α, weight-space mix) varying; held out = new θ;
* ``family``: every dimension varying; held out = new θ.

Candidates (``--model``; the research ones are :mod:`noa.model.candidates`):

* ``uafno``: the NOA's U-AFNO (FiLM conditioning) at the quickstart's widths; its residual
  branch f(x, θ) is read as g;
* ``hyper``: a θ-generated depthwise-separable stack (weights = θ-dependent mixtures of learned
  basis tensors, channel / tap / layer gates and an activation mixture, all generated from θ;
  periodic depthwise convolutions done in Fourier space), the "weight-space conditioning" lever;
* ``hybrid``, ``generated``: the product's θ-generated stack (:mod:`noa.model.generated`, what
  ``noa train --backbone`` builds) beside the U-AFNO above or alone, sized from ``--family``'s
  largest operator (the whole space's without one) and reading θ's discrete dimensions one-hot.

``--updates N`` stops every candidate after N updates (equal updates) instead of ``--minutes``
(equal wall time); the summary states the seconds per update either way (updates alone,
without the skill evaluations).

Reported: the **skill on O** (:mod:`noa.diagnostics.skill`) on the held-out operators
(``--per-rule`` of each update rule on the family rung): 1 − Σ‖g − O_θ(x)‖² / Σ‖O_θ(x)‖² per
operator over states at steps 0, T/4, T/2, 3T/4, median over operators and pooled with 90%
intervals, binned by gain third and activation; beside it the *drift skill* on held-out and
training operators per update rule, 1 - Σ|Δ̂ - Δ|² / Σ|Δ|² pooled over the same states (Δ the
noise-free CNO update; 1 = the map is learned, 0 = persistence), and each rule's share of the plain-MSE loss on Δ
over the training pool (which operators a plain L_traj listens to). Before training, a
training-free measure of how rough the map is (:func:`sensitivity`: finite-difference gain of O
under a 1e-3 perturbation, share of O(x)'s spectral energy above wavenumber grid/4). ``--fix
NAME=VALUE`` pins any θ dimension, in physical units, on every row.

    python benchmarks/learnability.py --rung one --model hyper --minutes 3
    python benchmarks/learnability.py --rung family --model uafno --n-train 1024 --minutes 10
    python benchmarks/learnability.py --rung one --model uafno --fix weight_gain=2.5 --fix n_layers=5
    python benchmarks/learnability.py --family starter --model hybrid --theta-box --updates 300
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noa.diagnostics.held_out import balanced_theta, cycled_ic_kinds, ic_seeds, rollouts, skill_steps
from noa.diagnostics.skill import headline, markdown, operator_sums, pooled, skill_on_o
from noa.errors import NoaError
from noa.families import FULL, OperatorFamily, load_family
from noa.families.difficulty import map_roughness
from noa.model.candidates import HyperStack, UAFNOBranch
from noa.model.generated import family_fields
from noa.model.update_rule import CONVEX, RESIDUAL, UpdateRule
from noa.operators.space import ACTIVATIONS, CNO_SPACE, UPDATE_POLICIES

WORK = Path(__file__).resolve().parent / ".work"
DISCRETE = ("n_layers", "base_channels", "kernel_size", "activation", "update_policy")


def draw_theta(
    n: int, seed: int, rung: str, anchor: torch.Tensor | None, fixed: dict[str, object], family: OperatorFamily | None
) -> torch.Tensor:
    """``n`` unit θ rows for a rung; ``anchor`` (the training pool's first row) pins what the
    rung holds fixed, so held-out rows share it; ``fixed`` pins named dimensions (physical values) on every row;
    ``family`` draws the rows inside a family (uniformly at random over the whole space without one)."""
    if family is None:
        theta = torch.rand(n, CNO_SPACE.size, generator=torch.Generator().manual_seed(seed))
    else:
        theta = torch.from_numpy(family.draw(n, seed))
    for name, value in fixed.items():
        theta[:, CNO_SPACE.position(name)] = CNO_SPACE.dims[CNO_SPACE.position(name)].unit(value)
    anchor = theta[0].clone() if anchor is None else anchor
    if rung == "one":
        theta[:] = anchor
    elif rung == "combo":
        for name in DISCRETE:
            theta[:, CNO_SPACE.position(name)] = anchor[CNO_SPACE.position(name)]
    return theta


def make_pool(theta: torch.Tensor, seed: int, grid: int, timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States of CNO realization 0 at steps 0..T-1 ``[N, T, C, H, W]`` and O_θ on them."""
    n = theta.shape[0]
    pool = rollouts(theta, ic_seeds(seed, n), cycled_ic_kinds(n), 3, grid, timesteps)
    return pool.states, pool.maps


def held_out_theta(
    args: argparse.Namespace, anchor: torch.Tensor, fixed: dict[str, object], family: OperatorFamily | None
) -> torch.Tensor:
    """The held-out θ: on the family rung ``--per-rule`` operators of each update rule (the
    family's, or the whole space's; pins applied after), else ``--n-test`` rows that share what
    the rung holds fixed with the training pool's first row."""
    if args.rung != "family":
        return draw_theta(args.n_test or 48, args.seed + 1, args.rung, anchor, fixed, family)
    theta = balanced_theta(family or load_family("full"), args.per_rule, args.seed + 1)
    for name, value in fixed.items():
        theta[:, CNO_SPACE.position(name)] = CNO_SPACE.dims[CNO_SPACE.position(name)].unit(value)
    return theta


RULE = UpdateRule.from_space(CNO_SPACE)
assert RULE is not None  # the CNO space declares its update rule


def true_update(theta: torch.Tensor, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Δ = x' - x = (keep - 1)·x + scale·O(x): scale·g (residual) or scale·(g - x) (convex), the
    rule read from θ as the model's rule head reads it (:meth:`UpdateRule.coefficients`)."""
    keep, scale = RULE.coefficients(theta)
    return (keep - 1) * x + scale * o


# ----------------------------------------------------------------------------- measures


@torch.no_grad()
def drift_sums(
    model: nn.Module, theta: torch.Tensor, states: torch.Tensor, maps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per operator, over its states at steps 0, T/4, T/2, 3T/4: Σ|Δ̂ - Δ|² and Σ|Δ|², Δ the
    noise-free CNO update and Δ̂ the model's (g through the rule): the shared one-step skill's sums
    (:func:`noa.diagnostics.skill.operator_sums`) for a model of g."""
    t = states.shape[1]
    picks = skill_steps(t)
    errors, references = [], []
    for s in range(0, theta.shape[0], 16):
        rows = slice(s, s + 16)
        x = states[rows][:, picks].flatten(0, 1)
        o = maps[rows][:, picks].flatten(0, 1)
        th = theta[rows].repeat_interleave(len(picks), 0)
        truth, guess = true_update(th, x, o), true_update(th, x, model(x, th))
        shape = (-1, len(picks), *x.shape[1:])
        e, r = operator_sums(guess.view(shape), truth.view(shape))
        errors.append(e)
        references.append(r)
    return torch.cat(errors), torch.cat(references)


def skill(
    model: nn.Module,
    theta: torch.Tensor,
    states: torch.Tensor,
    maps: torch.Tensor,
    statistic: Callable[[np.ndarray, np.ndarray], float] = pooled,
) -> dict[str, float]:
    """The drift skill per update rule: one-step skill on Δ, pooled over the operators (or
    another ``statistic`` of their sums, e.g. :func:`noa.diagnostics.skill.median`)."""
    error, reference = drift_sums(model, theta, states, maps)
    residual = RULE.residual(theta).cpu()
    out = {}
    for rule, pick in ((RESIDUAL, residual), (CONVEX, ~residual)):
        if pick.any():
            out[rule] = round(statistic(error[pick].numpy(), reference[pick].numpy()), 4)
    return dict(sorted(out.items()))


def loss_share(theta: torch.Tensor, states: torch.Tensor, maps: torch.Tensor) -> dict[str, float]:
    """Each rule's share of Σ|Δ|² over the pool: what plain MSE on the update listens to."""
    residual = RULE.residual(theta)
    per_row = torch.stack(
        [true_update(theta, states[:, t], maps[:, t]).pow(2).sum(dim=(1, 2, 3)) for t in range(states.shape[1])]
    ).sum(0)
    total = float(per_row.sum())
    return {
        "residual": round(float(per_row[residual].sum()) / total, 4),
        "convex": round(float(per_row[~residual].sum()) / total, 4),
    }


@torch.no_grad()
def sensitivity(theta: torch.Tensor, states: torch.Tensor, rows: int = 8, seed: int = 0) -> dict[str, float]:
    """Training-free difficulty of the map on states at steps 0, T/4, T/2, 3T/4 of the first
    ``rows`` pool rows (:func:`noa.families.difficulty.map_roughness`, medians over the states)."""
    t = states.shape[1]
    x = states[:rows][:, [0, t // 4, t // 2, 3 * t // 4]].flatten(0, 1)
    m = map_roughness(theta[:rows].repeat_interleave(4, 0), x, seed)
    return {
        "lipschitz": round(float(m.gain.median()), 4),
        "relative": round(float(m.relative.median()), 4),
        "high_fraction_map": round(float(m.high_fraction_map.median()), 4),
        "high_fraction_state": round(float(m.high_fraction_state.median()), 4),
    }


def parse_pins(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, object]:
    """The pinned θ dimensions, physical values parsed per kind; a bad pin is a usage error."""
    fixed: dict[str, object] = {}
    malformed = [pin for pin in args.fix if "=" not in pin]
    if malformed:
        p.error(f"--fix {malformed[0]}: expected NAME=VALUE")
    shorthand = [(k, v) for k, v in (("activation", args.activation), ("update_policy", args.update_policy)) if v]
    for name, value in [tuple(pin.split("=", 1)) for pin in args.fix] + shorthand:
        if name not in CNO_SPACE.names:
            p.error(f"--fix {name}: unknown dimension (one of {', '.join(CNO_SPACE.names)})")
        dim = CNO_SPACE.dims[CNO_SPACE.position(name)]
        try:
            parsed = int(value) if dim.kind == "int" else value if dim.kind == "choice" else float(value)
            dim.unit(parsed)
        except (ValueError, NoaError) as err:
            p.error(f"--fix {name}={value}: {err}")
        if name in fixed and fixed[name] != parsed:
            p.error(f"{name} is pinned twice, to {fixed[name]!r} and {parsed!r}")
        fixed[name] = parsed
    return fixed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rung", choices=("one", "combo", "family"), default="family")
    p.add_argument("--model", choices=("hyper", "uafno", "hybrid", "generated"), default="hyper")
    p.add_argument(
        "--theta-box",
        action="store_true",
        help="uafno, hybrid, generated: the θ embedding reads θ rescaled to --family's box, as `noa train` does",
    )
    p.add_argument(
        "--updates", type=int, default=None, help="stop after N updates (equal updates) instead of --minutes"
    )
    p.add_argument(
        "--n-train", type=int, default=512, help="operators in the training pool (rung one: initial conditions)"
    )
    p.add_argument("--per-rule", type=int, default=192, help="held-out operators of each update rule (the family rung)")
    p.add_argument(
        "--n-test",
        type=int,
        default=None,
        help="held-out rows of rungs one and combo (default 48; one: initial conditions)",
    )
    p.add_argument("--timesteps", type=int, default=32, help="rollout steps whose states are learned from")
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--activation", choices=ACTIVATIONS, default=None, help="pin the activation (rungs one and combo)")
    p.add_argument("--update-policy", choices=UPDATE_POLICIES, default=None, help="pin the update rule")
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pin a θ dimension in physical units, e.g. weight_gain=1.5 or kernel_size=5 (repeatable)",
    )
    p.add_argument("--family", default=None, help="draw θ inside a family (file or shipped name; default: uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tag", default=None, help="names the JSON summary in benchmarks/.work/")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = parse_pins(p, args)
    if args.rung == "family" and args.n_test is not None:
        p.error(
            "--n-test is for rungs one and combo; the family rung holds out --per-rule operators of each update rule"
        )
    if args.theta_box and not (args.family and args.model != "hyper"):
        p.error("--theta-box needs --family (the box is the family's) and --model uafno, hybrid or generated")
    if args.updates is not None and args.updates < 1:
        p.error(f"--updates must be >= 1; got {args.updates}")
    started = time.perf_counter()
    family = load_family(args.family) if args.family else None
    theta = draw_theta(args.n_train, args.seed, args.rung, None, fixed, family)
    held_out = held_out_theta(args, theta[0], fixed, family)
    states, maps = make_pool(theta, args.seed, args.grid, args.timesteps)
    test = rollouts(
        held_out,
        ic_seeds(args.seed + 1, len(held_out)),
        cycled_ic_kinds(len(held_out)),
        3,
        args.grid,
        32,
    ).picked(skill_steps(32))
    test_states, test_maps = test.states, test.maps
    bins = family or load_family("full")
    print(
        f"pool: {args.n_train} x {args.timesteps} training states, {len(held_out)} held out; "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    print(f"θ[0]: {CNO_SPACE.decode(theta[0])}", flush=True)
    sense = sensitivity(theta, states, seed=args.seed)
    print(f"sensitivity (training pool): {sense}", flush=True)
    share = loss_share(theta, states, maps)
    torch.manual_seed(args.seed)  # the candidate's initialisation (a benchmark, not library code)
    box = family.unit_box() if family is not None and args.theta_box else None
    model = (
        HyperStack()
        if args.model == "hyper"
        else UAFNOBranch(box, args.model, family_fields(CNO_SPACE, (family or FULL).unit_box()))
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    draw = torch.Generator().manual_seed(args.seed + 2)
    curve, updates, t0 = [], 0, time.perf_counter()
    update_seconds = 0.0  # in updates alone, without the skill evaluations
    next_report = 0.0
    budget = args.updates if args.updates is not None else 60 * args.minutes  # in updates or in seconds

    def spent() -> float:
        return updates if args.updates is not None else time.perf_counter() - t0

    while spent() < budget:
        elapsed = time.perf_counter() - t0
        started_update = time.perf_counter()
        rows = torch.randint(0, states.shape[0], (args.batch_size,), generator=draw)
        steps = torch.randint(0, states.shape[1], (args.batch_size,), generator=draw)
        loss = F.mse_loss(model(states[rows, steps], theta[rows]), maps[rows, steps])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        updates += 1
        update_seconds += time.perf_counter() - started_update
        if spent() >= next_report:
            model.eval()
            curve.append(
                {
                    "seconds": round(elapsed),
                    "updates": updates,
                    "held_out": skill(model, held_out, test_states, test_maps),
                    "training": skill(model, theta[:48], states[:48], maps[:48]),
                    "skill_on_o": headline(skill_on_o(model, test, bins, seed=args.seed)),
                }
            )
            model.train()
            print(json.dumps(curve[-1]), flush=True)
            next_report += budget / 5
    train_seconds = time.perf_counter() - t0
    model.eval()
    on_o = skill_on_o(model, test, bins, seed=args.seed)
    final = {
        "updates": updates,
        "seconds": round(train_seconds),
        "seconds_per_update": round(update_seconds / max(updates, 1), 4),
        "held_out": skill(model, held_out, test_states, test_maps),
        "training": skill(model, theta[:48], states[:48], maps[:48]),
        "skill_on_o": on_o,
    }
    print(json.dumps({k: v for k, v in final.items() if k != "skill_on_o"}), flush=True)
    print("\n".join(markdown(on_o)), flush=True)
    print(f"loss share of plain MSE on Δ over the training pool: {share}")
    summary = {
        "args": vars(args),
        "theta_0": CNO_SPACE.decode(theta[0]),
        "sensitivity": sense,
        "loss_share": share,
        "curve": curve,
        "final": final,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{args.rung}_{args.model}"
    (WORK / f"learnability_{tag}.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
