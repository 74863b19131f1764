"""The two phases of a run as the user meets them: teacher forcing, warnings, reports."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path

import pytest

from noa.diagnostics import curves
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import Trainer, train
from noa.train.settle import settle
from noa.train.state import Progress
from helpers import run_args


def test_teacher_forcing_counts_from_the_first_rollout_batch(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_log: list[str]
) -> None:
    """Two one-step batches, then two teacher-forced rollout batches, then free rollouts; the header says so."""
    import noa.train.loop as loop

    forced: list[bool] = []
    real = loop.train_batch

    def spy(obj, ic, params, target, teacher_forced=False):  # type: ignore[no-untyped-def]
        forced.append(teacher_forced)
        return real(obj, ic, params, target, teacher_forced)

    monkeypatch.setattr(loop, "train_batch", spy)
    train(run_args(tiny_dataset, tmp_path / "ck", one_step_steps=2, teacher_forcing_steps=2, max_steps=5))
    assert forced == [True, True, False]
    assert any(
        line.startswith(
            "Teacher forcing for the first 2 batches of the rollout phase (batches 3-4, after the one-step phase): "
        )
        for line in train_log
    )


def _warnings(args: dict, log: list[str]) -> list[str]:
    log.clear()
    Trainer(settle(args))
    return [line for line in log if line.startswith("Warning:")]


def test_a_one_step_phase_over_the_whole_run_warns_also_after_a_shortening_resume(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    # 40 samples, val 0.25: 30 train -> 7 batches per epoch, 2 epochs = 14 batches; a sound run otherwise.
    args = run_args(tiny_dataset, tmp_path / "ck", n_samples=40, val_split=0.25)
    assert _warnings({**args, "one_step_steps": 13}, train_log) == []
    assert _warnings({**args, "one_step_steps": 14}, train_log) == [
        "Warning: the one-step phase (--one-step-steps 14) covers the whole run (14 batches): no batch rolls out, so "
        "L_commit, L_latent and the projector never train; lower --one-step-steps or raise --epochs"
    ]
    train({**args, "max_steps": 1})  # the default phase: the first 7 of 14 batches
    shortened = {"resume": str(tmp_path / "ck" / "step_1.pt"), "epochs": 1, "device": "cpu"}
    assert [line.split(":")[1] for line in _warnings(shortened, train_log)] == [
        " the one-step phase (--one-step-steps 7) covers the whole run (7 batches)"
    ]


def test_a_fine_tune_has_no_one_step_phase_unless_asked_and_says_so(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    pretrained = tmp_path / "pre"
    train(run_args(tiny_dataset, pretrained, max_steps=1))  # a fresh run: the first 3 of 6 batches are one-step
    start = {"init_from": str(pretrained / "step_1.pt"), "dataset": str(tiny_dataset), "device": "cpu"}
    train_log.clear()
    assert settle({**start, "checkpoint_dir": str(tmp_path / "a")}).config.one_step_steps == 0
    kept = [line for line in train_log if line.startswith("The fine-tune keeps")]
    assert kept[0].endswith("; no one-step phase: the model already knows the map (--one-step-steps N asks for one)")
    train_log.clear()
    asked = settle({**start, "checkpoint_dir": str(tmp_path / "b"), "one_step_steps": 2})
    assert asked.config.one_step_steps == 2
    kept = [line for line in train_log if line.startswith("The fine-tune keeps")]
    assert kept[0].endswith("; one-step phase: the first 2 batches (--one-step-steps)")


def _metrics(ck: Path) -> list[dict]:
    return [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]


def test_epoch_means_keep_the_phases_apart_and_average_each_loss_over_the_batches_that_have_it(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    """Epoch 1: two one-step batches and one rollout batch; epoch 2: three rollout batches."""
    ck = tmp_path / "ck"
    train_log.clear()
    args = run_args(tiny_dataset, ck, vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, one_step_steps=2)
    train(args)
    records = _metrics(ck)
    batches = [r for r in records if r["kind"] == "train_batch"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["phase"] for r in batches] == ["one-step"] * 2 + ["rollout"] * 4

    def mean(epoch: int, phase: str, key: str) -> float:
        values = [r[key] for r in batches if r["epoch"] == epoch and r["phase"] == phase]
        return sum(values) / len(values)

    first, second = epochs
    for key in ("total", "traj", "commit", "latent"):  # the rollout phase's alone
        assert first[f"train_{key}"] == pytest.approx(mean(1, "rollout", key), rel=1e-12)
        assert second[f"train_{key}"] == pytest.approx(mean(2, "rollout", key), rel=1e-12)
    for key in ("total", "traj"):
        assert first[f"train_one_step_{key}"] == pytest.approx(mean(1, "one-step", key), rel=1e-12)
        assert second[f"train_one_step_{key}"] is None
    assert (first["train_one_step_batches"], first["train_rollout_batches"]) == (2, 1)
    history = load_checkpoint(ck / "epoch_2.pt")["history"]
    assert history["train_loss"] == [first["train_total"], second["train_total"]]
    assert history["train_commit"] == [first["train_commit"], second["train_commit"]]
    assert history["train_one_step_loss"] == [first["train_one_step_total"], None]
    assert history["train_one_step_traj"] == [first["train_one_step_traj"], None]
    train_lines = [line for line in train_log if line.startswith("  Train")]
    assert train_lines[0].startswith("  Train (one-step phase, 2 batches): total=")
    assert "commit=" not in train_lines[0]
    assert train_lines[1].startswith(f"  Train (rollout phase, 1 batch): total={first['train_total']:.4f}")
    assert f"commit={first['train_commit']:.6f}" in train_lines[1] and train_lines[1].endswith("s]")
    assert train_lines[2].startswith(f"  Train: total={second['train_total']:.4f}")
    assert any(line.startswith("  [1/3] one-step loss=") for line in train_log)


def test_sums_from_before_the_phases_resume_as_the_phase_they_ran_in() -> None:
    """A checkpoint's flat sums (one count for every loss) are read as one phase's, as they were reported."""
    progress = Progress()
    progress.load_state_dict({"epoch_sums": {"total": 3.0, "traj": 2.0, "commit": 1.0, "count": 2.0}}, None, "rollout")
    assert progress.epoch_means(("total", "traj", "commit", "latent")) == {
        "rollout": {"total": 1.5, "traj": 1.0, "commit": 0.5, "latent": None}
    }
    assert progress.batches("rollout") == 2 and progress.batches("one-step") == 0


def _record(kind: str, step: int, phase: str, total: float) -> dict:
    return {
        "kind": kind,
        "epoch": 1,
        "batch": step,
        "global_step": step,
        "total": total,
        "traj": total / 2,
        "phase": phase,
        "lr": 1e-3,
    }


def test_the_training_curves_draw_the_one_step_phase_apart_from_the_rollouts(tmp_path: Path) -> None:
    records = [_record("train_batch", s, "one-step", 10.0) for s in (1, 2)] + [
        _record("train_batch", s, "rollout", 1.0) for s in (3, 4)
    ]
    records.append(
        {
            "kind": "epoch",
            "epoch": 1,
            "global_step": 4,
            "train_total": 1.0,
            "train_traj": 0.5,
            "val_total": 0.9,
            "val_traj": 0.45,
            "train_one_step_total": 10.0,
            "train_one_step_traj": 5.0,
        }
    )
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    drawn = curves.training_curves_of(tmp_path / "step_4.pt", {"global_step": 4})
    assert drawn is not None
    assert list(drawn.panels) == ["one-step phase (train)", "total loss", "L_traj", "learning rate"]
    for title in ("total loss", "L_traj"):
        per_batch = drawn.panels[title][0]
        assert per_batch.label == "train (per batch)" and per_batch.x == [3.0, 4.0]
    one_step = {series.label: series for series in drawn.panels[curves.ONE_STEP_PANEL]}
    assert one_step["unit-scale loss (per batch)"].y == [10.0, 10.0] and one_step["MSE (per batch)"].y == [5.0, 5.0]
    assert one_step["unit-scale loss (epoch mean)"].y == [10.0]
    history = curves.from_history(
        {"train_loss": [None, 1.0], "val_loss": [2.0, 1.0], "train_one_step_loss": [10.0, None]}
    )
    assert history is not None and history.panels[curves.ONE_STEP_PANEL][0].x == [1.0]
    assert [s.x for s in history.panels["total loss"]] == [[2.0], [1.0, 2.0]]


def test_tensorboard_keeps_the_one_step_losses_in_series_of_their_own(tiny_dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(settle(run_args(tiny_dataset, tmp_path / "ck")))
    tags: list[str] = []
    trainer._metrics = io.StringIO()
    trainer._tb = types.SimpleNamespace(add_scalar=lambda tag, value, step: tags.append(tag))
    trainer._record(_record("train_batch", 1, "one-step", 10.0))
    trainer._record(_record("train_batch", 2, "rollout", 1.0))
    assert tags == [
        "train_batch/one_step_total",
        "train_batch/one_step_traj",
        "train_batch/lr",
        "train_batch/total",
        "train_batch/traj",
        "train_batch/lr",
    ]
