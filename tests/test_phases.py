"""The two phases of a run as the user meets them: teacher forcing, warnings, reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from noa.train.loop import Trainer, train
from noa.train.settle import settle
from test_train_loop import run_args


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
