"""`noa diagnose` on a tiny real setup: a generated dataset, a trained tokenizer on its
features, and a small untrained NOA (+ latent projector) saved as a training checkpoint.

Pins: the guide's report layout, numbers in range, the assessment ladders and verdict rule
at their boundaries, the final verdict weighing rollout quality, summary.json == printed
numbers, the report directory (its opening, figures and their labels, curves from
metrics.jsonl), the skipped sections without a projector, and one clear error for pieces that
do not fit.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from noa.data import h5
from noa.data.generate import GenerateConfig, generate
from noa.diagnostics import add_diagnose_arguments, diagnose
from noa.diagnostics import alignment as guide
from noa.diagnostics import curves, plots
from noa.diagnostics import verdict as rating
from noa.cli import main
from noa.diagnostics.evaluate import SECTION_NAMES
from noa.diagnostics.report import SKIP_REASON
from noa.diagnostics.rollout_quality import report_horizons, step_errors, summarize
from noa.train.checkpoint import load_checkpoint
from noa.errors import NoaError
from noa.features.registry import FEATURE_CATEGORIES
from noa.model import LatentProjector, UAFNO, UAFNOConfig
from noa.operators.space import CNO_SPACE

tokenizer_api = pytest.importorskip(
    "noa.tokenizer", reason="noa.tokenizer is not importable yet (written concurrently)"
)

T, GRID, N = 4, 16, 16
GUIDE_LINES = [
    "L_latent Alignment Diagnostics",
    "1. VQ Reconstruction Quality",
    "Per-category reconstruction errors:",
    "➜ Quality Assessment: ",
    "2. Token Diversity",
    "➜ Diversity Assessment: ",
    "3. Alignment Correlation",
    "4. Temporal Consistency",
    "Overall Summary",
    "➜ Final Verdict: ",
    "5. Rollout Quality (NOA vs CNO ground truth)",
    "Assessment scale",
]


def quiet(_: str) -> None:
    pass


def save_checkpoint(path, tokenizer_dir, dataset, *, projector_dim: int | None, seed: int = 0) -> None:
    """A checkpoint in the training loop's format around a small untrained U-AFNO."""
    config = UAFNOConfig(
        channels=3, param_dim=CNO_SPACE.size, base_channels=8, encoder_levels=2, modes=4, afno_blocks=1
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = UAFNO(config)
        projector = LatentProjector(config.bottleneck_channels, projector_dim, hidden=32) if projector_dim else None
    alignment_state = None
    if projector is not None:
        alignment_state = {
            "in_channels": config.bottleneck_channels,
            "latent_dim": projector_dim,
            "hidden": 32,
            "state_dict": projector.state_dict(),
        }
    history = {
        "train_loss": [3.0, 2.0, 1.5],
        "val_loss": [3.2, 2.4, 1.9],
        "train_traj": [2.5, 1.6, 1.2],
        "val_traj": [2.7, 2.0, 1.6],
        "train_latent": [0.7, 0.6, 0.55],
    }
    args = {
        "dataset": str(dataset),
        "vqvae_path": str(tokenizer_dir),
        "n_samples": N,
        "val_split": 0.25,
        "seed": 0,
        "timesteps": T,
        "latent_sample_steps": 3,
    }
    torch.save(
        {
            "config": config.to_dict(),
            "model_state_dict": model.state_dict(),
            "alignment_state": alignment_state,
            "history": history,
            "args": args,
        },
        path,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnostics")
    dataset = generate(
        GenerateConfig(n_samples=N, grid=GRID, timesteps=T, seed=0), root / "data.h5", progress=False, log=quiet
    )
    with h5py.File(dataset, "r") as f:
        names = h5.feature_names(f)
        features = {category: torch.from_numpy(f["features"][category][:]) for category in FEATURE_CATEGORIES}
    config = tokenizer_api.TokenizerConfig(
        feature_dims={k: len(v) for k, v in names.items()},
        feature_names=names,
        timesteps=T,
        channels=3,
        grid=GRID,
        latent_dim=8,
        levels=2,
        codebook_size=16,
        hidden=32,
    )
    train = {k: v[:12] for k, v in features.items()}
    val = {k: v[12:] for k, v in features.items()}
    model, history = tokenizer_api.train_tokenizer(
        train, val, config, epochs=2, batch_size=8, lr=3e-3, seed=0, device="cpu", log=quiet, progress=False
    )
    tokenizer_dir = root / "vqvae"
    tokenizer_api.save_tokenizer(model, tokenizer_dir, history, {})
    checkpoint = root / "noa" / "best_model.pt"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, tokenizer_dir, dataset, projector_dim=model.latent_dim)
    return {
        "root": root,
        "dataset": dataset,
        "tokenizer": tokenizer_dir,
        "checkpoint": checkpoint,
        "latent_dim": model.latent_dim,
    }


@pytest.fixture(scope="module")
def report(setup):
    printed: list[str] = []
    out = setup["root"] / "report"
    result = diagnose(
        setup["checkpoint"], setup["tokenizer"], setup["dataset"], batch_size=3, out_dir=out, log=printed.append
    )
    return result, "\n".join(printed), out


def line_value(text: str, prefix: str) -> str:
    """The rest of the (unique) printed line starting with ``prefix``."""
    hits = [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]
    assert len(hits) == 1, (prefix, hits)
    return hits[0]


def key_numbers(r) -> torch.Tensor:
    return torch.tensor(
        [
            r.reconstruction.total,
            r.diversity.utilization,
            r.alignment.cosine_mean,
            r.alignment.latent_mse,
            r.consistency.cv,
            *r.rollout.mse,
            *r.rollout.floor,
            r.rollout.token_agreement,
        ],
        dtype=torch.float64,
    )


def test_report_has_every_section_in_the_guides_layout(report):
    result, printed, _ = report
    assert result.text in printed
    position = -1
    for label in GUIDE_LINES:
        found = result.text.find(label)
        assert found > position, label
        position = found
    for category in ("INITIAL", "SUMMARY", "TEMPORAL"):
        assert re.search(rf"^  {category}\s*: \d+\.\d{{4}}$", result.text, re.M)
    for name in ("VQ Reconstruction:", "Token Diversity:", "Alignment Correlation:", "Temporal Consistency:"):
        assert re.search(rf"^{name}\s+(Excellent|Good|Moderate|Poor)$", result.text, re.M)
    assert re.search(r"^Overall utilization: \d+\.\d% \(\d+/\d+ codes\)$", result.text, re.M)
    assert re.search(r"^Cosine similarity: -?\d\.\d{3} ± \d\.\d{3}$", result.text, re.M)
    assert re.search(r"^➜ Final Verdict: (EXCELLENT|GOOD|MODERATE|POOR) - ", result.text, re.M)
    # Only the 4 validation samples of the training run are held out; the report says so.
    assert result.n_samples == 4
    assert "only 4 held-out samples are available (asked for 100)" in result.text


def test_numbers_are_finite_and_in_range(report):
    result, _, _ = report
    rec, div, ali, con, q = (
        result.reconstruction,
        result.diversity,
        result.alignment,
        result.consistency,
        result.rollout,
    )
    assert all(math.isfinite(v) and v >= 0 for v in [rec.total, *rec.per_category.values()])
    assert 0 <= div.utilization <= 1 and div.used == sum(b.used for b in div.codebooks) <= div.total
    assert div.total == sum(tokenizer_api.load_tokenizer(result.tokenizer).codebook_sizes)
    assert 0 <= div.entropy_bits <= div.entropy_ceiling_bits + 1e-9
    assert -1 <= ali.cosine_mean <= 1 and ali.cosine_std >= 0 and ali.latent_mse >= 0
    assert ali.sampled_steps == [0, 2, 3]  # latent_sample_steps 3 over T=4, as in training
    assert con.norm_mean > 0 and con.norm_std >= 0 and con.cv >= 0
    assert q.steps == list(range(1, T + 1)) and q.horizons == [1, 2, 4]
    for values in (
        q.mse,
        q.nrmse,
        q.vrmse,
        q.floor,
        q.realization_gap,
        q.family_floor,
        q.persistence,
        q.vrmse_persistence,
        q.vrmse_floor,
    ):
        assert len(values) == T and all(math.isfinite(v) and v >= 0 for v in values)
    # θ identifies the operator: another family draw is just another noise stream.
    assert 0.5 < q.family_to_noise < 2.0
    assert all(f == pytest.approx(g / 2) for f, g in zip(q.floor, q.realization_gap))
    assert 0 <= q.token_agreement <= 1 and 0 <= q.token_agreement_reference <= 1
    assert len(q.token_agreement_per_codebook) == len(div.codebooks)


def test_summary_json_matches_printed_numbers(report):
    result, _, out = report
    summary = json.loads((out / "summary.json").read_text())
    text = result.text
    rec = summary["reconstruction"]
    assert line_value(text, "Total MSE: ") == f"{rec['total']:.4f}"
    for category, value in rec["per_category"].items():
        assert line_value(text, f"  {category.upper():<12}: ") == f"{value:.4f}"
    div = summary["diversity"]
    assert (
        line_value(text, "Overall utilization: ")
        == f"{100 * div['utilization']:.1f}% ({div['used']}/{div['total']} codes)"
    )
    assert line_value(text, "Token entropy: ").startswith(f"{div['entropy_bits']:.2f} bits")
    ali, con = summary["alignment"], summary["consistency"]
    assert line_value(text, "Cosine similarity: ") == f"{ali['cosine_mean']:.3f} ± {ali['cosine_std']:.3f}"
    assert line_value(text, "L_latent (MSE): ") == f"{ali['latent_mse']:.3f}"
    assert line_value(text, "Latent norm: ") == f"{con['norm_mean']:.3f} ± {con['norm_std']:.3f}"
    assert line_value(text, "Coefficient of variation: ") == f"{con['cv']:.3f}"
    assert line_value(text, "➜ Final Verdict: ") == summary["verdict"]
    for name, word in summary["assessments"].items():
        assert line_value(text, f"{name}:").strip() == word
    q = summary["rollout"]
    overall = line_value(text, "Overall: ")
    assert f"MSE {q['overall_mse']:.4g}" in overall and f"nRMSE {q['overall_nrmse']:.3f}" in overall
    judged, every = 100 * q["token_agreement_non_initial"], 100 * q["token_agreement"]
    assert line_value(text, "Token agreement NOA vs CNO: ").startswith(f"{judged:.1f}% (all codebooks {every:.1f}%)")
    reference = line_value(text, "Token agreement CNO realization 0 vs 1 (reference): ")
    assert (
        reference
        == f"{100 * q['token_agreement_reference_non_initial']:.1f}% (all codebooks {100 * q['token_agreement_reference']:.1f}%)"
    )
    assert line_value(text, "Token agreement persistence vs CNO: ").startswith(
        f"{100 * q['token_agreement_persistence_non_initial']:.1f}%"
    )
    assert q["token_categories"] == [c for c, _ in tokenizer_api.load_tokenizer(result.tokenizer).entries]
    assert f"VRMSE median {q['overall_vrmse_median']:.3f} (mean {q['overall_vrmse']:.3f}; " in overall
    per_operator = line_value(text, "Per operator (each one's horizon-averaged ratio, median over operators): ")
    assert per_operator.startswith(f"MSE/persistence {q['median_operator_persistence']:.2f} (robust; ")
    assert f"MSE/floor {q['median_operator_ratio']:.2f} (led by operators whose nearly noise-free CNO" in per_operator
    assert summary["rows"] == result.rows and summary["n_samples"] == 4


def test_numbers_do_not_depend_on_batch_size(setup, report):
    result, _, _ = report
    alone = diagnose(setup["checkpoint"], setup["tokenizer"], setup["dataset"], batch_size=1, log=quiet)
    assert alone.rows == result.rows and alone.verdict == result.verdict
    assert torch.allclose(key_numbers(alone), key_numbers(result), rtol=1e-4, atol=1e-6)


def test_report_directory_has_markdown_and_plots(report):
    result, _, out = report
    md = (out / "report.md").read_text()
    assert result.text in md
    for png in ("training_curves.png", "error_vs_horizon.png", "frames.png", "codebook_usage.png"):
        assert f"]({png})" in md
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and (out / png).stat().st_size > 1024


def test_without_projector_sections_3_and_4_are_skipped(setup):
    checkpoint = setup["root"] / "no_projector.pt"
    save_checkpoint(checkpoint, setup["tokenizer"], setup["dataset"], projector_dim=None)
    result = diagnose(checkpoint, None, None, n_samples=2, log=quiet)  # tokenizer and dataset from the args
    assert result.alignment is None and result.consistency is None and result.n_samples == 2
    assert result.text.count(f"skipped: {SKIP_REASON}") == 2
    assert re.search(r"^Alignment Correlation:\s+skipped$", result.text, re.M)
    for label in ("Total MSE: ", "Overall utilization: ", "➜ Final Verdict: ", "Overall: MSE"):
        assert label in result.text
    assert "(alignment not evaluated: no latent projector)" in result.alignment_verdict
    assert result.skipped == {"Alignment Correlation": SKIP_REASON, "Temporal Consistency": SKIP_REASON}


def test_a_longer_horizon_than_the_tokenizers_runs_the_rollout_measures_and_skips_the_tokens(setup):
    # The NOA and tokenizer were trained at T=4: the rollout is evaluated at T=6 all the same.
    result = diagnose(setup["checkpoint"], setup["tokenizer"], setup["dataset"], timesteps=6, log=quiet)
    assert result.timesteps == 6 and result.rollout.steps == [1, 2, 3, 4, 5, 6] and len(result.rollout.mse) == 6
    assert all(math.isfinite(m) for m in result.rollout.mse) and result.rollout.median_operator_persistence is not None
    reason = (
        f"tokenizer {setup['tokenizer']} was trained on T=4 and this evaluation runs T=6 (--timesteps); "
        "the rollout measures run at any T, the token sections at the tokenizer's"
    )
    assert [n for n in result.notes if n.startswith("token sections skipped")] == [f"token sections skipped: {reason}"]
    short = "the tokenizer was trained on T=4, not T=6 (see the note above)"
    assert result.skipped == dict.fromkeys(SECTION_NAMES, short) and result.tokenizer is None
    assert result.text.count(reason) == 1  # the reason in full once; each section one short line
    assert result.rollout.token_agreement is None and "Rollout Quality" in result.text


def test_no_tokens_skips_the_token_sections_in_one_line(setup, tmp_path, capsys):
    argv = ["diagnose", "--noa-checkpoint", str(setup["checkpoint"]), "--n-samples", "2", "--no-tokens"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("token sections skipped: --no-tokens (the rollout measures need no tokenizer)") == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["tokenizer"] is None and summary["reconstruction"] is None and summary["rollout"]["mse"]


def test_another_tokenizer_is_a_warning_in_the_header_and_the_verdict(setup, tmp_path):
    import shutil

    from noa.tokenizer.io import tokenizer_fingerprint

    # The run records its tokenizer's fingerprint; a copy elsewhere is the same tokenizer, retrained weights are not.
    ckpt = load_checkpoint(setup["checkpoint"])
    ckpt["fingerprints"] = {"tokenizer": tokenizer_fingerprint(setup["tokenizer"])}
    checkpoint = tmp_path / "run" / "best_model.pt"
    checkpoint.parent.mkdir()
    torch.save(ckpt, checkpoint)
    copy = Path(shutil.copytree(setup["tokenizer"], tmp_path / "copy"))
    same = diagnose(checkpoint, copy, setup["dataset"], n_samples=2, log=quiet)
    assert same.warnings == [] and same.alignment is not None and "WARNING" not in same.text
    other = Path(shutil.copytree(setup["tokenizer"], tmp_path / "other"))
    weights = torch.load(other / "weights.pt", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, other / "weights.pt")
    result = diagnose(checkpoint, other, setup["dataset"], n_samples=2, log=quiet)
    header = result.text.split("1. VQ Reconstruction Quality")[0]
    assert f"WARNING: tokenizer {other} is not the one the NOA was trained with ({setup['tokenizer']})" in header
    assert "(WARNING: not the run's tokenizer" in result.verdict
    assert "WARNING: not the run's tokenizer" in result.text.split("➜ Final Verdict: ")[1].splitlines()[0]
    assert result.alignment is None and result.consistency is None  # the projector was trained against another
    assert "was trained against another tokenizer" in result.skipped["Alignment Correlation"]
    assert result.reconstruction is not None and result.rollout.token_agreement is not None


def test_pieces_that_do_not_fit_raise_one_error_naming_both_sides(setup):
    other = generate(
        GenerateConfig(n_samples=2, grid=32, timesteps=T, seed=1, features=False),
        setup["root"] / "grid32.h5",
        progress=False,
        log=quiet,
    )
    with pytest.raises(
        NoaError, match=r"grid: tokenizer .*vqvae was trained on 16x16, dataset .*grid32\.h5 has 32x32"
    ) as err:
        diagnose(setup["checkpoint"], setup["tokenizer"], other, log=quiet)
    assert "do not fit each other" in str(err.value)

    wrong = setup["root"] / "wrong_dim.pt"
    save_checkpoint(wrong, setup["tokenizer"], setup["dataset"], projector_dim=setup["latent_dim"] + 8)
    with pytest.raises(
        NoaError,
        match=rf"latent projector outputs {setup['latent_dim'] + 8}, tokenizer .* has latent_dim {setup['latent_dim']}",
    ):
        diagnose(wrong, None, None, log=quiet)


def test_cli_flags_and_defaults():
    parser = argparse.ArgumentParser()
    add_diagnose_arguments(parser)
    args = parser.parse_args(["--noa-checkpoint", "c.pt", "--vqvae-path", "v", "--dataset", "d.h5"])
    assert (args.n_samples, args.timesteps, args.out, args.device, args.seed, args.batch_size) == (
        100,
        None,
        None,
        "auto",
        0,
        8,
    )


# ---- ladders and verdict at their boundaries ---------------------------------------------


@pytest.mark.parametrize(
    "ladder, cases",
    [
        (
            guide.RECONSTRUCTION,
            [
                (0.0999, "Excellent"),
                (0.1, "Good"),
                (0.4999, "Good"),
                (0.5, "Moderate"),
                (0.9999, "Moderate"),
                (1.0, "Poor"),
            ],
        ),
        (
            guide.DIVERSITY,
            [
                (0.8001, "Excellent"),
                (0.8, "Good"),
                (0.5001, "Good"),
                (0.5, "Moderate"),
                (0.2501, "Moderate"),
                (0.25, "Poor"),
            ],
        ),
        (
            guide.CORRELATION,
            [
                (0.9001, "Excellent"),
                (0.9, "Good"),
                (0.7001, "Good"),
                (0.623, "Moderate"),
                (0.5, "Poor"),
                (-1.0, "Poor"),
            ],
        ),
        (
            guide.CONSISTENCY,
            [
                (0.0499, "Excellent"),
                (0.05, "Good"),
                (0.055, "Good"),
                (0.1, "Moderate"),
                (0.1999, "Moderate"),
                (0.2, "Poor"),
            ],
        ),
    ],
)
def test_ladders_at_and_around_each_boundary(ladder, cases):
    for value, word in cases:
        assert ladder.assess(value) == word, (ladder.metric, value)
    assert ladder.assess(float("nan")) == "Poor"


def test_guide_example_and_verdict_rule():
    # The guide's sample output: 0.3245 / 67.3% / 0.623 / 0.055 -> Good, Good, Moderate, Good -> GOOD.
    words = [
        guide.RECONSTRUCTION.assess(0.3245),
        guide.DIVERSITY.assess(0.673),
        guide.CORRELATION.assess(0.623),
        guide.CONSISTENCY.assess(0.055),
    ]
    assert words == ["Good", "Good", "Moderate", "Good"]
    assert guide.final_verdict(words, aligned=True) == "GOOD - L_latent provides meaningful alignment"
    E, G, M, P = "Excellent", "Good", "Moderate", "Poor"
    assert guide.final_verdict([E, E, E, G], True).startswith("EXCELLENT")
    assert guide.final_verdict([E, E, G, G], True).startswith("GOOD")  # half Excellent is not a majority
    assert guide.final_verdict([E, E, E, M], True).startswith("GOOD")  # one Moderate blocks EXCELLENT
    assert guide.final_verdict([G, G, M, M], True).startswith("MODERATE")  # half Good is not most
    assert guide.final_verdict([E, E, E, P], True).startswith("MODERATE")  # one Poor blocks GOOD
    assert guide.final_verdict([G, G, P, P], True).startswith("POOR")
    assert guide.final_verdict([G, E], False).startswith("GOOD")
    assert (
        guide.final_verdict([E, E], False)
        == "EXCELLENT - NOA outputs tokenize very well (alignment not evaluated: no latent projector)"
    )
    assert guide.final_verdict([G, M], False).startswith("MODERATE")


def test_rollout_metrics_on_known_values():
    # Two realizations 0.2 apart everywhere: gap 0.04, floor 0.02; the NOA is 0.1 off realization 0.
    cno = torch.zeros(2, 2, T + 1, 1, 8, 8)
    cno[:, 0] = torch.linspace(-1, 1, 64).reshape(8, 8)
    cno[:, 1] = cno[:, 0] + 0.2
    noa = cno[:, 0] + 0.1
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    cno_tokens = torch.tensor([[1, 2, 0], [4, 0, 0]])
    books = ["initial", "summary", "temporal"]
    q = summarize(step_errors(noa, cno), tokens, cno_tokens, torch.tensor([[1, 2, 0], [9, 9, 9]]), categories=books)
    assert q.mse == pytest.approx([0.01] * T) and q.floor == pytest.approx([0.02] * T)
    assert q.realization_gap == pytest.approx([0.04] * T) and q.overall_ratio == pytest.approx(0.5)
    assert q.token_agreement == pytest.approx(0.5) and q.token_agreement_per_codebook == pytest.approx([1.0, 0.5, 0.0])
    assert q.token_agreement_reference == pytest.approx(0.5)
    std = cno[0, 0, 1].std(unbiased=False).item()
    rms = cno[0, 0, 1].pow(2).mean().sqrt().item()
    assert q.vrmse == pytest.approx([0.1 / std] * T, rel=1e-5)  # the_well: RMSE / std of the target
    assert q.nrmse == pytest.approx([0.1 / rms] * T, rel=1e-5)  # the_well: RMSE / RMS of the target
    assert q.vrmse_floor == pytest.approx([0.02**0.5 / std] * T, rel=1e-5)
    # Persistence holds frame 0 (the same linspace here), so it misses realization 0 by nothing.
    assert q.persistence == pytest.approx([0.0] * T) and q.vrmse_persistence == pytest.approx([0.0] * T)
    assert q.family_floor == [None] * T and q.family_to_noise is None  # no other family draw given
    # Another draw 0.2 away (like realization 1): family floor = noise floor, ratio 1.
    with_family = summarize(step_errors(noa, cno, cno[:, 1]), tokens, cno_tokens, cno_tokens, tokens, categories=books)
    assert with_family.family_floor == pytest.approx([0.02] * T) and with_family.family_to_noise == pytest.approx(1.0)
    assert with_family.token_agreement_persistence == pytest.approx(0.5)
    # A draw 0.4 away: what a perfect θ-conditioned model scores is 4x the noise floor.
    far = summarize(step_errors(noa, cno, cno[:, 0] + 0.4), tokens, cno_tokens, cno_tokens, categories=books)
    assert far.family_to_noise == pytest.approx(4.0)
    assert (
        summarize(step_errors(noa, cno[:, [0, 0]]), tokens, tokens, tokens, categories=books).overall_ratio is None
    )  # noiseless CNO
    assert report_horizons(1) == [1] and report_horizons(256) == [1, 64, 128, 256]


def test_token_agreement_is_judged_without_the_initial_codebooks():
    # INITIAL codebooks encode the IC, which NOA and CNO share: they agree by construction. Here
    # the NOA matches them always and the SUMMARY / TEMPORAL codes on 5 of 8 samples, while two
    # CNO realizations share every code: 81% of all codes (GOOD), 62.5% of the judged ones (MODERATE).
    x0 = torch.zeros(8, T + 1, 1, 4, 4)
    errors = step_errors(x0 + 0.1, torch.stack([x0, x0 + 0.2], dim=1))
    cno_tokens = torch.zeros(8, 4, dtype=torch.long)
    noa_tokens = cno_tokens.clone()
    noa_tokens[5:, 2:] = 1
    books = ["initial", "initial", "summary", "temporal"]
    q = summarize(errors, noa_tokens, cno_tokens, cno_tokens, cno_tokens, categories=books)
    assert q.token_agreement == pytest.approx(26 / 32) and q.token_agreement_non_initial == pytest.approx(0.625)
    assert q.token_agreement_reference == q.token_agreement_reference_non_initial == pytest.approx(1.0)
    assert q.token_agreement_persistence_non_initial == pytest.approx(1.0) and q.token_categories == books
    criterion = rating.agreement_criterion(q, "no tokenizer")
    assert criterion.level == "MODERATE"
    assert criterion.phrase == "tokens agree on 62% of non-INITIAL codes against 100% between CNO realizations"
    assert "all codebooks 81.2% against 100.0%" in criterion.detail
    with pytest.raises(ValueError, match="one category per codebook"):
        summarize(errors, noa_tokens, cno_tokens, cno_tokens)


def test_vrmse_headlines_the_median_and_counts_the_frames_that_inflate_the_mean():
    # Three samples with a spread-out target, one whose frames are almost uniform: the same
    # error gives VRMSE ~0.16 on the first three and ~300 on the last.
    target = torch.linspace(-1, 1, 16).reshape(1, 1, 1, 4, 4).repeat(4, T + 1, 1, 1, 1)
    target[3] = 1e-4 * target[3]
    cno = torch.stack([target, target + 0.05], dim=1)
    q = summarize(step_errors(target + 0.1, cno), None, None, None)
    assert q.vrmse_frames == 4 * T and q.vrmse_frames_inflated == T
    assert q.overall_vrmse > 50 and q.overall_vrmse_median < 0.2
    assert q.vrmse_median == pytest.approx([q.overall_vrmse_median] * T)
    fig = plots.error_figure(q)
    right = fig.axes[1]
    labels = right.get_legend_handles_labels()[1]
    assert plots.mean_label(q) in labels and f"{T} of {4 * T} frames above 10" in plots.mean_label(q)
    assert right.get_ylim()[1] < q.overall_vrmse  # the mean does not set the scale: the median's spread does
    assert "noise floor (median)" in labels


def test_horizon_mean_ratio_per_update_rule_and_median_over_operators():
    # Four operators at 1x, 2x, 3x and 10x the noise floor (0.02); the first two residual.
    x0 = torch.zeros(4, T + 1, 1, 4, 4)
    cno = torch.stack([x0, x0 + 0.2], dim=1)
    offsets = torch.tensor([1.0, 2.0, 3.0, 10.0]).mul(0.02).sqrt().reshape(4, 1, 1, 1, 1)
    q = summarize(step_errors(x0 + offsets, cno), None, None, None, rules=["residual", "residual", "convex", "convex"])
    assert q.overall_ratio == pytest.approx(4.0) and q.median_operator_ratio == pytest.approx(
        2.0
    )  # torch: the lower middle
    assert list(q.by_rule) == ["convex", "residual"]
    assert q.by_rule["residual"].operators == 2 and q.by_rule["residual"].ratio == pytest.approx(1.5)
    assert q.by_rule["convex"].ratio == pytest.approx(6.5) and q.by_rule[
        "convex"
    ].median_operator_ratio == pytest.approx(3.0)
    assert summarize(step_errors(x0 + offsets, cno), None, None, None).by_rule is None  # no rules: no split


def test_the_report_splits_rollout_error_per_update_rule(setup, report):
    from noa.diagnostics.evaluate import update_rules
    from noa.operators.space import Dimension, ParameterSpace

    result, _, out = report
    rules = update_rules(setup["dataset"], CNO_SPACE, result.rows)
    by_rule = result.rollout.by_rule
    assert set(by_rule) == set(rules) and sum(g.operators for g in by_rule.values()) == result.n_samples
    for rule, g in by_rule.items():
        assert re.search(
            rf"^  {rule}\s+{g.operators} operators?: MSE/floor {g.ratio:.2f}, median over operators ", result.text, re.M
        )
    assert (
        json.loads((out / "summary.json").read_text())["rollout"]["by_rule"][rules[0]]["operators"]
        == by_rule[rules[0]].operators
    )
    # A parameter space without an update rule gives no split, and the report no per-rule lines.
    plain = ParameterSpace((Dimension("a", "float"), Dimension("b", "choice", choices=("x", "y"))))
    assert update_rules(setup["dataset"], plain, result.rows) is None


# ---- the final verdict weighs rollout quality ----------------------------------------------


def quality(ratio: float, agreement: float, reference: float, persistence: float = 10.0, n: int = 100):
    """Rollout quality of real (synthetic) frames: the NOA at ``ratio`` x the noise floor,
    persistence at ``persistence`` x, and tokens agreeing on the given shares of n samples."""
    x0 = torch.zeros(n, T + 1, 1, 4, 4)
    cno = torch.stack([x0, x0 + 0.2], dim=1)  # noise floor 0.02 at every step
    noa = x0 + (0.02 * ratio) ** 0.5
    cno[:, :, 1:] += (0.02 * persistence) ** 0.5  # the IC is this far from every later frame
    noa[:, 1:] += (0.02 * persistence) ** 0.5
    cno_tokens = torch.zeros(n, 1, dtype=torch.long)
    agree = torch.arange(n)[:, None] < round(agreement * n)
    same = torch.arange(n)[:, None] < round(reference * n)
    q = summarize(
        step_errors(noa, cno), torch.where(agree, 0, 1), cno_tokens, torch.where(same, 0, 1), categories=["summary"]
    )
    assert q.overall_ratio == pytest.approx(ratio, rel=1e-4)  # float32 frames
    assert q.overall_persistence_ratio == pytest.approx(persistence, rel=1e-4)
    assert q.token_agreement == pytest.approx(agreement) and q.token_agreement_reference == pytest.approx(reference)
    return q


def verdict_of(q, alignment_line: str | None = "GOOD - L_latent provides meaningful alignment"):
    return rating.combine(
        [
            rating.alignment_criterion(alignment_line, "no tokenizer"),
            rating.rollout_criterion(q),
            rating.agreement_criterion(q, "no tokenizer"),
        ]
    )


def test_rollouts_at_3_9x_the_floor_with_41_percent_agreement_are_not_good():
    # The guide's ladders say GOOD; the rollouts say otherwise, and the verdict names them.
    v = verdict_of(quality(3.9, 0.41, 0.80))
    assert v.level == "POOR" and v.line == "POOR - rollouts are 3.90x the noise floor"
    assert v.decided_by == ["rollout error"]
    levels = {c.name: c.level for c in v.criteria}
    assert levels == {
        "alignment ladders (sections 1-4)": "GOOD",
        "rollout error": "POOR",
        "token agreement": "MODERATE",
    }
    # Near the floor, 41% agreement against an 80% reference (0.51 of it) still holds the verdict at MODERATE.
    near = verdict_of(quality(1.3, 0.41, 0.80))
    assert near.level == "MODERATE" and near.decided_by == ["token agreement"]
    assert near.line == "MODERATE - tokens agree on 41% of non-INITIAL codes against 80% between CNO realizations"


def test_verdict_rule_each_criterion_can_decide_and_ties_are_named():
    assert (
        verdict_of(quality(1.1, 0.78, 0.80)).line == "GOOD - L_latent provides meaningful alignment"
    )  # 1.1x Excellent, 0.975 Excellent
    both = verdict_of(quality(1.3, 0.78, 0.80))  # 1.3x Good, alignment Good
    assert both.level == "GOOD" and both.decided_by == ["alignment ladders (sections 1-4)", "rollout error"]
    assert verdict_of(quality(1.1, 0.78, 0.80), "EXCELLENT - L_latent provides strong alignment").level == "EXCELLENT"
    # Persistence near the floor: a NOA not 10% better than holding the IC shows no skill.
    flat = verdict_of(quality(1.3, 0.78, 0.80, persistence=1.4))
    assert flat.level == "POOR" and flat.line == "POOR - rollouts are no better than holding the initial condition"
    # Without a tokenizer only the rollout error counts; with nothing to rate, the verdict says so.
    q = quality(2.0, 0.5, 0.8)
    alone = rating.combine([rating.alignment_criterion(None, "no tokenizer"), rating.rollout_criterion(q)])
    assert alone.level == "MODERATE" and alone.decided_by == ["rollout error"]
    assert (
        rating.combine([rating.alignment_criterion(None, "no tokenizer")]).line
        == "UNASSESSED - no criterion could be evaluated"
    )


def test_a_low_noise_family_is_rated_on_persistence_too_and_the_verdict_says_which_scale_limits():
    # Little noise: the floor is 1/1600 of persistence's MSE. A NOA at 80x that floor has 0.05 of
    # persistence's error (20x better than holding the IC): the floor's scale limits, not the model.
    v = verdict_of(quality(80.0, 0.78, 0.80, persistence=1600.0))
    rollout = next(c for c in v.criteria if c.name == "rollout error")
    assert rollout.level == "GOOD" and v.level == "GOOD"
    assert rollout.phrase == "rollouts are 0.05 of persistence's MSE (median operator), 80x a tiny noise floor"
    assert (
        "1/1.6e+03 of persistence's MSE" in rollout.detail and "on the floor alone it would be POOR" in rollout.detail
    )
    assert rollout.advice.startswith("the noise floor's scale limits, not the model")
    # The same family, a NOA at half persistence's error: the model limits, on both scales.
    weak = next(
        c for c in verdict_of(quality(800.0, 0.78, 0.80, persistence=1600.0)).criteria if c.name == "rollout error"
    )
    assert weak.level == "POOR" and weak.advice.startswith("the model limits") and "--epochs" in weak.advice
    # Persistence can lift the rating to GOOD at most: EXCELLENT needs the floor itself.
    best = verdict_of(quality(30.0, 0.78, 0.80, persistence=3000.0), "EXCELLENT - L_latent provides strong alignment")
    assert best.level == "GOOD" and best.decided_by == ["rollout error"]
    # With an ordinary floor (persistence 10x it) the floor alone rates, and a far NOA is told the model limits.
    usual = next(c for c in verdict_of(quality(3.9, 0.78, 0.80)).criteria if c.name == "rollout error")
    assert usual.level == "POOR" and usual.advice.startswith("the model limits: its MSE is 3.90x the noise floor")
    # Persistence within 2x the floor: the noise, not only the model, keeps a NOA from beating it.
    flat = next(c for c in verdict_of(quality(1.3, 0.78, 0.80, persistence=1.4)).criteria if c.name == "rollout error")
    assert flat.level == "POOR" and flat.advice.startswith("the noise limits, not only the model")


def test_a_noiseless_cno_is_rated_on_persistence_alone():
    x0 = torch.zeros(20, T + 1, 1, 4, 4)
    cno = torch.stack([x0, x0], dim=1)  # two identical realizations: no noise floor
    cno[:, :, 1:] += 1.0  # persistence MSE 1 at every step
    q = summarize(step_errors(cno[:, 0] + 0.1, cno), None, None, None)  # the NOA 0.1 off: MSE 0.01
    assert q.overall_ratio is None and q.median_operator_persistence == pytest.approx(0.01)
    criterion = rating.rollout_criterion(q)
    assert criterion.level == "GOOD" and "no noise floor (the CNO is noiseless here)" in criterion.detail
    held = rating.rollout_criterion(summarize(step_errors(cno[:, 0, :1].expand_as(cno[:, 0]), cno), None, None, None))
    assert held.level == "POOR" and held.phrase == "rollouts are no better than holding the initial condition"


def test_the_report_explains_its_verdict(report):
    result, _, out = report
    text, v = result.text, result.verdict_detail
    assert line_value(text, "➜ Final Verdict: ") == result.verdict == v.line
    assert line_value(text, "  decided by: ").startswith(", ".join(v.decided_by))
    for criterion in v.criteria:
        assert re.search(rf"^  {re.escape(criterion.name)}:\s+{re.escape(criterion.detail)}$", text, re.M)
    assert result.alignment_verdict.startswith(("EXCELLENT", "GOOD", "MODERATE", "POOR"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict_detail"]["decided_by"] == v.decided_by and summary["verdict_rule"] == rating.VERDICT_RULE


# ---- report readability -----------------------------------------------------------------


def test_report_md_opens_with_the_run_and_labels_frames_with_theta(setup, report):
    result, _, out = report
    md = (out / "report.md").read_text().splitlines()
    assert md[0] == "# NOA diagnostics"
    assert (
        re.fullmatch(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC by noa \d+\.\d+\.\d+\S*\.", md[2]) and md[4] == "## Run"
    )
    head = "\n".join(md[:20])
    assert f"| dataset | `{setup['dataset']}`: {N} samples, {GRID}×{GRID} grid, 3 channels, T = {T};" in head
    assert (
        "| objective | L_traj + ?·L_commit |" in head
    )  # save_checkpoint records no --lambda-commit: unknown, not guessed
    assert md.index("## Run") < md.index("## Report") < md.index("## Training flags")
    assert "| `--val-split` | 0.25 |" in md
    # Frame rows: θ in physical units (the parameter space's decode), IC kind, channel.
    with h5py.File(setup["dataset"], "r") as f:  # the file records the IC kinds under their former name
        theta = f["parameters/params"][result.rows[0]]
        kind = json.loads(f.attrs["ic_families"])[int(f["metadata/ic_family"][result.rows[0]])]
    decoded = CNO_SPACE.decode(theta)
    row = next(line for line in md if line.startswith(f"- row {result.rows[0]}: "))
    assert f"IC {kind}, channel 0" in row and f"n_layers={decoded['n_layers']}" in row
    assert f"activation={decoded['activation']}" in row and f"noise_scale={decoded['noise_scale']:.3g}" in row


def test_frames_figure_has_an_error_column_and_labelled_rows():
    cno, noa = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    fig = plots.frames_figure(
        cno, noa, [0, 2, 4], ["row 1: IC a, channel 0\nn_layers=2", "row 5: IC b, channel 0\nn_layers=3"]
    )
    rows = fig.subfigs
    assert [sub.get_suptitle() for sub in rows] == [
        "row 1: IC a, channel 0\nn_layers=2",
        "row 5: IC b, channel 0\nn_layers=3",
    ]
    images = [ax for ax in rows[0].axes if ax.get_images()]
    assert [ax.get_title() for ax in images] == [
        "CNO t=0",
        "NOA t=0",
        "CNO t=2",
        "NOA t=2",
        "CNO t=4",
        "NOA t=4",
        "|NOA − CNO| t=4",
    ]
    assert float(images[-1].get_images()[0].get_array().max()) == 1.0  # |1 - 0|


def test_error_figure_shows_the_floors_and_a_no_skill_line(report):
    result, _, _ = report
    left, right = [ax for ax in plots.error_figure(result.rollout).axes if ax.get_legend()]
    assert {"noise floor (same operator)", "family floor (same θ)", plots.NO_SKILL} <= set(
        left.get_legend_handles_labels()[1]
    )
    labels = right.get_legend_handles_labels()[1]
    assert plots.FRAME_MEAN in labels and "noise floor (median)" in labels
    no_skill = right.get_lines()[labels.index(plots.FRAME_MEAN)]
    assert list(no_skill.get_ydata()) == [1.0, 1.0]


def test_the_error_figures_legends_sit_inside_their_axes(report):
    result, _, _ = report
    fig = plots.error_figure(result.rollout)
    fig.canvas.draw()
    figure_box = fig.bbox
    for ax in fig.axes:
        legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1  # nothing cut at the edges


def test_training_curves_per_batch_from_metrics_with_lr_panel(tmp_path):
    records = [
        {
            "kind": "train_batch",
            "epoch": 1,
            "batch": 1,
            "global_step": 1,
            "total": 2.0,
            "traj": 2.0,
            "commit": None,
            "latent": None,
            "lr": 1e-4,
        },
        {
            "kind": "train_batch",
            "epoch": 1,
            "batch": 2,
            "global_step": 2,
            "total": 9.0,
            "traj": 9.0,
            "commit": None,
            "latent": None,
            "lr": 2e-4,
        },
        {
            "kind": "epoch",
            "epoch": 1,
            "global_step": 2,
            "train_total": 5.5,
            "val_total": 4.0,
            "train_traj": 5.5,
            "val_traj": 4.0,
            "train_commit": None,
        },
        # a resume re-did step 2 (the later record wins) and went past this checkpoint's step 3
        {
            "kind": "train_batch",
            "epoch": 1,
            "batch": 2,
            "global_step": 2,
            "total": 1.5,
            "traj": 1.5,
            "commit": None,
            "latent": None,
            "lr": 2e-4,
        },
        {
            "kind": "train_batch",
            "epoch": 2,
            "batch": 1,
            "global_step": 3,
            "total": 1.0,
            "traj": 1.0,
            "commit": None,
            "latent": None,
            "lr": 3e-4,
        },
        {
            "kind": "train_batch",
            "epoch": 2,
            "batch": 2,
            "global_step": 4,
            "total": 0.5,
            "traj": 0.5,
            "commit": None,
            "latent": None,
            "lr": 4e-4,
        },
    ]
    lines = [json.dumps(r) for r in records] + ['{"kind": "train_ba']  # torn by a kill
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    ckpt = {"global_step": 3, "history": {"train_loss": [5.5]}}
    c = curves.training_curves_of(tmp_path / "step_3.pt", ckpt)
    assert c.x_label == "step" and list(c.panels) == [
        "total loss",
        "L_traj",
        "learning rate",
    ]  # no L_commit: never computed
    per_batch, epoch_mean, val = c.panels["total loss"]
    assert (per_batch.x, per_batch.y, per_batch.style) == ([1.0, 2.0, 3.0], [2.0, 1.5, 1.0], "batch")
    assert (epoch_mean.x, epoch_mean.y, val.y) == ([2.0], [5.5], [4.0])
    assert c.panels["learning rate"][0].y == [1e-4, 2e-4, 3e-4]
    assert "3 batches, 1 epochs; 1 unreadable line(s) skipped" in c.source
    fig = plots.training_figure(c)
    lr_axis = next(ax for ax in fig.axes if ax.get_title() == "learning rate")
    assert lr_axis.get_yscale() == "linear" and all(ax.get_yscale() == "log" for ax in fig.axes if ax is not lr_axis)


def test_long_runs_get_a_running_mean_over_their_batches():
    raw = curves.Series(
        "train (per batch)", [float(s) for s in range(1, 101)], [float(s % 2) for s in range(1, 101)], style="batch"
    )
    trend = curves.running_mean(raw)
    assert trend.label == "train (mean of last 5 batches)" and trend.style == "trend" and trend.x == raw.x
    assert trend.y[:3] == [1.0, 0.5, 2 / 3] and trend.y[4:] == pytest.approx(
        [0.6 if s % 2 else 0.4 for s in range(5, 101)]
    )
    assert curves.running_mean(curves.Series("short", [1.0], [1.0], style="batch")) is None


def test_training_curves_from_a_history_with_none_entries(tmp_path):
    history = {
        "train_loss": [2.0, 1.0],
        "val_loss": [2.5, None],
        "train_commit": [None, None],
        "val_commit": [None, None],
        "train_latent": [None, None],
        "lr": [1e-3, 5e-4],
    }
    c = curves.training_curves_of(tmp_path / "best_model.pt", {"history": history})
    assert c.x_label == "epoch" and list(c.panels) == ["total loss", "learning rate"]
    assert c.panels["total loss"][1].x == [1.0] and c.panels["total loss"][1].y == [2.5]
    path = plots.training_curves(c, tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert curves.training_curves_of(tmp_path / "x.pt", {"history": {"train_commit": [None]}}) is None


def test_a_newer_checkpoint_in_a_sibling_run_directory_is_named(setup, tmp_path):
    import os
    import shutil

    from noa.run_siblings import sibling_runs

    # The guide's blocks pasted in order: checkpoints/noa holds an older run, so noa train wrote
    # to checkpoints/noa-2; diagnosing checkpoints/noa/best_model.pt names the newer one.
    runs = tmp_path / "checkpoints"
    old, new = runs / "noa" / "best_model.pt", runs / "noa-2" / "best_model.pt"
    for path, mtime in ((old, 1_000_000), (new, 2_000_000), (runs / "noa-old" / "best_model.pt", 3_000_000)):
        path.parent.mkdir(parents=True)
        shutil.copy(setup["checkpoint"], path)
        os.utime(path, (mtime, mtime))
    (runs / "noa-3").mkdir()  # no run in it
    assert sibling_runs(old.parent) == [new.parent] and sibling_runs(new.parent) == [old.parent]
    result = diagnose(old, None, None, n_samples=1, log=quiet)
    notes = [line for line in result.text.splitlines() if "is newer than this checkpoint" in line]
    assert notes == [
        f"note: {new} is newer than this checkpoint: a later run wrote to {new.parent} (noa train without "
        f"--checkpoint-dir writes to the first free sibling); pass --noa-checkpoint {new} to diagnose it"
    ]
    assert "is newer than this checkpoint" not in diagnose(new, None, None, n_samples=1, log=quiet).text


def test_the_per_operator_figure_is_not_led_by_operators_with_tiny_noise_floors() -> None:
    # Three operators, each moving away from its IC; two have nearly noise-free CNOs (realization gaps of 1e-4).
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 2, 8, 8, generator=g)
    cno = torch.stack([x0, x0 + torch.tensor([1e-4, 1e-4, 0.3]).view(3, 1, 1, 1, 1)], dim=1)
    cno[:, :, 1:] += torch.linspace(0.2, 1.0, 4).view(1, 1, 4, 1, 1, 1)  # a drift holding the IC misses
    noa = cno[:, 0] + 0.05  # 0.05 off everywhere: a tenth of the drift or better
    q = summarize(step_errors(noa, cno), None, None, None, rules=["residual", "residual", "convex"])
    assert q.median_operator_ratio is not None and q.median_operator_ratio > 1e4  # MSE / a tiny floor
    assert (
        q.median_operator_persistence is not None and q.median_operator_persistence < 0.05
    )  # robust: far better than persistence
    assert q.by_rule is not None and q.by_rule["residual"].median_operator_persistence < 0.05


def test_a_fine_tune_in_a_sibling_directory_is_not_called_a_newer_checkpoint(setup, tmp_path):
    import os

    # checkpoints/noa-2 holds a fine-tune of checkpoints/noa on other data: another experiment, written later.
    runs = tmp_path / "checkpoints"
    old, tuned = runs / "noa" / "best_model.pt", runs / "noa-2" / "best_model.pt"
    ckpt = load_checkpoint(setup["checkpoint"])
    for path in (old, tuned):
        path.parent.mkdir(parents=True)
    torch.save(ckpt, old)
    args = {**ckpt["args"], "init_from": str(old)}
    torch.save({**ckpt, "args": args, "fingerprints": {**ckpt.get("fingerprints", {}), "dataset": "other"}}, tuned)
    os.utime(old, (1_000_000, 1_000_000))
    assert "is newer than this checkpoint" not in diagnose(old, None, None, n_samples=1, log=quiet).text


def test_diagnostics_does_not_import_the_training_run_directory_logic() -> None:
    """The sibling-run question diagnose asks lives in noa.run_siblings, beside no training code."""
    import subprocess
    import sys

    probe = (
        "import importlib, pkgutil, sys, noa.diagnostics as d\n"
        "for m in pkgutil.iter_modules(d.__path__): importlib.import_module('noa.diagnostics.' + m.name)\n"
        "print(' '.join(sorted(k for k in sys.modules if k.startswith('noa.train.'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "noa.train.rundir" not in loaded, loaded


# ---- issue 37, item 11: pictures readable at a glance ----------------------------------------------


def _batch_records(steps: range, phase: str) -> list[dict]:
    return [
        {"kind": "train_batch", "epoch": 1, "batch": s, "global_step": s, "phase": phase, "total": 1.0 / s,
         "traj": 0.5 / s, "commit": None, "latent": None, "lr": 1e-3}
        for s in steps
    ]  # fmt: skip


def test_rollout_series_of_fewer_than_3_points_are_left_out_and_the_curves_sit_on_two_rows(tmp_path):
    # The quickstart's recipe: a long one-step phase, then two rollout batches and one epoch record.
    records = _batch_records(range(1, 21), "one-step") + _batch_records(range(21, 23), "rollout")
    records.append({"kind": "epoch", "epoch": 1, "global_step": 22, "train_total": 0.1, "val_total": 0.2,
                    "train_traj": 0.05, "val_traj": 0.1, "train_one_step_total": 0.3})  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    c = curves.training_curves_of(tmp_path / "step_22.pt", {"global_step": 22})
    assert {"total loss", "L_traj"} <= set(c.panels)  # the data keeps every series
    panels, left_out = curves.readable_panels(c)
    assert list(panels) == [curves.ONE_STEP_PANEL, "learning rate"]  # both rollout panels had < 3 points
    assert left_out == [
        "train (per batch) of total loss, L_traj",
        "train (epoch mean) of total loss, L_traj",
        "val of total loss, L_traj",
    ]
    fig = plots.training_figure(c)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == [curves.ONE_STEP_PANEL, "learning rate"]
    assert "left out, fewer than 3 points each" in fig.get_suptitle()
    # A third rollout batch makes a line: the panel is drawn, its one-point series are not.
    records += _batch_records(range(23, 24), "rollout")
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    c = curves.training_curves_of(tmp_path / "step_23.pt", {"global_step": 23})
    panels, _ = curves.readable_panels(c)
    assert [s.label for s in panels["total loss"]] == ["train (per batch)"]
    fig = plots.training_figure(c)
    rows = {round(ax.get_position().y0, 2) for ax in fig.axes if ax.get_visible()}
    assert len(rows) == 2 and len([ax for ax in fig.axes if ax.get_visible()]) == 4


def test_frames_are_scaled_over_the_frames_after_t0_so_a_peaked_ic_does_not_flatten_them():
    cno = torch.zeros(1, 3, 16, 16)
    cno[0, 0, 8, 8] = 15.0  # a localized IC's peak at t = 0
    cno[0, 1:] = torch.linspace(-1.0, 1.0, 256).reshape(16, 16)
    fig = plots.frames_figure(cno, cno.clone(), [0, 4, 8], ["row 0"])
    images = [ax.get_images()[0] for ax in fig.subfigs[0].axes if ax.get_images()][:-1]
    lo, hi = images[2].get_clim()
    assert -1.0 < lo < -0.95 and 0.95 < hi < 1.0  # the later frames' 1st and 99th percentiles, not 0 .. 15
    assert all(image.get_clim() == (lo, hi) for image in images)  # CNO and NOA share the row's scale
    bar = next(ax for ax in fig.subfigs[0].axes if "percentile after t=0" in ax.get_ylabel())
    assert "(all frames: -1 .. 15)" in bar.get_ylabel()


def test_codebook_usage_is_one_figure_of_usage_fractions_not_a_histogram_per_codebook(tmp_path):
    noa = [[3, 1, 0, 0], [0, 0, 4, 0], [2, 2]]
    cno = [[3, 1, 0, 0], [4, 0, 0, 0], [1, 3]]
    fractions = plots.usage_fractions(noa)
    assert fractions.shape == (3, 4) and np.isnan(fractions[2, 2:]).all()
    assert fractions[0, :2].tolist() == [0.75, 0.25]
    fig = plots.codebook_usage_figure(noa, cno, ["initial L0", "summary L0", "temporal L0"])
    heat = [ax for ax in fig.axes if ax.get_images()]
    overlap = next(ax for ax in fig.axes if ax.containers)
    assert len(heat) == 2 and len(fig.axes) == 4  # NOA and CNO heat maps, the overlap bars, one colour bar
    assert [bar.get_width() for bar in overlap.containers[0]] == pytest.approx([1.0, 0.0, 0.75])
    assert [t.get_text() for t in heat[0].get_yticklabels()] == ["initial L0", "summary L0", "temporal L0"]
    assert fig.get_suptitle() == "tokens per codebook: 4 of NOA rollouts, 4 of CNO rollouts"  # how noisy the shares are
    path = plots.codebook_usage(noa, cno, ["a", "b", "c"], tmp_path / "usage.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_frame_labels_leave_out_the_parameter_the_rows_update_rule_does_not_read(setup):
    from noa.diagnostics.evaluate import frame_labels

    with h5py.File(setup["dataset"], "r") as f:
        thetas = f["parameters/params"][:]
        info = h5.read_info(f)
    rules = [CNO_SPACE.decode(t)["update_policy"] for t in thetas]
    convex, residual = rules.index("convex"), rules.index("residual")
    rows = sorted([convex, residual])  # h5py reads rows in increasing order, as the report passes them
    by_rule = dict(zip((rules[r] for r in rows), frame_labels(setup["dataset"], info, rows)))
    assert "alpha=" in by_rule["convex"] and "dt=" not in by_rule["convex"]
    assert "dt=" in by_rule["residual"] and "alpha=" not in by_rule["residual"]
