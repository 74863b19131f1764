"""How well a NOA learns the CNO family, on held-out θ, against floors that say what is possible.

A fixed recipe that a 2-core CPU finishes in under 45 minutes:

1. the 2000-operator dataset of ``tokenizer_quality.py`` (32x32, T = 32, seed 0; generated
   here when absent, reused otherwise);
2. a tokenizer with ``noa vqvae train``'s defaults trained on the first ``--train-samples``
   operators only (its own 10% validation split among them), so the tokens that score held-out
   θ come from a tokenizer that never saw those rollouts; made once per ``--train-samples``;
3. ``noa train`` on the same first ``--train-samples`` operators (a 5% validation split) for 2
   epochs with its defaults' shape: the family's update rule in the head and a one-step phase
   over the first half of the batches (noise-free one-step targets at unit scale), then full
   BPTT rollouts (window 32 = T) with the guide's loss weights (λ_commit 0.5, L_latent on with
   λ_latent 0.5, 3 sampled steps);
4. ``noa diagnose``'s evaluation on ``--eval-samples`` operators beyond ``--train-samples``
   (held-out θ that neither the NOA nor the tokenizer read), three times: the NOA, the NOA fed
   θ = 0 (the θ-zeroed ablation) and, from the same pass, persistence (x_t = IC); then the CNO
   itself as the prediction (another realization; the mean of 8 others), and per update rule
   the NOA against persistence and its one-step skill;
5. the skill on O and the one-step skill (:mod:`noa.diagnostics.skill`) on ``--fresh-per-rule``
   (192) fresh operators of each update rule: median over operators and pooled, with 90%
   intervals and bins by gain third and activation.

Reported: MSE / noise floor at steps 1, T/4, T/2, T and averaged over the horizon (mean MSE /
mean floor), overall and per update rule, with the median over operators of each one's own
horizon-mean ratio; the family floor (= noise floor when θ identifies the operator); VRMSE
(median over samples, the mean beside it); token agreement with CNO realization 0 against the
CNO-vs-CNO reference (realization 0 vs 1), judged on the non-INITIAL codebooks (INITIAL encodes
the IC and agrees by construction), the all-codebook figure beside it. The targets: horizon-mean
MSE ≤ 2× the noise floor overall and per update rule, one-step skill ≥ 0.8 per update rule,
non-INITIAL token agreement ≥ 75% of the reference's.

    python benchmarks/quality.py --threads 1                        # the recipe: about 40 min with data + tokenizer
    python benchmarks/quality.py --threads 1 --epochs 1 --bptt-window 8 --tag before   # a variant; --tag names its run
    python benchmarks/quality.py --threads 1 --tag baseline --eval-only epoch_1.pt  # re-evaluate a checkpoint
    python benchmarks/quality.py --threads 1 --family spinlock --tag spinlock       # another family's recipe
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from noa.api.tokens import load_tokenizer
from noa.data.generate import GenerateConfig, generate
from noa.data.loader import SampleSource
from noa.diagnostics.evaluate import evaluate, held_out_rows, update_rules
from noa.diagnostics.held_out import held_out_operators
from noa.diagnostics.rollout_quality import RolloutQuality, StepErrors, report_horizons, step_errors, summarize
from noa.diagnostics.skill import (
    ONE_STEP_SKILL,
    SKILL_ON_O,
    OperatorSkills,
    markdown,
    one_step_sums,
    rollout_states,
    step_tables,
)
from noa.errors import NoaError
from noa.families import FULL, OperatorFamily, load_family
from noa.model.uafno import BACKBONES
from noa.operators.replay import replay
from noa.operators.space import CNO_SPACE
from noa.tokenizer.job import train_tokenizer_on_dataset
from noa.train.checkpoint import build_model, load_checkpoint

WORK = Path(__file__).resolve().parent / ".work"
DATA = dict(n_samples=2000, grid=32, timesteps=32, seed=0)
TARGET_RATIO, TARGET_AGREEMENT, TARGET_SKILL = 2.0, 0.75, 0.8
FRESH_SEED = 424242  # the fresh operators' θ and IC seed: no dataset here is generated with it


def ensure_dataset(family: OperatorFamily) -> Path:
    """The recipe's dataset of ``family``, made once (the full family's is tokenizer_quality.py's:
    same name, same content)."""
    suffix = "" if family == FULL else f"_{family.name}"
    path = WORK / f"cno_n{DATA['n_samples']}_g{DATA['grid']}_t{DATA['timesteps']}_s{DATA['seed']}{suffix}.h5"
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        config = GenerateConfig(**DATA, family=family.as_dict())
        generate(config, path, batch_size=16, resume=partial.exists(), progress=False)
    return path


def ensure_tokenizer(dataset: Path, device: str, train_samples: int) -> Path:
    """noa vqvae train's defaults (seed 0, 10% held out) on the first ``train_samples`` rows only:
    the NOA's rows. Its own directory, so a tokenizer trained on every row is never reused."""
    out = WORK / f"tokenizer_{dataset.stem}_first{train_samples}"
    if not (out / "config.json").exists():
        train_tokenizer_on_dataset(
            dataset, out, seed=0, device=device, val_split=0.1, n_samples=train_samples, overwrite=True, progress=False
        )
    return out


