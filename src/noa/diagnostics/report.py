"""`noa diagnose`: present a diagnosis from :mod:`.evaluate` as text, files and figures.

The printed text is the guide's report; ``report.md`` opens with the run's configuration and
repeats the text with the plots (:mod:`.plots`) and full tables, and ``summary.json`` holds every number exactly (the text
rounds them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from noa import outputs
from noa.coverage import trained_on_text
from noa.data.ics import IC_KINDS_KEY
from noa.diagnostics import alignment as guide
from noa.diagnostics import plots
from noa.diagnostics import verdict as rating
from noa.diagnostics.curves import TrainingCurves
from noa.diagnostics.evaluate import SKIP_REASON, DiagnosticsResult, _Collected, evaluate
from noa.diagnostics.rollout_quality import INITIAL, VRMSE_INFLATED, RolloutQuality
from noa.diagnostics.skill import ONE_STEP_DEFINITION
from noa.errors import NoaError
from noa.runtime import resolve_device

__all__ = [
    "SKIP_REASON",
    "DiagnosticsResult",
    "add_diagnose_arguments",
    "diagnose",
    "format_report",
    "run_diagnose",
    "write_report",
]

RULE = "=" * 60
SEPARATOR = "-" * 60


def diagnose(
    noa_checkpoint: str | Path,
    vqvae_path: str | Path | None,
    dataset: str | Path | None,
    *,
    n_samples: int = 100,
    timesteps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    no_tokens: bool = False,
    vqvae_class: str | type | None = None,
    log: Callable[[str], None] = print,
) -> DiagnosticsResult:
    """Evaluate a checkpoint; log the report; write ``out_dir`` when given.

    ``vqvae_path`` / ``dataset`` default (None) to the ones recorded in the checkpoint's args.
    ``timesteps`` defaults to the training run's T, else the dataset's; at another T than the
    tokenizer's (or with ``no_tokens``) the token sections are skipped, the rollout measures run.
    ``vqvae_class``: the class that loads a tokenizer not noa's own (``--vqvae-class``).
    """
    # One diagnosis per --out at a time: a second is refused rather than interleaving its files.
    with outputs.exclusive(out_dir, "--out") if out_dir is not None else nullcontext():
        return _diagnose(
            noa_checkpoint,
            vqvae_path,
            dataset,
            n_samples=n_samples,
            timesteps=timesteps,
            device=device,
            seed=seed,
            out_dir=None if out_dir is None else Path(out_dir),
            batch_size=batch_size,
            no_tokens=no_tokens,
            vqvae_class=vqvae_class,
            log=log,
        )


def _diagnose(
    noa_checkpoint: str | Path,
    vqvae_path: str | Path | None,
    dataset: str | Path | None,
    *,
    n_samples: int,
    timesteps: int | None,
    device: str,
    seed: int,
    out_dir: Path | None,
    batch_size: int,
    no_tokens: bool,
    vqvae_class: str | type | None,
    log: Callable[[str], None],
) -> DiagnosticsResult:
    if out_dir is not None:
        check_report_dir(out_dir)
        if out_dir.is_dir():
            outputs.remove_stale_temporaries(out_dir)  # a killed diagnosis's; we hold the lock
    run = evaluate(
        noa_checkpoint,
        vqvae_path,
        dataset,
        n_samples=n_samples,
        timesteps=timesteps,
        device=device,
        seed=seed,
        batch_size=batch_size,
        no_tokens=no_tokens,
        vqvae_class=vqvae_class,
        log=log,
    )
    result = run.result
    result.text = format_report(result)
    log(result.text)
    if out_dir is not None:
        written = write_report(result, run.data, run.times, run.curves, run.frame_labels, out_dir)
        log(f"Report written to {written}")
    return result


# ---- text ------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _tokenizer_text(r: DiagnosticsResult) -> str:
    """The tokenizer's directory, and its class when it is not noa's own."""
    if r.tokenizer is None:
        return "none"
    return r.tokenizer + (f" (class {r.tokenizer_class})" if r.tokenizer_class else "")


def format_report(r: DiagnosticsResult) -> str:
    """The guide's report (header, four sections, summary, verdict), then rollout quality and the scale."""
    lines = [RULE, "L_latent Alignment Diagnostics", RULE, ""]
    lines += [f"Checkpoint: {r.checkpoint}", f"Tokenizer:  {_tokenizer_text(r)}", f"Dataset:    {r.dataset}"]
    family = r.run.get("data", {}).get("operator_family", {}).get("name")
    if family:
        lines.append(f"Family:     {family} (the dataset's operator family; `noa family show {r.dataset}` prints it)")
    if r.trained_on:
        lines.append(f"Trained on: {trained_on_text(r.trained_on)}")
    lines.append(f"Samples:    {r.n_samples} held-out, T={r.timesteps}")
    lines += [f"WARNING: {warning}" for warning in [*r.warnings, *r.coverage]]
    lines += [f"note: {note}" for note in r.notes]
    lines += ["", "1. VQ Reconstruction Quality", *_reconstruction_lines(r)]
    lines += ["", "2. Token Diversity", *_diversity_lines(r)]
    lines += ["", "3. Alignment Correlation", *_alignment_lines(r)]
    lines += ["", "4. Temporal Consistency", *_consistency_lines(r)]
    lines += ["", "Overall Summary"]
    lines += [f"{name + ':':<24}{word or 'skipped'}" for name, word in r.assessments.items()]
    lines += ["", f"➜ Final Verdict: {r.verdict}", *_verdict_lines(r)]
    lines += ["", SEPARATOR, *_rollout_lines(r), "", *_scale_lines()]
    return "\n".join(lines)


