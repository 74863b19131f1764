"""Warnings said once, at the start, for settings that quietly spoil a whole run."""

from __future__ import annotations

from pathlib import Path


from helpers import run_args
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import Trainer, train
from noa.train.settle import settle


def _start(args: dict, log: list[str]) -> list[str]:
    Trainer(settle(args))
    return [line for line in log if line.startswith("Warning:")]


def test_warmup_longer_than_the_run_and_a_tiny_validation_set_warn_in_one_line_each(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    # 16 samples: 14 train / 2 validation; 3 batches per epoch x 2 epochs = 6 batches.
    warnings = _start(run_args(tiny_dataset, tmp_path / "ck", warmup_steps=500), train_log)
    assert len(warnings) == 2
    assert warnings[0].startswith("Warning: --warmup-steps 500 is longer than the whole run (6 batches)")
    assert "lower --warmup-steps (e.g. 1)" in warnings[0]
    assert warnings[1].startswith("Warning: only 2 validation samples")


def test_a_sound_run_starts_without_warnings(tiny_dataset: Path, tmp_path: Path, train_log: list[str]) -> None:
    assert (
        _start(run_args(tiny_dataset, tmp_path / "ck", n_samples=40, val_split=0.25, warmup_steps=2), train_log) == []
    )


def test_teacher_forcing_with_a_single_window_warns(tiny_dataset: Path, tmp_path: Path, train_log: list[str]) -> None:
    args = run_args(
        tiny_dataset, tmp_path / "ck", n_samples=40, val_split=0.25, warmup_steps=2, teacher_forcing_steps=3
    )
    assert _start({**args, "bptt_window": args["timesteps"]}, train_log) == [
        "Warning: --teacher-forcing-steps 3 does nothing with one window (--bptt-window 8 >= --timesteps 8): "
        "the only window starts from the IC; use a smaller --bptt-window"
    ]
    train_log.clear()
    assert _start({**args, "bptt_window": 4}, train_log) == []


def test_the_default_warmup_follows_a_short_run_and_the_header_says_so(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    # 14 train samples, batches of 4: 3 batches per epoch x 14 epochs = 42 batches; the guide's 500 would never end.
    args = {k: v for k, v in run_args(tiny_dataset, tmp_path / "ck", epochs=14).items() if k != "warmup_steps"}
    run = settle(args)
    assert run.config.warmup_steps == 4
    assert [line for line in train_log if line.startswith("Warning: --warmup-steps")] == []
    train({**args, "max_steps": 1})
    assert (
        "LR: peak 1.00e-03, cosine schedule; warmup 4 batches (default: a tenth of this run's 42 batches, "
        "the guide's 500 being too long for it; --warmup-steps sets it)" in train_log
    )
    ckpt = load_checkpoint(tmp_path / "ck" / "step_1.pt")
    assert ckpt["args"]["warmup_steps"] == 4  # a resume keeps it


def test_an_explicit_warmup_is_kept_and_named_in_the_header(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    train({**run_args(tiny_dataset, tmp_path / "ck", warmup_steps=500), "max_steps": 1})
    assert "LR: peak 1.00e-03, cosine schedule; warmup 500 batches (--warmup-steps)" in train_log
    assert any(line.startswith("Warning: --warmup-steps 500 is longer than the whole run") for line in train_log)