def evaluation_rows(dataset: Path, args: argparse.Namespace) -> list[int]:
    """``--eval-samples`` rows beyond ``--train-samples`` (seeded), which neither the NOA nor the
    tokenizer read; with ``--on-training-rows``, the first of the NOA's training rows instead."""
    if args.on_training_rows:  # the same measures on θ the NOA trained on: underfitting or generalisation?
        from noa.data.loader import split_rows, usable_rows

        return [
            int(r) for r in split_rows(usable_rows(dataset, args.train_samples), 0.05, 0).train[: args.eval_samples]
        ]
    beyond = {"n_samples": args.train_samples, "val_split": 0.0, "seed": 0}
    rows, _ = held_out_rows(dataset, beyond, args.eval_samples, 0, same_data=True)
    return [int(r) for r in rows]


def train_noa(dataset: Path, tokenizer: Path, args: argparse.Namespace, run_dir: Path) -> Path:
    from noa.train.loop import train

    flags = dict(
        dataset=str(dataset),
        vqvae_path=str(tokenizer),
        checkpoint_dir=str(run_dir),
        n_samples=args.train_samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        bptt_window=args.bptt_window,
        timesteps=DATA["timesteps"],
        warmup_steps=args.warmup_steps,
        base_channels=args.base_channels,
        encoder_levels=args.encoder_levels,
        modes=args.modes,
        afno_blocks=args.afno_blocks,
        backbone=args.backbone,
        projector_hidden=128,
        lambda_commit=0.5,
        enable_latent_loss=True,
        lambda_latent=0.5,
        latent_sample_steps=3,
        n_realizations=args.n_realizations,
        teacher_forcing_steps=args.teacher_forcing_steps,
        rule_head=not args.no_rule_head,
        val_split=0.05,
        save_every=0,
        log_every=50,
        seed=0,
        device=args.device,
        overwrite=True,
    )
    if args.one_step_steps is not None:  # else noa train's default: the first half of the run
        flags["one_step_steps"] = args.one_step_steps
    train(flags)  # its lines go to the "noa.train" logger, printed by main()
    return run_dir / "best_model.pt"


def _replayed_batches(
    dataset: Path, rows: list[int], realizations: int, device: str
) -> Iterator[tuple[dict, torch.Tensor]]:
    """The rows' samples, 8 at a time, with their CNO replays ``[B, M, T+1, C, H, W]``."""
    source = SampleSource(dataset, rows)
    try:
        for start in range(0, len(rows), 8):
            batch = source.get_batch(list(range(start, min(start + 8, len(rows)))))
            seeds = batch["seed"].tolist()
            yield (
                batch,
                replay(
                    batch["params"],
                    batch["ic"].to(device),
                    seeds,
                    DATA["timesteps"],
                    realizations=realizations,
                    device=device,
                ),
            )
    finally:
        source.close()