def _skipped(r: DiagnosticsResult, section: str) -> list[str]:
    """A skipped section's one line: the reason, so a reader knows what to pass to get it."""
    return [f"skipped: {r.skipped[section]}"]


def _reconstruction_lines(r: DiagnosticsResult) -> list[str]:
    rec = r.reconstruction
    if rec is None:
        return _skipped(r, "VQ Reconstruction")
    lines = [f"Total MSE: {rec.total:.4f}", "Per-category reconstruction errors:"]
    lines += [f"  {category.upper():<12}: {value:.4f}" for category, value in rec.per_category.items()]
    return [*lines, f"➜ Quality Assessment: {rec.assessment}"]


def _diversity_lines(r: DiagnosticsResult) -> list[str]:
    div = r.diversity
    if div is None:
        return _skipped(r, "Token Diversity")
    lines = [
        f"Overall utilization: {100 * div.utilization:.1f}% ({div.used}/{div.total} codes)",
        f"Token entropy: {div.entropy_bits:.2f} bits (mean over {len(div.codebooks)} codebooks; "
        f"at most {div.entropy_ceiling_bits:.2f} with {r.n_samples} samples)",
    ]
    reachable = sum(min(r.n_samples, book.size) for book in div.codebooks)
    if reachable < div.total:
        lines.append(
            f"note: {r.n_samples} samples can use at most {reachable} of the {div.total} codes "
            f"({100 * reachable / div.total:.1f}%); evaluate more samples for a fuller picture"
        )
    return [*lines, f"➜ Diversity Assessment: {div.assessment}"]


def _alignment_lines(r: DiagnosticsResult) -> list[str]:
    a = r.alignment
    if a is None:
        return _skipped(r, "Alignment Correlation")
    return [
        f"Cosine similarity: {a.cosine_mean:.3f} ± {a.cosine_std:.3f}",
        f"L_latent (MSE): {a.latent_mse:.3f}",
        f"(projector latents averaged over steps {a.sampled_steps} vs cat(encode(features)))",
        f"➜ Correlation Assessment: {a.assessment}",
    ]


def _consistency_lines(r: DiagnosticsResult) -> list[str]:
    c = r.consistency
    if c is None:
        return _skipped(r, "Temporal Consistency")
    return [
        f"Latent norm: {c.norm_mean:.3f} ± {c.norm_std:.3f}",
        f"Coefficient of variation: {c.cv:.3f}",
        f"➜ Consistency Assessment: {c.assessment}",
    ]


