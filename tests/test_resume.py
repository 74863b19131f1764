"""Checkpointing and exact resume: a resumed run is indistinguishable from an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_same_state, run_args
from noa.data.generate import GenerateConfig, generate
from noa.errors import NoaError
from noa.train import checkpoint as checkpoint_module
from noa.train.checkpoint import find_latest, load_checkpoint, save_atomic
from noa.train.loop import train


def _args(dataset: Path, tokenizer: Path, ck: Path, **kw) -> dict:
    # 14 train samples, batch 4 -> 3 batches per epoch; all three losses on.
    return run_args(
        dataset, ck, vqvae_path=str(tokenizer), enable_latent_loss=True, lambda_latent=0.5, latent_sample_steps=3, **kw
    )


def _batch_records(ck: Path) -> list[dict]:
    records = [json.loads(l) for l in (ck / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sec"} for r in records if r["kind"] in ("train_batch", "epoch")]


@pytest.fixture(scope="module")
def straight(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = tmp_path_factory.mktemp("straight")
    train(_args(tiny_dataset, tiny_tokenizer, ck))
    return ck


def test_resume_from_a_mid_epoch_step_checkpoint_is_exact(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, tiny_tokenizer, ck, max_steps=2))
    assert (ck / "step_2.pt").exists() and not (ck / "epoch_1.pt").exists()
    lines = train_log
    lines.clear()  # only what follows
    # The guide's short resume command: flags it leaves out come from the checkpoint.
    train(
        {
            "resume": str(ck / "step_2.pt"),
            "dataset": str(tiny_dataset),
            "epochs": 2,
            "batch_size": 4,
            "enable_latent_loss": True,
            "device": "cpu",
        }
    )
    text = "\n".join(lines)
    for expected in (
        "Resuming from checkpoint:",
        "  ✓ Loaded model weights",
        "  ✓ Loaded optimizer state",
        "  ✓ Loaded scheduler state",
        "  ✓ Resuming from epoch 1, step 2",
        "    (Will skip first 2 batches of epoch 1)",
        "  ✓ No validation history (first epoch incomplete)",
        "  ✓ Loaded latent projector weights",
        "  Skipping first 2 batches (already processed)...",
        "  [3/3] loss=",
    ):
        assert expected in text, expected
    first_epoch = text.split("Epoch 2/2")[0]
    assert "[1/3]" not in first_epoch and "[2/3]" not in first_epoch
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _batch_records(straight) == _batch_records(ck)


def test_resume_from_an_epoch_checkpoint_is_exact(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, tiny_tokenizer, ck, max_steps=3))
    lines = train_log
    lines.clear()  # only what follows
    train({"resume": str(ck / "epoch_1.pt"), "device": "cpu"})
    text = "\n".join(lines)
    assert "  ✓ Resuming from epoch 2, step 3" in text and "Will skip" not in text
    assert "  ✓ Best val loss so far: " in text
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))


def test_resume_inside_teacher_forcing_is_exact(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    """Teacher forcing for the first 4 of 6 batches (rollouts from the start: no one-step phase):
    a run stopped at batch 2 and resumed (the setting comes from the checkpoint) ends where the
    uninterrupted run ends."""
    whole, ck, free = tmp_path / "whole", tmp_path / "ck", tmp_path / "free"
    train(_args(tiny_dataset, tiny_tokenizer, whole, teacher_forcing_steps=4, one_step_steps=0))
    train(_args(tiny_dataset, tiny_tokenizer, ck, teacher_forcing_steps=4, one_step_steps=0, max_steps=2))
    train({"resume": str(ck / "step_2.pt"), "device": "cpu"})
    assert_same_state(load_checkpoint(whole / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _batch_records(whole) == _batch_records(ck)
    train(_args(tiny_dataset, tiny_tokenizer, free, one_step_steps=0, max_steps=1))
    assert _batch_records(whole)[0]["phase"] == "rollout"
    assert _batch_records(whole)[0] != _batch_records(free)[0]  # teacher forcing changed the first batch


def test_resume_auto_takes_the_newest_intact_checkpoint(straight: Path, tmp_path: Path, train_log: list[str]) -> None:
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(straight, ck)
    newest = ck / "step_6.pt"
    os.utime(newest, None)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # torn
    path, ckpt = find_latest(ck)
    assert path.name != "step_6.pt" and "model_state_dict" in ckpt
    assert any("step_6.pt" in n and "corrupt or not a noa file" in n for n in train_log)


def test_changing_the_optimisation_path_on_resume_is_refused(straight: Path, tiny_dataset: Path) -> None:
    with pytest.raises(NoaError, match="--bptt-window: checkpoint 2, now 4"):
        train({"resume": str(straight / "step_4.pt"), "bptt_window": 4, "device": "cpu"})
    with pytest.raises(
        NoaError,
        match="--batch-size 2 on 1 rank.s. is a global batch of 2, but the run was trained with a global batch of 4",
    ):
        train({"resume": str(straight / "step_4.pt"), "batch_size": 2, "device": "cpu"})


def test_old_format_checkpoint_infers_step_and_warns(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    full = load_checkpoint(straight / "step_2.pt")
    ck = tmp_path / "old"
    ck.mkdir()
    save_atomic(
        {"model_state_dict": full["model_state_dict"], "optimizer_state_dict": full["optimizer_state_dict"]},
        ck / "step_2.pt",
    )
    lines = train_log
    lines.clear()  # only what follows
    result = train({**_args(tiny_dataset, tiny_tokenizer, ck), "resume": str(ck / "step_2.pt"), "epochs": 1})
    text = "\n".join(lines)
    for expected in (
        "  ⚠ Old checkpoint format detected - inferred global_step=2 from filename",
        "  ⚠ Syncing scheduler to step 2...",
        "  ✓ Scheduler synced to step 2, lr=",
        "  ✓ Resuming from epoch 1, step 2",
        "    (Will skip first 2 batches of epoch 1)",
        "  ✓ No validation history (first epoch incomplete)",
        "  ⚠⚠ WARNING: Old checkpoint has no projector weights!",
        "Recommend: Either disable --enable-latent-loss or train from scratch.",
    ):
        assert expected in text, expected
    assert result.global_step == 3
    from noa.train.schedule import lr_at

    synced = [l for l in lines if "Scheduler synced" in l][0]
    assert f"lr={lr_at(2, 1e-3, 2, 6):.2e}" in synced


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another dataset of the same shape: a fine-tune's target."""
    path = tmp_path_factory.mktemp("other") / "other.h5"
    generate(
        GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=99, store_trajectories=True),
        path,
        progress=False,
        log=lambda _: None,
    )
    return path


