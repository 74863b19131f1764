"""`noa diagnose` on checkpoints written by real tiny training runs: a physics-only run (no
tokenizer), a run with a tokenizer but no L_latent and λ_commit = 0 (None losses in its
history), and a run moved to another directory after training with relative paths.

Pins: the report is written for each; sections that need a tokenizer say why they are
skipped; ``--vqvae-path`` supplies one; recorded paths resolve from any working directory,
and a path that is gone gives one error naming the flag to pass.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import run_args
from noa.cli import main
from noa.diagnostics import diagnose
from noa.diagnostics.evaluate import NO_TOKENIZER, SKIP_REASON
from noa.errors import NoaError
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train

SECTIONS = ("VQ Reconstruction", "Token Diversity", "Alignment Correlation", "Temporal Consistency")
PNGS = ("training_curves.png", "error_vs_horizon.png", "frames.png")


def quiet(_: str) -> None:
    pass


def _train(dataset: Path | str, checkpoint_dir: Path | str, **kw) -> Path:
    """One epoch of 3 batches on the tiny dataset; returns the best checkpoint."""
    train(run_args(dataset, checkpoint_dir, epochs=1, save_every=0, **kw))
    return Path(checkpoint_dir) / "best_model.pt"


@pytest.fixture(scope="module")
def physics_only(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tiny_dataset, tmp_path_factory.mktemp("physics") / "ck")


def _assert_report_written(out: Path, *, codebook: bool) -> str:
    md = (out / "report.md").read_text()
    for png in PNGS:
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in md, png
    assert (out / "codebook_usage.png").exists() == codebook
    json.loads((out / "summary.json").read_text())
    return md


def test_physics_only_checkpoint_gets_rollout_quality_and_says_why_tokens_are_skipped(physics_only: Path) -> None:
    ckpt = load_checkpoint(physics_only)
    assert ckpt["args"]["vqvae_path"] is None and ckpt["history"]["train_commit"] == [None]
    out = physics_only.parent / "diagnostics"
    result = diagnose(physics_only, None, None, n_samples=4, out_dir=out, log=quiet)
    assert result.tokenizer is None and result.reconstruction is None and result.diversity is None
    assert result.alignment is None and result.consistency is None and result.cno_reconstruction is None
    assert len(re.findall(rf"^skipped: {re.escape(NO_TOKENIZER)}$", result.text, re.M)) == 4  # sections 1-4
    for name in SECTIONS:
        assert re.search(rf"^{name}:\s+skipped$", result.text, re.M)
    assert f"Token agreement: skipped ({NO_TOKENIZER})" in result.text
    q = result.rollout
    assert q.token_agreement is None and q.token_agreement_reference is None
    assert q.overall_mse > 0 and q.overall_floor > 0 and len(q.mse) == 8
    # The verdict rests on rollout quality alone, and the report says so.
    assert result.verdict_detail.decided_by == ["rollout error"]
    assert result.verdict.split(" - ")[0] in ("EXCELLENT", "GOOD", "MODERATE", "POOR")
    assert f"  token agreement:                  not evaluated ({NO_TOKENIZER})" in result.text
    md = _assert_report_written(out, codebook=False)
    assert "Skipped: no tokenizer" in md
    # Per-batch training curves from the run's metrics.jsonl; L_commit was never computed.
    assert f"From {physics_only.parent / 'metrics.jsonl'} (3 batches, 1 epochs)." in md
    assert "| objective | L_traj (physics only: trained without a tokenizer) |" in md


def test_vqvae_path_supplies_a_tokenizer_to_a_physics_only_checkpoint(physics_only: Path, tiny_tokenizer: Path) -> None:
    result = diagnose(physics_only, tiny_tokenizer, None, n_samples=4, log=quiet)
    assert result.tokenizer == str(tiny_tokenizer)
    assert result.reconstruction is not None and result.diversity is not None
    assert result.alignment is None and result.skipped == {
        "Alignment Correlation": SKIP_REASON,
        "Temporal Consistency": SKIP_REASON,
    }
    assert 0 <= result.rollout.token_agreement <= 1
    assert (
        f"note: the NOA was trained without a tokenizer (L_traj only); its rollouts are tokenized with {tiny_tokenizer}"
        in result.text
    )
    assert {c.name for c in result.verdict_detail.criteria if c.level is not None} == {
        "alignment ladders (sections 1-4)",
        "rollout error",
        "token agreement",
    }


def test_the_cli_accepts_vqvae_path_for_a_physics_only_checkpoint(
    physics_only: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    argv = [
        "diagnose",
        "--noa-checkpoint",
        str(physics_only),
        "--vqvae-path",
        str(tiny_tokenizer),
        "--n-samples",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    _assert_report_written(out, codebook=True)


def test_history_with_none_losses_still_gives_a_report(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    checkpoint = _train(tiny_dataset, tmp_path / "ck", vqvae_path=str(tiny_tokenizer), lambda_commit=0.0)
    history = load_checkpoint(checkpoint)["history"]
    assert history["train_latent"] == [None] and history["val_latent"] == [None]
    (checkpoint.parent / "metrics.jsonl").unlink()  # the curves come from the history alone
    out = tmp_path / "report"
    diagnose(checkpoint, None, None, n_samples=2, out_dir=out, log=quiet)
    md = _assert_report_written(out, codebook=True)
    assert "From the checkpoint's history (per epoch; no metrics.jsonl beside it)." in md


def test_a_moved_run_trained_with_relative_paths_diagnoses_from_anywhere(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(tiny_dataset, project / "data" / "tiny.h5")
    monkeypatch.chdir(project)
    _train("data/tiny.h5", "runs/a")
    ckpt = load_checkpoint(project / "runs" / "a" / "best_model.pt")
    assert ckpt["args"]["dataset"] == str(project / "data" / "tiny.h5")  # stored absolute
    assert ckpt["launch_dir"] == str(project)

    moved = tmp_path / "archive" / "a"
    shutil.move(project / "runs" / "a", moved)
    monkeypatch.chdir(tmp_path / "archive")
    assert main(["diagnose", "--noa-checkpoint", str(moved / "best_model.pt"), "--n-samples", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held-out pool: 2 validation samples of the training run and 24 samples beyond its --n-samples" in printed
    assert (moved / "diagnostics" / "report.md").is_file()

    # The data moves too: one line naming the flag, then that flag finds the training data by fingerprint.
    shutil.move(project / "data", tmp_path / "data-moved")
    assert main(["diagnose", "--noa-checkpoint", str(moved / "best_model.pt"), "--n-samples", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"trained with dataset {project / 'data' / 'tiny.h5'}, which is not at" in err and "pass --dataset" in err
    result = diagnose(moved / "best_model.pt", None, tmp_path / "data-moved" / "tiny.h5", n_samples=3, log=quiet)
    assert "held-out pool: 2 validation samples of the training run" in result.text


def test_old_relative_paths_resolve_against_the_launch_dir_else_the_checkpoint_dir(
    tiny_dataset: Path, physics_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from noa.train.checkpoint import recorded_path

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_dataset, run / "data.h5")
    # A checkpoint from before paths were stored absolute, of a run launched in its own directory.
    old = {**load_checkpoint(physics_only), "args": {**load_checkpoint(physics_only)["args"], "dataset": "data.h5"}}
    old.pop("launch_dir")
    torch.save(old, run / "old.pt")
    monkeypatch.chdir(tmp_path)
    assert recorded_path(old, "run/old.pt", "dataset") == run / "data.h5"
    result = diagnose(run / "old.pt", None, None, n_samples=2, log=quiet)
    assert result.dataset == str(run / "data.h5")
    assert "validation samples of the training run" in result.text  # same fingerprint: the split is rebuilt
    # With its launch directory recorded, a relative path is read from there.
    torch.save({**old, "launch_dir": str(tmp_path / "elsewhere")}, run / "launched.pt")
    with pytest.raises(
        NoaError, match=rf"which is not at {tmp_path / 'elsewhere' / 'data.h5'} any more; pass --dataset"
    ):
        diagnose(run / "launched.pt", None, None, log=quiet)


def test_rows_of_another_file_that_are_training_samples_are_not_called_held_out(
    physics_only: Path, tmp_path: Path
) -> None:
    import h5py

    from noa.data.generate import GenerateConfig, generate
    from noa.data.loader import split_rows, usable_rows

    # Generated with the training data's --seed: its 20 rows are the first 20 of the training file.
    other = tmp_path / "same_seed.h5"
    generate(GenerateConfig(n_samples=20, grid=16, timesteps=8, seed=11), other, progress=False, log=quiet)
    args = load_checkpoint(physics_only)["args"]
    trained = split_rows(usable_rows(args["dataset"], args["n_samples"]), args["val_split"], args["seed"]).train
    with h5py.File(args["dataset"]) as t, h5py.File(other) as f:
        thetas = {t["parameters/params"][r].tobytes() for r in trained}
        copies = [r for r in range(20) if f["parameters/params"][r].tobytes() in thetas]
    assert len(copies) == len(trained) == 14
    result = diagnose(physics_only, None, other, n_samples=20, out_dir=tmp_path / "out", log=quiet)
    assert not set(result.rows) & set(copies) and len(result.rows) == 20 - 14
    assert "14 rows that are training samples (as in files generated with the same --seed) are left out" in result.text
    assert "6 valid samples that are none of the run's training samples" in result.text


def test_a_report_directory_has_one_writer_and_its_files_are_replaced_whole(
    physics_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noa import outputs

    out = tmp_path / "report"
    with outputs.exclusive(out, "--out"):  # another diagnosis writing there
        with pytest.raises(NoaError, match=r"--out .*report is being written by another noa process"):
            diagnose(physics_only, None, None, n_samples=2, out_dir=out, log=quiet)
    diagnose(physics_only, None, None, n_samples=2, out_dir=out, log=quiet)
    before = {name: (out / name).read_bytes() for name in ("report.md", "summary.json", "frames.png")}

    def power_cut(*_a: object) -> None:
        raise OSError("simulated power cut before the rename")

    monkeypatch.setattr(outputs.os, "replace", power_cut)
    with pytest.raises(OSError, match="simulated power cut"):
        diagnose(physics_only, None, None, n_samples=3, out_dir=out, log=quiet)  # another report: other bytes
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in before} == before  # the earlier report, whole
    assert list(out.glob(".*.tmp-*"))  # what the cut-off writer left ...
    diagnose(physics_only, None, None, n_samples=2, out_dir=out, log=quiet)
    assert not list(out.glob(".*.tmp-*"))  # ... the next diagnosis removes


def test_a_fine_tunes_held_out_rows_leave_out_the_rows_every_run_it_descends_from_trained_on(
    physics_only: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from noa.api.samples import training_split
    from noa.data.generate import GenerateConfig, generate
    from noa.data.loader import run_split
    from noa.diagnostics.evaluate import checkpoint_pool
    from noa.train.checkpoint import save_atomic

    other = tmp_path / "other.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=5), other, progress=False, log=quiet)
    source = tmp_path / "source" / "best_model.pt"  # a copy of the pretrained run, deleted at the end
    source.parent.mkdir()
    shutil.copy2(physics_only, source)
    pretrained = set(run_split(tiny_dataset, load_checkpoint(source)["args"]).train.tolist())
    assert len(pretrained) == 14
    once, twice = tmp_path / "ft", tmp_path / "ft2"
    finetune = dict(dataset=str(other), epochs=1, max_steps=1, device="cpu")
    train(
        {"resume": str(source), "checkpoint_dir": str(once), **finetune}
    )  # the guide's fine-tune: --resume on other data
    train({"init_from": str(once / "step_1.pt"), "checkpoint_dir": str(twice), **finetune})
    train(
        {"resume": "auto", "checkpoint_dir": str(twice), "max_steps": 1, "device": "cpu"}
    )  # a resume keeps the source

    # Diagnosed on the data its source was pretrained on, the fine-tune of a fine-tune scores no row it learned.
    result = diagnose(twice / "step_2.pt", None, tiny_dataset, n_samples=40, out_dir=tmp_path / "out", log=quiet)
    assert not set(result.rows) & pretrained and len(result.rows) == 40 - 14
    assert "26 rows held out from this run and every run it was fine-tuned from" in result.text
    assert f"{source}, which it descends from by fine-tuning: 2 validation samples of the training run" in result.text
    rows, _ = checkpoint_pool(once / "step_1.pt", tiny_dataset)  # what noa compare scores
    assert not set(rows.tolist()) & pretrained and len(rows) == 26
    reseeded = load_checkpoint(twice / "step_2.pt")  # split by another seed, its own rows are not its source's
    reseeded["args"]["seed"] = 3
    save_atomic(reseeded, twice / "reseeded.pt")
    split = training_split(twice / "reseeded.pt", tiny_dataset)  # what the Python API calls held out
    assert set(split.train.tolist()) != pretrained and not set(split.held_out.tolist()) & pretrained

    # Both ways of starting a fine-tune record where it came from; the resume kept it.
    recorded = [load_checkpoint(p) for p in (once / "step_1.pt", twice / "step_1.pt", twice / "step_2.pt")]
    assert [c["fine_tuned_from"] for c in recorded] == [str(source), str(once / "step_1.pt"), str(once / "step_1.pt")]
    assert recorded[0]["args"]["init_from"] == str(source) and recorded[0]["args"]["resume"] == str(source)

    # A checkpoint written before the source was recorded tells it by its --resume of another run's file.
    legacy = load_checkpoint(once / "step_1.pt")
    del legacy["fine_tuned_from"]
    legacy["args"]["init_from"] = None
    save_atomic(legacy, once / "legacy.pt")
    rows, _ = checkpoint_pool(once / "legacy.pt", tiny_dataset)
    assert not set(rows.tolist()) & pretrained and len(rows) == 26

    # A source that can no longer be read is named: its rows may be among those scored.
    source.unlink()
    result = diagnose(twice / "step_2.pt", None, tiny_dataset, n_samples=40, out_dir=tmp_path / "out2", log=quiet)
    assert len(result.rows) == 40
    assert "WARNING: some of these rows may be training samples: step_1.pt was fine-tuned from" in result.text
    assert f"{source}, which cannot be read any more" in result.text