def _verdict_lines(r: DiagnosticsResult) -> list[str]:
    """Why the verdict is what it is: each criterion's rating and which one decided."""
    v = r.verdict_detail
    decided = ", ".join(v.decided_by) or "nothing (no criterion could be evaluated)"
    lines = [f"  decided by: {decided} (the verdict is the lowest rating among these criteria)"]
    width = max(len(c.name) for c in v.criteria) + 1
    lines += [f"  {c.name + ':':<{width}} {c.detail}" for c in v.criteria]
    lines += [f"  next ({c.name}): {c.advice}" for c in v.criteria if c.advice]
    return lines


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "n/a" if value is None else format(value, fmt)


def _family_words(ratio: float) -> str:
    """What a family/noise floor ratio says about θ (sampling error allowed for)."""
    if ratio > 1.33:
        return "θ does not identify the operator: a perfect θ-conditioned model scores this ratio, not 1"
    if ratio < 0.75:
        return "well below 1, which only sampling error can explain; evaluate more samples"
    return "about 1: consistent with θ identifying the operator"


def _rollout_lines(r: DiagnosticsResult) -> list[str]:
    q = r.rollout
    lines = [
        "5. Rollout Quality (NOA vs CNO ground truth)",
        "Every MSE is against CNO realization 0 of the sample's (θ, IC). Floors are estimates of the least",
        "MSE any deterministic predictor can reach:",
        "  noise floor  = MSE(realization 0, realization 1 of the same operator) / 2",
        "  family floor = MSE(realization 0, another draw of the family at the same θ) / 2",
        "  persistence  = MSE of the IC held constant (the trivial baseline)",
        "A perfect θ-conditioned model (the mean rollout given θ and the IC) scores MSE = family floor,",
        "i.e. NOA/noise = family/noise; when θ identifies the operator that is NOA/noise = 1 (up to",
        "sampling error), and NOA/noise = 2 means twice the error the CNO's own noise forces.",
        f"  {'step':>5}  {'noise floor':>11}  {'family floor':>12}  {'persistence':>11}  {'NOA MSE':>10}  "
        f"{'NOA/noise':>9}  {'persist/noise':>13}",
    ]
    for t in q.horizons:
        i = t - 1
        lines.append(
            f"  {t:>5}  {q.floor[i]:>11.4g}  {_num(q.family_floor[i]):>12}  {q.persistence[i]:>11.4g}  {q.mse[i]:>10.4g}  "
            f"{_ratio(q.floor_ratio[i]):>9}  {_ratio(q.persistence_ratio[i]):>13}"
        )
    lines += [
        "Scale-free (the_well's definitions, per channel, then averaged): nRMSE = RMSE / RMS(CNO frame),",
        "VRMSE = RMSE / std(CNO frame); VRMSE 1 = predicting each frame's spatial mean; 'floor' = a perfect model's.",
        "VRMSE figures are medians over samples: a nearly uniform CNO frame (tiny std) makes any error huge, so the",
        "mean (beside it) says more about those frames than about the model.",
        f"  {'step':>5}  {'NOA nRMSE':>9}  {'NOA VRMSE':>9}  {'(mean)':>8}  {'persist VRMSE':>13}  {'floor VRMSE':>11}",
    ]
    for t in q.horizons:
        i = t - 1
        lines.append(
            f"  {t:>5}  {q.nrmse[i]:>9.3f}  {q.vrmse_median[i]:>9.3f}  {q.vrmse[i]:>8.3f}  "
            f"{q.vrmse_persistence_median[i]:>13.3f}  {q.vrmse_floor_median[i]:>11.3f}"
        )
    identifies = "n/a" if q.family_to_noise is None else f"{q.family_to_noise:.2f} ({_family_words(q.family_to_noise)})"
    lines += [
        f"Family floor / noise floor over all steps: {identifies}",
        f"Overall: MSE {q.overall_mse:.4g}, nRMSE {q.overall_nrmse:.3f}, VRMSE median {q.overall_vrmse_median:.3f} "
        f"(mean {q.overall_vrmse:.3f}; {q.vrmse_frames_inflated} of {q.vrmse_frames} frames have VRMSE > {VRMSE_INFLATED:g}), "
        f"noise floor {q.overall_floor:.4g}, MSE/floor {_ratio(q.overall_ratio)} (horizon-averaged: mean MSE / mean floor; "
        f"persistence {_ratio(q.overall_persistence_ratio)})",
        f"Per operator (each one's horizon-averaged ratio, median over operators): MSE/persistence "
        f"{_ratio(q.median_operator_persistence)} (robust; below 1 beats holding the IC); MSE/floor "
        f"{_ratio(q.median_operator_ratio)} (led by operators whose nearly noise-free CNO has a tiny floor, "
        "so often far above the overall MSE/floor, which weights operators by their MSE)",
        *_rule_lines(q),
        *_one_step_lines(r),
    ]
    return lines + _token_lines(r)