def cno_predictors(rows: list[int], tokenizer: Path, dataset: Path, mean_of: int, device: str) -> dict:
    """What the CNO itself scores when used as the prediction, on the NOA's held-out rows.

    * one more realization (number 2) of the same operator: a perfect *stochastic* emulator,
      whose rollouts are statistically the CNO's; MSE / noise floor 2 in expectation and the
      token agreement of the reference.
    * the mean of ``mean_of`` further realizations (2, 3, ...): near the conditional mean, the
      best any *deterministic* predictor can do on MSE (1 + 1/mean_of times the floor in
      expectation); its token agreement says what an MSE-optimal NOA can reach.
    """
    vq = load_tokenizer(tokenizer, device=device)  # the public API's tokens: the codes noa diagnose counts
    categories = [category for category, _ in vq.entries]
    parts: dict[str, list] = {"one": [], "mean": [], "tok_one": [], "tok_mean": [], "tok_0": [], "tok_1": []}
    with torch.no_grad():
        for _, cno in _replayed_batches(dataset, rows, 2 + mean_of, device):
            one, mean = cno[:, 2], cno[:, 2:].mean(dim=1)
            parts["one"].append(step_errors(one, cno[:, :2]))
            parts["mean"].append(step_errors(mean, cno[:, :2]))
            for key, frames in (("tok_one", one), ("tok_mean", mean), ("tok_0", cno[:, 0]), ("tok_1", cno[:, 1])):
                parts[key].append(vq.tokens(frames).cpu())
    tok = {key: torch.cat(parts[key]) for key in ("tok_one", "tok_mean", "tok_0", "tok_1")}
    return {
        name: _row(
            summarize(
                StepErrors.concat(parts[kind]), tok[f"tok_{kind}"], tok["tok_0"], tok["tok_1"], categories=categories
            ),
            report_horizons(DATA["timesteps"]),
        )
        for name, kind in (("cno_one", "one"), ("cno_mean", "mean"))
    }


def by_update_policy(q: RolloutQuality, errors: StepErrors, rules: list[str] | None) -> dict:
    """Horizon-mean MSE of the NOA and of persistence per update rule (residual x + dt·O(x) drifts
    steadily, convex α·x + (1-α)·O(x) relaxes towards O(x)): which behaviour the NOA has learned.
    The ratios to the noise floor are the diagnosis's own (``q.by_rule``); empty without rules."""
    out = {}
    for policy, g in (q.by_rule or {}).items():
        pick = torch.tensor([r == policy for r in rules or []])
        noa, persistence = errors.mse[pick], errors.persistence[pick]
        out[policy] = {
            "operators": g.operators,
            "noa_to_floor": g.ratio,
            "median_noa_to_floor": g.median_operator_ratio,
            "persistence_to_floor": g.persistence_ratio,
            "noa_to_persistence": float(noa.mean() / persistence.mean()),
            "median_noa_to_persistence": float((noa.mean(dim=1) / persistence.mean(dim=1)).median()),
        }
    return out


@torch.no_grad()
def one_step_skill(checkpoint: Path, rows: list[int], dataset: Path, device: str, family: OperatorFamily) -> dict:
    """Has the NOA learned each operator's step? The shared one-step skill
    (:mod:`noa.diagnostics.skill`: against the CNO's noise-free step, on states of CNO realization
    0 at steps 0, T/4, T/2 and 3T/4) on the evaluation rows, per update rule with bins by gain third
    and activation: the table this benchmark has reported as its "one-step skill" (a skill on the
    update Δ, weighted by dt² on residual operators)."""
    model, _ = build_model(load_checkpoint(checkpoint), device)
    theta, errors, references = [], [], []
    for batch, cno_frames in _replayed_batches(dataset, rows, 1, device):
        error, reference = one_step_sums(
            model, batch["params"], rollout_states(cno_frames[:, 0], DATA["timesteps"]), space=family.space
        )
        theta.append(batch["params"])
        errors.append(error)
        references.append(reference)
    sums = OperatorSkills.of(family, torch.cat(theta), torch.cat(errors), torch.cat(references))
    return sums.table(family, seed=0)


@torch.no_grad()
def fresh_skills(checkpoint: Path, family: OperatorFamily, per_rule: int, device: str) -> dict:
    """Both shared skills on ``per_rule`` fresh operators of each update rule (θ from a seed no
    dataset here uses, one IC each, noise-free targets), at the recipe's grid and T: ``one_step``
    and ``skill_on_o`` tables."""
    model, _ = build_model(load_checkpoint(checkpoint), device)
    held = held_out_operators(family, per_rule, FRESH_SEED, 3, DATA["grid"], DATA["timesteps"], device)
    tables = step_tables(model, family, held.theta, held.states)
    return {"per_rule": per_rule, **tables}