def test_fine_tuning_on_another_dataset_starts_fresh(
    straight: Path, other: Path, tmp_path: Path, train_log: list[str]
) -> None:
    source = load_checkpoint(straight / "best_model.pt")
    lines = train_log
    lines.clear()  # only what follows
    ck = tmp_path / "ft"
    result = train(
        {
            "resume": str(straight / "best_model.pt"),
            "dataset": str(other),
            "epochs": 1,
            "lr": 1e-4,
            "checkpoint_dir": str(ck),
            "max_steps": 0,
            "device": "cpu",
        }
    )
    text = "\n".join(lines)
    assert "fine-tuning (weights only)" in text and "Fresh optimizer, LR schedule (with warmup) and epoch count" in text
    assert result.global_step == 0
    start = load_checkpoint(ck / "step_0.pt")
    assert all(torch.equal(start["model_state_dict"][k], v) for k, v in source["model_state_dict"].items())
    assert start["optimizer_state_dict"]["state"] == {} and start["args"]["lr"] == 1e-4
    # The explicit form does the same.
    lines.clear()
    train(
        {
            "init_from": str(straight / "best_model.pt"),
            "dataset": str(other),
            "epochs": 1,
            "checkpoint_dir": str(tmp_path / "ft2"),
            "max_steps": 0,
            "device": "cpu",
            "timesteps": 8,
            "bptt_window": 4,
            **{k: source["args"][k] for k in ("base_channels", "encoder_levels", "modes", "afno_blocks")},
        },
    )
    assert any(l.startswith("Fine-tuning from") for l in lines)