def _one_step_lines(r: DiagnosticsResult) -> list[str]:
    """The one-step skill (noa.diagnostics.skill) of every operator and of each update rule."""
    if not r.one_step_skill:
        return []
    cells = [
        f"{group} {_num(e['pooled'], '.3f')} (median over operators {_num(e['median'], '.3f')}, {e['operators']} operators)"
        for group, e in r.one_step_skill.items()
    ]
    return [
        f"One-step skill = {ONE_STEP_DEFINITION}; on CNO states at steps 0, T/4, T/2, 3T/4:",
        "  " + "; ".join(cells),
    ]


def _rule_lines(q: RolloutQuality) -> list[str]:
    """Horizon-averaged MSE / noise floor per update rule (none when θ has no update rule)."""
    if not q.by_rule:
        return []
    lines = ["Per update rule (horizon-averaged MSE / noise floor):"]
    lines += [
        f"  {rule:<10} {g.operators:>4} operator{'' if g.operators == 1 else 's'}: MSE/floor {_ratio(g.ratio)}, median over operators "
        f"{_ratio(g.median_operator_ratio)}, persistence {_ratio(g.persistence_ratio)}; per-operator MSE/persistence, "
        f"median {_ratio(g.median_operator_persistence)}"
        for rule, g in q.by_rule.items()
    ]
    return lines


def _token_lines(r: DiagnosticsResult) -> list[str]:
    """Token agreement and the tokenizer's own reconstruction of CNO rollouts (skipped without a tokenizer)."""
    q = r.rollout
    if q.token_agreement is None or q.token_agreement_per_codebook is None:
        return [f"Token agreement: skipped ({r.skipped.get('Token Diversity', 'no tokens')})"]
    categories = q.token_categories or []
    judged = sorted({c.upper() for c in categories if c != INITIAL})
    books = sum(c != INITIAL for c in categories)
    return [
        f"Token agreement, judged on the {' and '.join(judged)} codebooks ({books} of {len(categories)}; INITIAL encodes",
        "the IC, which every rollout of a sample shares, so it agrees by construction); all codebooks in brackets:",
        f"Token agreement NOA vs CNO: {_share(q.token_agreement_non_initial, q.token_agreement)} of "
        f"{r.n_samples * books} (sample, codebook) codes",
        f"Token agreement CNO realization 0 vs 1 (reference): "
        f"{_share(q.token_agreement_reference_non_initial, q.token_agreement_reference)}",
        f"Token agreement persistence vs CNO: {_share(q.token_agreement_persistence_non_initial, q.token_agreement_persistence)}",
        f"Tokenizer reconstruction MSE on CNO rollouts (reference for section 1): {_num(r.cno_reconstruction, '.4f')}",
    ]


def _share(judged: float | None, every: float | None) -> str:
    """A judged agreement with the all-codebook one beside it, as percentages."""
    return f"{_num(_percent(judged), '.1f')}% (all codebooks {_num(_percent(every), '.1f')}%)"


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _scale_lines() -> list[str]:
    lines = ["Assessment scale"]
    lines += [f"  {ladder.metric}: {ladder.describe()}" for ladder in guide.LADDERS]
    lines += [f"  {ladder.metric}: {ladder.describe()}" for ladder in (rating.ROLLOUT_ERROR, rating.TOKEN_AGREEMENT)]
    lines.append(f"  Final verdict: {rating.VERDICT_RULE}")
    return lines


# ---- files -----------------------------------------------------------------------------