def _row(q: RolloutQuality, horizons: list[int]) -> dict:
    """A predictor's held-out figures: ratios to the noise floor, VRMSE, token agreement."""
    return {
        "ratio_at": _at(q.floor_ratio, horizons),
        "ratio_mean": q.overall_ratio,
        "median_operator_ratio": q.median_operator_ratio,
        "vrmse_at": _at(q.vrmse, horizons),
        "vrmse_mean": q.overall_vrmse,
        "vrmse_median_at": _at(q.vrmse_median, horizons),
        "vrmse_median": q.overall_vrmse_median,
        "vrmse_frames_inflated": q.vrmse_frames_inflated,
        "vrmse_frames": q.vrmse_frames,
        **_agreements(q, q.token_agreement, q.token_agreement_non_initial),
    }


def _agreements(q: RolloutQuality, every: float | None, judged: float | None) -> dict:
    """Token agreement on every codebook (the keys of earlier summaries) and on the judged,
    non-INITIAL ones, each with its share of the matching CNO-vs-CNO reference."""
    ref, ref_judged = q.token_agreement_reference, q.token_agreement_reference_non_initial
    return {
        "token_agreement": every,
        "agreement_vs_reference": every / ref if every is not None and ref else None,
        "token_agreement_non_initial": judged,
        "agreement_vs_reference_non_initial": judged / ref_judged if judged is not None and ref_judged else None,
    }


def _at(values: list, steps: list[int]) -> list:
    return [values[s - 1] for s in steps]