def test_init_from_keeps_the_pretrained_objective_and_says_so(
    straight: Path, other: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    source = load_checkpoint(straight / "best_model.pt")
    train_log.clear()
    # No --timesteps nor --bptt-window: T follows the new data, as a fresh run's does.
    train(
        {
            "init_from": str(straight / "best_model.pt"),
            "dataset": str(other),
            "epochs": 1,
            "checkpoint_dir": str(tmp_path / "ft"),
            "max_steps": 0,
            "device": "cpu",
        }
    )
    start = load_checkpoint(tmp_path / "ft" / "step_0.pt")
    args = start["args"]
    assert args["vqvae_path"] == str(tiny_tokenizer.resolve()) and args["enable_latent_loss"] is True
    assert (args["lambda_commit"], args["lambda_latent"], args["latent_sample_steps"]) == (0.5, 0.5, 3)
    assert args["timesteps"] == 8 and args["bptt_window"] == 2  # the new data's T; the run's window fits it
    projector = source["alignment_state"]["state_dict"]
    assert all(torch.equal(start["alignment_state"]["state_dict"][k], v) for k, v in projector.items())
    kept = next(l for l in train_log if "keeps best_model.pt's objective" in l)
    assert (
        "L_traj + L_commit + L_latent" in kept
        and "--enable-latent-loss" in kept
        and f"--vqvae-path {tiny_tokenizer.resolve()}" in kept
    )
    assert "  ✓ Loaded latent projector weights" in train_log


def test_init_from_flags_change_the_objective_and_the_line_says_which(
    straight: Path, other: Path, tmp_path: Path, train_log: list[str]
) -> None:
    train_log.clear()
    train(
        {
            "init_from": str(straight / "best_model.pt"),
            "dataset": str(other),
            "epochs": 1,
            "checkpoint_dir": str(tmp_path / "ft"),
            "max_steps": 0,
            "device": "cpu",
            "enable_latent_loss": False,
            "lambda_commit": 0.1,
        }
    )
    args = load_checkpoint(tmp_path / "ft" / "step_0.pt")["args"]
    assert args["enable_latent_loss"] is False and args["lambda_commit"] == 0.1 and args["vqvae_path"]
    kept = next(l for l in train_log if "keeps best_model.pt's objective" in l)
    assert (
        "; changed by flags: --lambda-commit 0.1, --no-enable-latent-loss; no one-step phase" in kept
        and "L_traj + L_commit;" in kept
    )
    assert "  ⚠ L_latent is off in this run: the checkpoint's latent projector is not carried on" in train_log


def test_atomic_write_survives_a_crash_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "step_1.pt"
    save_atomic({"model_state_dict": {"w": torch.ones(3)}}, path)

    def crash(*_a, **_k):
        raise OSError("simulated power cut")

    monkeypatch.setattr(checkpoint_module.os, "replace", crash)
    with pytest.raises(OSError):
        save_atomic({"model_state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(load_checkpoint(path)["model_state_dict"]["w"], torch.ones(3))


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path: Path) -> None:
    torn = tmp_path / "torn.pt"
    save_atomic({"model_state_dict": {"w": torch.ones(1000)}}, torn)
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.raises(NoaError, match="torn.pt is corrupt or not a noa file"):
        load_checkpoint(torn)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model_state_dict": {}, "args": __import__("argparse").Namespace(lr=1)}, unsafe)
    with pytest.raises(NoaError, match="needs arbitrary unpickling"):
        load_checkpoint(unsafe)
    with pytest.raises(NoaError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_keep_last_prunes_only_step_checkpoints(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, save_every=1, keep_last=2))
    names = {p.name for p in ck.glob("*.pt")}
    assert {n for n in names if n.startswith("step_")} == {"step_5.pt", "step_6.pt"}
    assert {"epoch_1.pt", "epoch_2.pt"} <= names


def test_files_that_only_look_like_checkpoints_are_never_pruned_resumed_or_overwritten(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    mine = {"step_notes.pt": b"notes", "epoch_notes.pt": b"more notes", "step_final.pt": b"a keeper"}
    for name, data in mine.items():
        (ck / name).write_bytes(data)
    result = train(run_args(tiny_dataset, ck, save_every=1, keep_last=2, max_steps=3))  # a fresh run beside them
    assert result.global_step == 3 and {p.name for p in ck.glob("step_*.pt")} == {
        "step_2.pt",
        "step_3.pt",
        "step_notes.pt",
        "step_final.pt",
    }
    shutil.copy(ck / "step_2.pt", ck / "step_1_keep.pt")  # the user's copy, now the newest file
    assert train({"resume": "auto", "checkpoint_dir": str(ck), "max_steps": 1, "device": "cpu"}).global_step == 4
    train({**run_args(tiny_dataset, ck, max_steps=1), "overwrite": True})
    assert all((ck / name).read_bytes() == data for name, data in mine.items()) and (ck / "step_1_keep.pt").is_file()
    assert not (ck / "step_4.pt").exists()  # the run's own files went


def test_resume_auto_in_a_directory_without_a_checkpoint_starts_fresh_there(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    # One command line for the first start and every restart (torchrun --max-restarts).
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "metrics.jsonl").write_text(
        '{"kind": "train_batch", "global_step": 1}\n{"kind": "train_ba'
    )  # a killed first attempt's
    train_log.clear()
    assert train(run_args(tiny_dataset, ck, resume="auto", max_steps=2)).global_step == 2
    assert f"--resume auto: no checkpoint in {ck} yet; starting a fresh run there" in train_log
    assert [r["global_step"] for r in _batch_records(ck)] == [
        1,
        2,
    ]  # the killed attempt's lines are trained again, not kept twice
    assert train(run_args(tiny_dataset, ck, resume="auto", max_steps=1)).global_step == 3  # the same line continues


def test_a_resume_drops_what_a_killed_attempt_logged_after_its_checkpoint(straight: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    step_4 = _copy_to(straight / "step_4.pt", ck)
    shutil.copy(straight / "metrics.jsonl", ck / "metrics.jsonl")  # as if killed after step 6, its last file step_4.pt
    (ck / ".step_6.pt.tmp-999999").write_bytes(b"half a checkpoint")
    train({"resume": "auto", "checkpoint_dir": str(ck), "device": "cpu"})
    assert _batch_records(ck) == _batch_records(straight) and not (ck / ".step_6.pt.tmp-999999").exists()
    assert step_4.is_file()


def test_the_checkpoint_max_steps_names_resumes_in_place_after_an_epoch_end(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, save_every=3, max_steps=3))  # step_3.pt is written, then epoch 1 ends
    named = next(line for line in train_log if "(--max-steps); checkpoint" in line).rsplit(" ", 1)[1]
    assert named == str(ck / "step_3.pt")
    assert (
        train({"resume": named, "max_steps": 1, "device": "cpu"}).checkpoint_dir == ck
    )  # continues, no branch into ck-2
    assert [r["epoch"] for r in _epoch_records(ck)] == [1]


def test_a_resumed_epoch_records_its_whole_time(straight: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    step_2 = _copy_to(straight / "step_2.pt", ck)
    ckpt = load_checkpoint(step_2)
    ckpt["parts"]["progress"]["epoch_seconds"] = 1000.0  # the first two batches took long before the stop
    save_atomic(ckpt, step_2)
    train({"resume": str(step_2), "max_steps": 1, "device": "cpu"})
    assert load_checkpoint(ck / "epoch_1.pt")["history"]["epoch_seconds"][0] > 1000.0


def test_the_teacher_forcing_line_is_said_only_while_teacher_forcing_lasts(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, teacher_forcing_steps=2, one_step_steps=0, max_steps=1))
    assert any(line.startswith("Teacher forcing for the first 2 batches of the rollout phase:") for line in train_log)
    train({"resume": str(ck / "step_1.pt"), "max_steps": 2, "device": "cpu"})  # still inside: said again
    train_log.clear()
    train({"resume": str(ck / "step_3.pt"), "max_steps": 1, "device": "cpu"})  # after it ended: not said
    assert train_log and not any("Teacher forcing" in line for line in train_log)


def test_overwrite_removes_the_old_runs_tensorboard_events_only(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, max_steps=1))
    (ck / "tensorboard").mkdir()
    (ck / "tensorboard" / "events.out.tfevents.1.host.1").write_bytes(b"old run")
    (ck / "tensorboard" / "notes.txt").write_text("mine")
    train({**run_args(tiny_dataset, ck, max_steps=1), "overwrite": True})
    assert sorted(p.name for p in (ck / "tensorboard").iterdir()) == ["notes.txt"]


def test_sigint_writes_a_checkpoint_and_says_how_to_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    cmd = [
        sys.executable,
        "-m",
        "noa.cli",
        "train",
        "--dataset",
        str(tiny_dataset),
        "--n-samples",
        "16",
        "--epochs",
        "50",
        "--batch-size",
        "4",
        "--timesteps",
        "8",
        "--bptt-window",
        "4",
        "--checkpoint-dir",
        str(ck),
        "--save-every",
        "0",
        "--base-channels",
        "8",
        "--encoder-levels",
        "2",
        "--modes",
        "4",
        "--afno-blocks",
        "1",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "[1/3]" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Resume with: noa train --resume" in err and "Traceback" not in err
    saved = sorted(ck.glob("step_*.pt"))
    assert saved, "no checkpoint written on SIGINT"
    ckpt = load_checkpoint(saved[-1])
    assert ckpt["global_step"] >= 1


def _copy_to(src: Path, directory: Path) -> Path:
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(src, directory / src.name))


def _epoch_records(ck: Path) -> list[dict]:
    return [r for r in _batch_records(ck) if r["kind"] == "epoch"]


def test_a_step_checkpoint_on_an_epochs_last_batch_still_ends_that_epoch(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    # A run killed right after step_3.pt (the last batch of epoch 1, written before validation).
    full = tmp_path / "full"
    train(_args(tiny_dataset, tiny_tokenizer, full, save_every=3))
    ck = tmp_path / "ck"
    step_3 = _copy_to(full / "step_3.pt", ck)
    cursor = load_checkpoint(step_3)["parts"]["cursor"]
    assert cursor["batch_in_epoch"] == 3 and cursor["global_step"] == 3 and cursor["epoch_ended"] is False
    train({"resume": str(step_3), "checkpoint_dir": str(ck), "device": "cpu"})
    assert (ck / "epoch_1.pt").exists() and (ck / "best_model.pt").exists()
    assert_same_state(load_checkpoint(straight / "epoch_1.pt"), load_checkpoint(ck / "epoch_1.pt"))
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _epoch_records(ck) == _epoch_records(straight)  # epoch 1 validated exactly once


def test_resuming_an_epoch_checkpoint_does_not_end_that_epoch_again(straight: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    epoch_1 = _copy_to(straight / "epoch_1.pt", ck)
    train({"resume": str(epoch_1), "checkpoint_dir": str(ck), "device": "cpu"})
    assert [r["epoch"] for r in _epoch_records(ck)] == [2]
    assert len(load_checkpoint(ck / "epoch_2.pt")["history"]["val_loss"]) == 2


def _commit_only(tiny_dataset: Path, tiny_tokenizer: Path, ck: Path, **kw) -> dict:
    return run_args(tiny_dataset, ck, vqvae_path=str(tiny_tokenizer), **kw)


def test_l_latent_switched_on_at_resume_keeps_the_models_adam_state(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    train(_commit_only(tiny_dataset, tiny_tokenizer, ck, one_step_steps=0, max_steps=2))
    before = load_checkpoint(ck / "step_2.pt")
    assert before["alignment_state"] is None
    train_log.clear()
    train({"resume": str(ck / "step_2.pt"), "enable_latent_loss": True, "max_steps": 1, "device": "cpu"})
    assert (
        "  ⚠ The checkpoint was trained without L_latent: the latent projector starts from random initialization"
        in train_log
    )
    after = load_checkpoint(ck / "step_3.pt")
    assert after["alignment_state"] is not None and after["args"]["enable_latent_loss"] is True
    groups = [g["name"] for g in after["optimizer_state_dict"]["param_groups"]]
    assert groups == ["model", "projector"]
    record = [r for r in _batch_records(ck) if r["kind"] == "train_batch"][-1]
    assert record["global_step"] == 3 and record["latent"] is not None


def test_l_latent_switched_off_at_resume_as_the_guide_advises(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from noa.cli import main

    ck = tmp_path / "ck"
    step_4 = _copy_to(straight / "step_4.pt", ck)
    # The guide's "Resume Warnings" advice 2: disable --enable-latent-loss and resume.
    code = main(
        ["train", "--resume", str(step_4), "--checkpoint-dir", str(ck), "--no-enable-latent-loss", "--device", "cpu"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "  ⚠ L_latent is off in this run: the checkpoint's latent projector is not carried on" in out
    final = load_checkpoint(ck / "epoch_2.pt")
    assert final["alignment_state"] is None and final["args"]["enable_latent_loss"] is False
    assert [g["name"] for g in final["optimizer_state_dict"]["param_groups"]] == ["model"]
    assert final["history"]["val_latent"][-1] is None and final["history"]["val_commit"][-1] is not None
    # The same from a config file.
    config = tmp_path / "off.yaml"
    config.write_text("enable_latent_loss: false\n")
    ck2 = tmp_path / "ck2"
    step_4b = _copy_to(straight / "step_4.pt", ck2)
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--resume",
                str(step_4b),
                "--checkpoint-dir",
                str(ck2),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert load_checkpoint(ck2 / "epoch_2.pt")["alignment_state"] is None


def test_a_format_2_single_group_optimizer_is_split_by_part(straight: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(straight / "step_4.pt")
    model_group, projector_group = ckpt["optimizer_state_dict"]["param_groups"]
    merged = {k: v for k, v in model_group.items() if k != "name"}
    merged["params"] = model_group["params"] + projector_group["params"]
    legacy = {
        **ckpt,
        "format_version": 2,
        "optimizer_state_dict": {"state": ckpt["optimizer_state_dict"]["state"], "param_groups": [merged]},
    }
    ck = tmp_path / "ck"
    ck.mkdir()
    save_atomic(legacy, ck / "step_4.pt")
    train({"resume": str(ck / "step_4.pt"), "checkpoint_dir": str(ck), "device": "cpu"})
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))


@pytest.mark.parametrize(
    "flag, value", [("n_samples", 14), ("val_split", 0.25), ("seed", 3), ("lr", 5e-4), ("teacher_forcing_steps", 2)]
)
def test_resume_refuses_flags_that_change_the_split_or_schedule(straight: Path, flag: str, value: object) -> None:
    with pytest.raises(NoaError, match=f"--{flag.replace('_', '-')}: checkpoint .*--init-from"):
        train({"resume": str(straight / "step_2.pt"), flag: value, "device": "cpu"})


def test_resume_refuses_another_tokenizer(straight: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other_vqvae"
    shutil.copytree(tiny_tokenizer, other)
    weights = torch.load(other / "weights.pt", weights_only=True)
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = weights[first] + 1e-3
    torch.save(weights, other / "weights.pt")
    with pytest.raises(NoaError, match="is not the one step_2.pt was trained with.*--init-from"):
        train({"resume": str(straight / "step_2.pt"), "vqvae_path": str(other), "device": "cpu"})
    # The same tokenizer under another path is the same tokenizer.
    same = tmp_path / "moved_vqvae"
    shutil.copytree(tiny_tokenizer, same)
    ck = tmp_path / "ck"
    step_2 = _copy_to(straight / "step_2.pt", ck)
    train({"resume": str(step_2), "vqvae_path": str(same), "checkpoint_dir": str(ck), "max_steps": 0, "device": "cpu"})


def test_a_longer_run_at_resume_follows_the_longer_plan(straight: Path, tmp_path: Path, train_log: list[str]) -> None:
    from noa.train.schedule import lr_at

    ck = tmp_path / "ck"
    step_4 = _copy_to(straight / "step_4.pt", ck)
    train_log.clear()
    train({"resume": str(step_4), "checkpoint_dir": str(ck), "epochs": 4, "device": "cpu"})
    line = next(l for l in train_log if "LR schedule re-planned" in l)
    assert (
        f"the cosine of a 12-step run from step 4 (was step 6); lr {lr_at(4, 1e-3, 2, 6):.2e} → {lr_at(4, 1e-3, 2, 12):.2e}"
        in line
    )
    lrs = [r["lr"] for r in _batch_records(ck) if r["kind"] == "train_batch"]
    assert lrs == pytest.approx(
        [lr_at(step, 1e-3, 2, 12) for step in range(4, 12)], rel=1e-12
    )  # as if planned for 4 epochs


def test_extending_a_finished_run_trains_at_the_longer_plans_lr(
    straight: Path, tmp_path: Path, train_log: list[str]
) -> None:
    # The refusal of a finished run says "raise --epochs to train on": that must train, not step at lr 0.
    from noa.train.schedule import lr_at

    ck = tmp_path / "ck"
    _copy_to(straight / "epoch_2.pt", ck)
    train({"resume": "auto", "checkpoint_dir": str(ck), "epochs": 3, "device": "cpu"})
    lrs = [r["lr"] for r in _batch_records(ck) if r["kind"] == "train_batch"]
    assert lrs == pytest.approx([lr_at(step, 1e-3, 2, 9) for step in (6, 7, 8)], rel=1e-12) and lrs[0] > 0.3 * 1e-3
    before, after = load_checkpoint(ck / "epoch_2.pt"), load_checkpoint(ck / "epoch_3.pt")
    assert any(
        not torch.equal(before["model_state_dict"][k], after["model_state_dict"][k]) for k in before["model_state_dict"]
    )


def test_a_shorter_run_at_resume_bends_the_lr_down_without_a_jump() -> None:
    from noa.train.schedule import WarmupCosine, lr_at

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, 1e-3, 2, 20)
    schedule.sync_to(5)
    assert "cosine from lr=" in schedule.replan(10)
    assert schedule.lr == pytest.approx(lr_at(5, 1e-3, 2, 20), rel=1e-12)  # continuous at the resume point
    assert schedule.lr_of(10) == 0.0 and schedule.lr_of(6) < schedule.lr


def test_weight_decay_given_at_resume_is_applied_to_every_group(
    straight: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    step_2 = _copy_to(straight / "step_2.pt", ck)
    train_log.clear()
    train({"resume": str(step_2), "checkpoint_dir": str(ck), "weight_decay": 0.5, "max_steps": 1, "device": "cpu"})
    saved = load_checkpoint(ck / "step_3.pt")
    assert saved["args"]["weight_decay"] == 0.5
    assert [g["weight_decay"] for g in saved["optimizer_state_dict"]["param_groups"]] == [
        0.5,
        0.5,
    ]  # model and projector
    assert any("Weight decay 0 → 0.5 (--weight-decay)" in line for line in train_log)


def test_resume_is_exact_with_dataloader_workers(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    # Two worker processes read the batches (each opens the HDF5 file itself); stopped mid-epoch
    # and resumed, the run equals the uninterrupted single-process-reading one bit for bit.
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, tiny_tokenizer, ck, max_steps=2, num_workers=2))
    train({"resume": str(ck / "step_2.pt"), "device": "cpu"})
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _batch_records(straight) == _batch_records(ck)


def test_a_resume_whose_dataset_moved_names_the_flag_that_fixes_it(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    import shutil

    data, ck = tmp_path / "data.h5", tmp_path / "ck"
    shutil.copy(tiny_dataset, data)
    train(run_args(data, ck, max_steps=2))
    moved = data.rename(tmp_path / "moved.h5")
    with pytest.raises(NoaError, match="pass its new path with --dataset PATH"):
        train({"resume": str(ck / "step_2.pt"), "device": "cpu"})
    train_log.clear()
    train({"resume": str(ck / "step_2.pt"), "dataset": str(moved), "device": "cpu"})
    text = "\n".join(train_log)  # the same data at its new path: the run continues, no fine-tune
    assert "✓ Resuming from epoch 1, step 2" in text and "fine-tuning" not in text


@pytest.mark.slow
def test_train_killed_with_sigkill_and_rerun_with_the_same_line_ends_as_an_uninterrupted_run(
    straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    # kill -9 leaves no chance to write anything: the rerun (the same command line) must still
    # end with the uninterrupted run's files, bit for bit on the CPU.
    ck = tmp_path / "ck"
    values = _args(tiny_dataset, tiny_tokenizer, ck, save_every=1, resume="auto")
    cmd = [sys.executable, "-m", "noa", "train"]
    for key, value in values.items():
        cmd += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if "[1/3]" in line and (ck / "epoch_1.pt").exists():
            break  # in epoch 2, with its first batch logged and its step_4.pt being written or about to be
    proc.kill()
    proc.wait(timeout=60)
    assert not (ck / "epoch_2.pt").exists()
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _batch_records(straight) == _batch_records(ck)


def test_resume_auto_on_a_finished_run_says_already_complete_and_exits_0(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torchrun restarts the group when a rank dies at teardown, and a scheduler may requeue a
    finished job: the same --resume auto line meets a run that has done all its epochs."""
    from noa.cli import main

    ck = tmp_path / "ck"
    shutil.copytree(straight, ck)
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}
    assert main(["train", "--resume", "auto", "--checkpoint-dir", str(ck), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    said = [line for line in out.out.splitlines() if "already complete" in line]
    assert len(said) == 1 and "all 2 epochs" in said[0] and "Epoch 1/2" not in out.out, out
    assert {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()} == before  # nothing trained nor rewritten
    # An explicit file still names what to do: continuing it needs a larger --epochs.
    assert main(["train", "--resume", str(ck / "epoch_2.pt"), "--device", "cpu"]) == 2
    assert "has already finished epoch 2 of --epochs 2" in capsys.readouterr().err


def test_resume_auto_on_a_finished_run_writes_what_a_kill_after_the_last_epoch_left_out(
    straight: Path, tmp_path: Path, train_log: list[str]
) -> None:
    """Killed between epoch_2.pt and best_model.pt: the restart finds the run complete and
    leaves best_model.pt and latest.json as the uninterrupted run did."""
    last = load_checkpoint(straight / "epoch_2.pt")
    assert last["parts"]["early_stopping"]["epochs_without_improvement"] == 0  # epoch 2 was a new best
    ck = tmp_path / "ck"
    shutil.copytree(straight, ck)
    (ck / "best_model.pt").unlink()
    shutil.copy2(straight / "epoch_1.pt", ck / "best_model.pt")  # epoch 1's best, as the kill left it
    os.utime(ck / "best_model.pt", (1, 1))  # older than epoch_2.pt
    (ck / "latest.json").write_text(json.dumps({"path": "epoch_2.pt", "global_step": last["global_step"]}))
    result = train({"resume": "auto", "checkpoint_dir": str(ck), "device": "cpu"})
    assert result.global_step == last["global_step"] and result.best_val_loss == last["best_val_loss"]
    assert any("already complete" in line for line in train_log)
    assert_same_state(load_checkpoint(ck / "best_model.pt"), load_checkpoint(straight / "best_model.pt"))
    assert (ck / "latest.json").read_text() == (straight / "latest.json").read_text()


def test_resume_auto_on_an_early_stopped_run_says_already_complete_and_trains_nothing(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A requeue or torchrun restart of a run that stopped early (after epoch 3 of 8) meets it
    again: the same --resume auto line must not train epochs 4-8 nor rewrite its files."""
    from noa.cli import main
    from noa.train import loop as loop_module

    flat = lambda: {"total": 1.0, "traj": 1.0, "commit": None, "latent": None}  # noqa: E731 (never improves)
    monkeypatch.setattr(loop_module.Trainer, "validate", lambda self: flat())
    ck = tmp_path / "ck"
    flags = run_args(tiny_dataset, ck, epochs=8, early_stop_patience=2, save_every=0, resume="auto")
    argv = ["train", *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items())]
    assert main(argv) == 0
    assert "Early stopping: no validation improvement for 2 epochs" in capsys.readouterr().out
    assert sorted(p.name for p in ck.glob("epoch_*.pt")) == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}

    assert main(argv) == 0  # the restart: nothing trains, nothing is rewritten, one line says why
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "already complete" in line]
    assert len(said) == 1 and "early stopping after epoch 3 of 8" in said[0], out
    assert "Raise --early-stop-patience to train on" in said[0]
    assert "Epoch 4/8" not in out and "Early stopping:" not in out
    assert {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()} == before

    # A checkpoint written before the stop was recorded tells it by its own state.
    legacy = load_checkpoint(ck / "epoch_3.pt")
    del legacy["parts"]["early_stopping"]["stopped"]
    save_atomic(legacy, ck / "epoch_3.pt")
    assert main(argv) == 0 and "early stopping after epoch 3 of 8" in capsys.readouterr().out
    # An explicit file is refused with what to do; a larger patience trains on.
    assert main(["train", "--resume", str(ck / "epoch_3.pt"), "--device", "cpu"]) == 2
    assert "raise --early-stop-patience to train on" in capsys.readouterr().err
    assert main([*argv, "--early-stop-patience=3", "--max-steps=3"]) == 0
    assert "Epoch 4/8" in capsys.readouterr().out