REPORT_FILES = (
    "report.md",
    "summary.json",
    "training_curves.png",
    "error_vs_horizon.png",
    "frames.png",
    "codebook_usage.png",
)


def _written_by_noa(path: Path) -> bool:
    """Whether ``path`` is a file an earlier noa diagnose wrote: its text's heading or key, or a
    figure's mark (a PNG any other program drew is not, whatever drew it)."""
    if path.suffix == ".png":
        return outputs.png_marked(path)
    head = path.read_bytes()[:4096]
    if path.suffix == ".md":
        return head.startswith(b"# NOA diagnostics")
    return b'"verdict_rule"' in path.read_bytes()


def check_report_dir(out_dir: Path) -> None:
    """Before the evaluation: the report directory can be written, and the files it would
    replace are an earlier noa report's, never a user's file of the same name."""
    outputs.check_writable(out_dir, "--out", directory=True)
    foreign = [name for name in REPORT_FILES if (out_dir / name).is_file() and not _written_by_noa(out_dir / name)]
    foreign += [name for name in REPORT_FILES if (out_dir / name).is_dir()]
    if foreign:
        raise NoaError(
            f"--out {out_dir} holds {', '.join(foreign)}, which noa diagnose did not write and would replace; "
            f"move them away or choose another --out{outputs.UNMARKED_HINT if any(n.endswith('.png') for n in foreign) else ''}"
        )


def write_report(
    result: DiagnosticsResult,
    data: _Collected,
    times: list[int],
    curves: TrainingCurves | None,
    frame_labels: list[str],
    out_dir: Path,
) -> Path:
    """report.md, summary.json and the PNGs in ``out_dir``; returns the report path.

    A figure this diagnosis has nothing for (no training curves, no tokenizer) is removed when
    an earlier noa report left one, so the directory never shows another run's figure.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {
        "training_curves.png": plots.training_curves(curves, out_dir / "training_curves.png"),
        "error_vs_horizon.png": plots.error_vs_horizon(result.rollout, out_dir / "error_vs_horizon.png"),
        "frames.png": plots.frames(data.frames_cno, data.frames_noa, times, frame_labels, out_dir / "frames.png"),
        "codebook_usage.png": _codebook_figure(result, data, out_dir / "codebook_usage.png"),
    }
    for name, path in drawn.items():
        stale = out_dir / name
        if path is None and stale.is_file() and _written_by_noa(stale):
            stale.unlink()
    md = ["# NOA diagnostics", "", *_run_lines(result), "", "## Report", "", "```text", result.text, "```", ""]
    md += _curves_section(curves) + _horizon_section(result) + _frames_section(times, frame_labels)
    md += _codebook_section(result) + _flags_section(result)
    outputs.write_text_atomic(out_dir / "summary.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return outputs.write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")


def _codebook_names(result: DiagnosticsResult) -> list[str]:
    return [f"{book.category} L{book.level}" for book in result.diversity.codebooks] if result.diversity else []


def _codebook_figure(result: DiagnosticsResult, data: _Collected, path: Path) -> Path | None:
    """Code usage of NOA and CNO rollouts per codebook; None without a tokenizer."""
    if result.diversity is None or data.tokens_cno is None:
        return None
    books = result.diversity.codebooks
    cno_counts = guide.code_counts(list(data.tokens_cno.T), [b.size for b in books])
    return plots.codebook_usage(
        [b.counts for b in books], [c.tolist() for c in cno_counts], _codebook_names(result), path
    )


def _objective(args: dict) -> str:
    """The training loss as the run's flags made it."""
    terms = ["L_traj"]
    if args.get("vqvae_path"):
        terms.append(f"{args.get('lambda_commit', '?')}·L_commit")
        if args.get("enable_latent_loss"):
            terms.append(f"{args.get('lambda_latent', '?')}·L_latent")
    return " + ".join(terms) + ("" if args.get("vqvae_path") else " (physics only: trained without a tokenizer)")