def measure(checkpoint: Path, tokenizer: Path, dataset: Path, args: argparse.Namespace) -> dict:
    """The held-out figures of the NOA, its θ-zeroed self and persistence."""
    horizons = report_horizons(DATA["timesteps"])
    out: dict = {"horizons": horizons}
    rows = evaluation_rows(dataset, args)
    for name, zero in (("noa", False), ("theta_zeroed", True)):
        evaluation = evaluate(
            checkpoint,
            tokenizer,
            dataset,
            n_samples=args.eval_samples,
            device=args.device,
            seed=0,
            batch_size=8,
            zero_theta=zero,
            rows=rows,
            log=lambda _: None,
        )
        result, q = evaluation.result, evaluation.result.rollout
        out[name] = _row(q, horizons)
        if not zero:
            out["by_policy"] = by_update_policy(
                q, evaluation.data.errors, update_rules(dataset, CNO_SPACE, result.rows)
            )
            family = load_family(args.family)
            skills = one_step_skill(checkpoint, result.rows, dataset, args.device, family)
            out["one_step_skill_by_kind"] = {
                f"{policy} {label}": (entry["pooled"], entry["operators"])
                for policy, table in skills.items()
                for kind in ("activation", "gain")
                for label, entry in table[kind].items()
            }
            for policy, table in skills.items():
                out["by_policy"].setdefault(policy, {})["one_step_skill"] = table["all"]["pooled"]
                out["by_policy"][policy]["median_operator_one_step_skill"] = table["all"]["median"]
            if args.fresh_per_rule:
                out["fresh"] = fresh_skills(checkpoint, family, args.fresh_per_rule, args.device)
            out.update(cno_predictors(result.rows, tokenizer, dataset, args.mean_of, args.device))
            out["persistence"] = {
                "ratio_at": _at(q.persistence_ratio, horizons),
                "ratio_mean": q.overall_persistence_ratio,
                "vrmse_median_at": _at(q.vrmse_persistence_median, horizons),
                "vrmse_at": _at(q.vrmse_persistence, horizons),
                "vrmse_mean": float(sum(q.vrmse_persistence) / len(q.vrmse_persistence)),
                **_agreements(q, q.token_agreement_persistence, q.token_agreement_persistence_non_initial),
            }
            out["floors"] = {
                "noise_at": _at(q.floor, horizons),
                "family_at": _at(q.family_floor, horizons),
                "family_to_noise": q.family_to_noise,
                "vrmse_floor_at": _at(q.vrmse_floor, horizons),
                "token_agreement_reference": q.token_agreement_reference,
                "token_agreement_reference_non_initial": q.token_agreement_reference_non_initial,
            }
    return out


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_table(m: dict) -> None:
    h = m["horizons"]
    f = m["floors"]
    print(
        f"\n{m.get('rows', 'held-out θ')}; floors at steps {h}: noise {', '.join(f'{v:.4g}' for v in f['noise_at'])}; "
        f"family {', '.join(f'{v:.4g}' for v in f['family_at'])} (family/noise over the horizon {f['family_to_noise']:.2f})"
    )
    print(
        f"token agreement CNO realization 0 vs 1 (reference): {_pct(f['token_agreement_reference_non_initial'])} of the "
        f"non-INITIAL codes (all codebooks {_pct(f['token_agreement_reference'])})"
    )
    head = " | ".join(f"MSE/noise @{s}" for s in h)
    print(f"floor VRMSE at steps {h}: {', '.join(f'{v:.3f}' for v in f['vrmse_floor_at'])}")
    print(
        "token agreement is judged on the non-INITIAL codebooks (INITIAL encodes the IC and agrees by construction); "
        "all codebooks in brackets"
    )
    print(
        f"| model | {head} | MSE/noise, horizon mean | median over operators | VRMSE median / mean (frames > 10) "
        f"| VRMSE @{h[-1]} median / mean | token agreement | vs reference |"
    )
    print("|---|" + "---:|" * (len(h) + 6))
    labels = (
        ("noa", "NOA"),
        ("theta_zeroed", "NOA, θ = 0"),
        ("persistence", "persistence"),
        ("cno_one", "CNO, one other realization (perfect stochastic emulator)"),
        ("cno_mean", f"CNO, mean of {m['recipe']['mean_of']} other realizations (≈ best deterministic predictor)"),
    )
    for name, label in labels:
        r = m[name]
        ratios = " | ".join(f"{v:.2f}" for v in r["ratio_at"])
        overall = (
            f"{r['vrmse_median']:.3f} / {r['vrmse_mean']:.3f} ({r['vrmse_frames_inflated']} of {r['vrmse_frames']})"
            if "vrmse_median" in r
            else f"n/a / {r['vrmse_mean']:.3f}"
        )
        print(
            f"| {label} | {ratios} | **{r['ratio_mean']:.2f}** | {_num(r.get('median_operator_ratio'))} | {overall} | "
            f"{r['vrmse_median_at'][-1]:.3f} / {r['vrmse_at'][-1]:.3f} | "
            f"{_pct(r['token_agreement_non_initial'])} ({_pct(r['token_agreement'])}) | "
            f"**{_pct(r['agreement_vs_reference_non_initial'], 0)}** ({_pct(r['agreement_vs_reference'], 0)}) |"
        )
    print(
        "\n| update policy | operators | NOA / noise floor | median over operators | persistence / noise floor "
        "| NOA / persistence | median over operators | one-step skill | median over operators |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for policy, r in m["by_policy"].items():
        print(
            f"| {policy} | {r.get('operators', 0)} | {_num(r.get('noa_to_floor'))} | {_num(r.get('median_noa_to_floor'))} | "
            f"{_num(r.get('persistence_to_floor'))} | {_num(r.get('noa_to_persistence'))} | "
            f"{_num(r.get('median_noa_to_persistence'))} | {_num(r.get('one_step_skill'))} | "
            f"{_num(r.get('median_operator_one_step_skill'))} |"
        )
    if m.get("one_step_skill_by_kind"):
        print("\n| operators | count | one-step skill (pooled) |\n|---|---:|---:|")
        for key, (value, count) in m["one_step_skill_by_kind"].items():
            print(f"| {key} | {count} | {_num(value)} |")
    if m.get("fresh"):
        per_rule = m["fresh"]["per_rule"]
        for name, key in ((SKILL_ON_O, "skill_on_o"), (ONE_STEP_SKILL, "one_step")):
            print(f"\n{name} on {per_rule} fresh operators of each update rule (noise-free targets):")
            print("\n".join(markdown(m["fresh"][key], name)))
    for line in target_lines(m):
        print(line)


def target_lines(m: dict) -> list[str]:
    """The targets, each met or MISSED: horizon-mean MSE ≤ 2× the noise floor overall and per
    update rule, one-step skill ≥ 0.8 per update rule, non-INITIAL token agreement ≥ 75% of the
    reference's."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    noa, rules = m["noa"], m["by_policy"]
    ratios = {policy: r.get("noa_to_floor") for policy, r in rules.items()}
    skills = {policy: r.get("one_step_skill") for policy, r in rules.items()}
    agreement = noa["agreement_vs_reference_non_initial"]
    per_rule = ", ".join(f"{policy} {_num(v)}" for policy, v in ratios.items()) or "no update rules"
    per_skill = ", ".join(f"{policy} {_num(v)}" for policy, v in skills.items()) or "no update rules"
    return [
        f"target: horizon-mean MSE/noise <= {TARGET_RATIO} overall ({_num(noa['ratio_mean'])}): "
        f"{verdict(noa['ratio_mean'] is not None and noa['ratio_mean'] <= TARGET_RATIO)}",
        f"target: horizon-mean MSE/noise <= {TARGET_RATIO} per update rule ({per_rule}): "
        f"{verdict(bool(ratios) and all(v is not None and v <= TARGET_RATIO for v in ratios.values()))}",
        f"target: one-step skill >= {TARGET_SKILL} per update rule ({per_skill}): "
        f"{verdict(bool(skills) and all(v is not None and v >= TARGET_SKILL for v in skills.values()))}",
        f"target: non-INITIAL token agreement >= {100 * TARGET_AGREEMENT:.0f}% of the reference's ({_pct(agreement, 0)}): "
        f"{verdict(agreement is not None and agreement >= TARGET_AGREEMENT)}",
    ]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-samples", type=int, default=1800, help="operators for training + validation; default 1800")
    p.add_argument("--eval-samples", type=int, default=96, help="held-out operators evaluated; default 96")
    p.add_argument(
        "--epochs", type=int, default=2, help="passes over the operators: ~15 min each at 4 s/batch on the 2-core CPU"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument(
        "--bptt-window",
        type=int,
        default=32,
        help="32 = T: full BPTT (measured better than 8, at the same speed on a CPU)",
    )
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--encoder-levels", type=int, default=2)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--afno-blocks", type=int, default=2)
    p.add_argument(
        "--backbone",
        choices=tuple(b for b in BACKBONES if b != "generated"),  # the recipe's L_latent reads the U-AFNO's bottleneck
        default="uafno",
        help="noa train's --backbone: the U-AFNO or the θ-generated stack beside it (hybrid)",
    )
    p.add_argument("--n-realizations", type=int, default=1, help="CNO realizations averaged into the training target")
    p.add_argument(
        "--teacher-forcing-steps", type=int, default=0, help="batches whose windows start from the CNO's states"
    )
    p.add_argument(
        "--one-step-steps",
        type=int,
        default=None,
        help="batches of the one-step phase (noise-free one-step targets at unit scale); default: noa train's, half the run",
    )
    p.add_argument(
        "--no-rule-head", action="store_true", help="the additive head x + f (the model before the rule head)"
    )
    p.add_argument(
        "--mean-of", type=int, default=8, help="CNO realizations averaged into the best-deterministic-predictor row"
    )
    p.add_argument("--family", default="full", help="the operator family (file or shipped name); default full")
    p.add_argument(
        "--fresh-per-rule",
        type=int,
        default=192,
        help="fresh operators of each update rule for the skill on O (0: skip it)",
    )
    p.add_argument("--tag", default="baseline", help="names the run directory and the JSON summary")
    p.add_argument(
        "--eval-only", default=None, metavar="FILE", help="only evaluate this checkpoint of the run (e.g. epoch_1.pt)"
    )
    p.add_argument("--on-training-rows", action="store_true", help="evaluate on training θ instead of held-out θ")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        dataset = ensure_dataset(load_family(args.family))
        tokenizer = ensure_tokenizer(dataset, args.device, args.train_samples)
        prepared = time.perf_counter()
        run_dir = WORK / f"quality_{args.tag}"
        checkpoint = run_dir / args.eval_only if args.eval_only else train_noa(dataset, tokenizer, args, run_dir)
        trained = time.perf_counter()
        m = measure(checkpoint, tokenizer, dataset, args)
    except NoaError as err:
        raise SystemExit(f"error: {err}") from None
    m["seconds"] = {
        "data_and_tokenizer": prepared - started,
        "training": trained - prepared,
        "evaluation": time.perf_counter() - trained,
    }
    m["rows"] = "training θ" if args.on_training_rows else "held-out θ"
    m["recipe"] = {k: v for k, v in vars(args).items() if k not in ("threads", "eval_only", "on_training_rows")}
    print_table(m)
    print(
        f"wall time: data + tokenizer {m['seconds']['data_and_tokenizer']:.0f} s, training {m['seconds']['training']:.0f} s, "
        f"evaluation {m['seconds']['evaluation']:.0f} s"
    )
    suffix = (f"_{Path(args.eval_only).stem}" if args.eval_only else "") + (
        "_training_rows" if args.on_training_rows else ""
    )
    (WORK / f"quality_{args.tag}{suffix}.json").write_text(json.dumps(m, indent=2) + "\n")


if __name__ == "__main__":
    main()