def _run_lines(r: DiagnosticsResult) -> list[str]:
    """What report.md opens with: when, by which noa, and the run's configuration and data."""
    run, a, d = r.run, r.run.get("args", {}), r.run.get("data", {})
    epoch = "?" if run.get("epoch") is None else int(run["epoch"]) + 1
    rows = [
        ("checkpoint", f"`{r.checkpoint}` (epoch {epoch}, step {run.get('global_step', '?')})"),
        (
            "dataset",
            f"`{r.dataset}`: {d.get('samples')} samples, {d.get('grid')}×{d.get('grid')} grid, "
            f"{d.get('channels')} channels, T = {d.get('timesteps')}; IC kinds {', '.join(d.get(IC_KINDS_KEY, []))}; "
            f"operator family {d.get('operator_family', {}).get('name', 'full')}",
        ),
        ("trained on", trained_on_text(r.trained_on) if r.trained_on else "?"),
        ("tokenizer", f"`{_tokenizer_text(r)}`" if r.tokenizer else "none: token sections skipped"),
        ("objective", _objective(a)),
        (
            "training",
            f"{a.get('epochs', '?')} epochs, batch {a.get('batch_size', '?')}, lr {a.get('lr', '?')} "
            f"({a.get('lr_schedule', '?')}, {a.get('warmup_steps', '?')} warmup steps), T = {a.get('timesteps', '?')}, "
            f"BPTT window {a.get('bptt_window', '?')}, {a.get('n_samples') or 'all'} samples "
            f"(validation {a.get('val_split', '?')}), seed {a.get('seed', '?')}",
        ),
        (
            "U-AFNO",
            f"base {a.get('base_channels', '?')}, {a.get('encoder_levels', '?')} levels, "
            f"{a.get('modes', '?')} modes, {a.get('afno_blocks', '?')} AFNO blocks"
            # A run from before --backbone trained the U-AFNO alone.
            + ("" if a.get("backbone", "uafno") == "uafno" else f"; --backbone {a['backbone']}"),
        ),
        ("evaluated", f"{r.n_samples} held-out samples, T = {r.timesteps}"),
        ("verdict", r.verdict),
    ]
    lines = [
        f"Generated {run.get('date', '?')} by noa {run.get('noa_version', '?')}.",
        "",
        "## Run",
        "",
        "| | |",
        "|---|---|",
    ]
    return lines + [f"| {name} | {value} |" for name, value in rows]


def _curves_section(curves: TrainingCurves | None) -> list[str]:
    lines = ["## Training curves", ""]
    if curves is None:
        return lines + ["The checkpoint holds no training history and no metrics.jsonl lies beside it.", ""]
    return lines + ["![Training curves](training_curves.png)", "", f"From {curves.source}.", ""]


def _horizon_section(result: DiagnosticsResult) -> list[str]:
    q = result.rollout
    md = [
        "## Error vs horizon",
        "",
        "![Error vs horizon](error_vs_horizon.png)",
        "",
        "VRMSE columns are medians over samples; the NOA's mean is beside its median.",
        "",
        "| step | noise floor | family floor | persistence | NOA MSE | NOA/noise | persist/noise | nRMSE | VRMSE | VRMSE mean "
        "| persist VRMSE | floor VRMSE |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {t} | {q.floor[i]:.4g} | {_num(q.family_floor[i])} | {q.persistence[i]:.4g} | {q.mse[i]:.4g} | {_ratio(q.floor_ratio[i])} | "
        f"{_ratio(q.persistence_ratio[i])} | {q.nrmse[i]:.3f} | {q.vrmse_median[i]:.3f} | {q.vrmse[i]:.3f} | "
        f"{q.vrmse_persistence_median[i]:.3f} | {q.vrmse_floor_median[i]:.3f} |"
        for i, t in enumerate(q.steps)
    ]
    return md + [""]


def _frames_section(times: list[int], labels: list[str]) -> list[str]:
    md = [
        "## CNO vs NOA frames",
        "",
        "![CNO vs NOA frames](frames.png)",
        "",
        f"Channel 0 at t = {', '.join(map(str, times))}, one row per held-out operator on one colour scale, and "
        f"|NOA − CNO| at t = {times[-1]} on its own scale. Rows:",
        "",
    ]
    return md + [f"- {label.replace(chr(10), '; ')}" for label in labels] + [""]


def _codebook_section(result: DiagnosticsResult) -> list[str]:
    md = ["## Codebook usage", ""]
    q = result.rollout
    if result.diversity is None or q.token_agreement_per_codebook is None:
        return md + [f"Skipped: {result.skipped.get('Token Diversity', 'no tokens')}.", ""]
    md += [
        "![Codebook usage](codebook_usage.png)",
        "",
        "| codebook | used / size | entropy (bits) | token agreement NOA vs CNO |",
        "|---|---:|---:|---:|",
    ]
    md += [
        f"| {name} | {b.used}/{b.size} | {b.entropy_bits:.2f} | {100 * agree:.1f}% |"
        for name, b, agree in zip(_codebook_names(result), result.diversity.codebooks, q.token_agreement_per_codebook)
    ]
    return md + [""]


def _flags_section(result: DiagnosticsResult) -> list[str]:
    args = result.run.get("args", {})
    md = ["## Training flags", "", "Every flag the checkpoint records (`args`).", "", "| flag | value |", "|---|---|"]
    return md + [f"| `--{key.replace('_', '-')}` | {value} |" for key, value in sorted(args.items())]


# ---- command line ----------------------------------------------------------------------


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `noa diagnose` (and scripts/dev/diagnose_latent_alignment.py)."""
    parser.add_argument(
        "--noa-checkpoint", required=True, help="NOA checkpoint (.pt), e.g. checkpoints/noa/best_model.pt"
    )
    parser.add_argument(
        "--vqvae-path",
        default=None,
        help="tokenizer directory (default: the one the checkpoint was trained with; a checkpoint trained without "
        "one is diagnosed on rollout quality alone unless this supplies one)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset .h5 (default: the checkpoint's training dataset, wherever the run is read from)",
    )
    parser.add_argument("--out", default=None, help="report directory (default: <checkpoint dir>/diagnostics)")
    add_evaluation_arguments(parser, "the training run's T")


def add_evaluation_arguments(parser: argparse.ArgumentParser, default_t: str, *, runs: bool = False) -> None:
    """How the rollouts are evaluated: the flags `noa diagnose` and `noa compare` share (``runs``:
    several runs, whose --vqvae-class may be one per run)."""
    parser.add_argument("--n-samples", type=int, default=100, help="held-out samples to evaluate; default 100")
    parser.add_argument(
        "--timesteps",
        type=int,
        default=None,
        help=f"rollout length T (default: {default_t}); the rollout measures run at any T, the token "
        "sections at the tokenizer's T (skipped with one line at another)",
    )
    parser.add_argument(
        "--no-tokens", action="store_true", help="skip the token sections: rollout measures only (no tokenizer is read)"
    )
    parser.add_argument(
        "--vqvae-class",
        default=None,
        help="the class that loads a tokenizer another program wrote, as MODULE_OR_FILE:CLASS (default: noa's own "
        "tokenizer); a run trained with one needs the same class, which noa never takes from the checkpoint"
        + (
            "; one for every run, or one per run in the checkpoints' order separated by commas, noa for a run whose "
            "tokenizer is noa's own"
            if runs
            else ""
        ),
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); default auto")
    parser.add_argument(
        "--seed", type=int, default=0, help="chooses the held-out samples when more are available; default 0"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="samples evaluated together; default 8")


def run_diagnose(args: argparse.Namespace) -> int:
    """Run `noa diagnose` from parsed flags; prints the report and writes the report directory."""
    out = Path(args.out) if args.out else Path(args.noa_checkpoint).parent / "diagnostics"
    diagnose(args.noa_checkpoint, args.vqvae_path, args.dataset, out_dir=out, **evaluation_options(args))
    return 0


def evaluation_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`add_evaluation_arguments`' flags, checked."""
    if args.n_samples < 1 or args.batch_size < 1:
        raise NoaError(f"--n-samples and --batch-size must be >= 1; got {args.n_samples} and {args.batch_size}")
    return dict(
        n_samples=args.n_samples,
        timesteps=args.timesteps,
        device=resolve_device(args.device),
        seed=args.seed,
        batch_size=args.batch_size,
        no_tokens=args.no_tokens,
        vqvae_class=args.vqvae_class,
    )
