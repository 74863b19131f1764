"""`noa vqvae train`, `noa train` and their files: one writer per output, outputs checked before
the work, corrupt files named as such, signals that never leave a torn file (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_args
from noa.cli import main
from noa.errors import NoaError
from noa.tokenizer import io as tokenizer_io
from noa.tokenizer import job as tokenizer_job
from noa.tokenizer.io import load_tokenizer
from noa.train import loop as loop_module
from noa.train.checkpoint import find_latest, load_checkpoint
from noa.train.loop import TrainingInterrupted, train

VQ = [
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--levels",
    "1",
    "--codebook-size",
    "4",
    "--latent-dim",
    "2",
    "--hidden",
    "8",
    "--no-progress",
]


def _hold_lock(output: Path) -> subprocess.Popen:
    code = "import sys, time; from noa import outputs\nwith outputs.exclusive(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(output)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def _one_line_error(capsys: pytest.CaptureFixture, message: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err


def _no_training(*_a, **_k):
    pytest.fail("the long work started before the output was checked")


# ---- tokenizer directory -------------------------------------------------------------------


@pytest.fixture
def tokenizer_copy(tiny_tokenizer: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_tokenizer, tmp_path / "vq"))


def test_vqvae_overwrite_keeps_files_noa_did_not_write(
    tiny_dataset: Path, tokenizer_copy: Path, monkeypatch, capsys
) -> None:
    (tokenizer_copy / "notes.txt").write_text("mine")
    monkeypatch.setattr(tokenizer_job, "train_tokenizer", _no_training)
    assert (
        main(["vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(tokenizer_copy), "--overwrite", *VQ]) == 2
    )
    _one_line_error(capsys, "notes.txt")
    assert (tokenizer_copy / "notes.txt").read_text() == "mine" and (tokenizer_copy / "weights.pt").exists()


@pytest.mark.parametrize(
    "layout, message",
    [("out-is-file", "is a file, but a directory is written there"), ("parent-is-file", "is a file, not a directory")],
)
def test_vqvae_unwritable_out_is_refused_before_training(
    layout: str, message: str, tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "plain" if layout == "out-is-file" else tmp_path / "plain" / "vq"
    monkeypatch.setattr(tokenizer_job, "train_tokenizer", _no_training)
    assert main(["vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(out), *VQ]) == 2
    _one_line_error(capsys, message)


def test_vqvae_non_finite_lr_and_huge_sizes_are_refused_up_front(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(tokenizer_job, "train_tokenizer", _no_training)
    assert (
        main(["vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "a"), *VQ, "--lr", "inf"]) == 2
    )
    _one_line_error(capsys, "--lr a finite positive number")
    assert (
        main(
            [
                "vqvae",
                "train",
                "--dataset",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "b"),
                *VQ,
                "--hidden",
                "10000000",
            ]
        )
        == 2
    )
    _one_line_error(capsys, "of memory")


def test_two_tokenizer_trainings_into_one_directory(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "vq"
    holder = _hold_lock(out)
    try:
        monkeypatch.setattr(tokenizer_job, "train_tokenizer", _no_training)
        with pytest.raises(NoaError, match="being written by another noa process"):
            tokenizer_job.train_tokenizer_on_dataset(tiny_dataset, out, epochs=1, log=lambda _: None, progress=False)
    finally:
        _release(holder)


def test_a_tokenizer_directory_is_never_seen_half_written(
    tiny_dataset: Path, tokenizer_copy: Path, monkeypatch
) -> None:
    before = {p.name: p.read_bytes() for p in tokenizer_copy.iterdir()}
    real = tokenizer_io._write_synced
    written: list[str] = []

    def killed_after_the_weights(path: Path, write) -> None:  # the process dies between two files
        if written:
            raise KeyboardInterrupt
        written.append(path.name)
        real(path, write)

    monkeypatch.setattr(tokenizer_io, "_write_synced", killed_after_the_weights)
    args = dict(
        epochs=1, batch_size=16, levels=1, codebook_size=4, latent_dim=2, hidden=8, log=lambda _: None, progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        tokenizer_job.train_tokenizer_on_dataset(tiny_dataset, tokenizer_copy, overwrite=True, **args)
    assert {p.name: p.read_bytes() for p in tokenizer_copy.iterdir()} == before  # the old tokenizer, whole
    load_tokenizer(tokenizer_copy)
    monkeypatch.setattr(tokenizer_io, "_write_synced", real)
    tokenizer_job.train_tokenizer_on_dataset(tiny_dataset, tokenizer_copy, overwrite=True, **args)  # a rerun completes
    assert json.loads((tokenizer_copy / "config.json").read_text())["config"]["hidden"] == 8
    assert not list(tokenizer_copy.parent.glob(".vq.tmp-*"))  # the killed writer's leftovers are gone


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_corrupt_tokenizer_weights_are_named_as_such(damage: str, tokenizer_copy: Path) -> None:
    weights = tokenizer_copy / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes({"random": os.urandom(4096), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(NoaError, match="weights.pt is corrupt or not a noa file"):
        load_tokenizer(tokenizer_copy)


# ---- NOA checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random", "truncated", "tail-cut"])
def test_corrupt_checkpoints_are_named_as_such(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "epoch_1.pt"
    torch.save({"model_state_dict": {"w": torch.ones(5000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"random": os.urandom(8192), "truncated": data[: len(data) // 2], "tail-cut": data[:-30]}[damage])
    with pytest.raises(NoaError, match="epoch_1.pt is corrupt or not a noa file") as refused:
        load_checkpoint(path)
    assert "arbitrary unpickling" not in str(refused.value)


def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    train(run_args(tiny_dataset, tmp_path / "ck", epochs=1))
    path = tmp_path / "ck" / "epoch_1.pt"
    ckpt = load_checkpoint(path)
    ckpt["config"]["base_channels"] = 16
    torch.save(ckpt, path)
    with pytest.raises(NoaError, match="do not fit"):
        train({"resume": str(path), "checkpoint_dir": str(tmp_path / "ck"), "device": "cpu"})


def test_two_trainings_on_one_checkpoint_directory(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    holder = _hold_lock(ck)
    try:
        with pytest.raises(NoaError, match="being written by another noa process"):
            train(run_args(tiny_dataset, ck, overwrite=True))
    finally:
        _release(holder)
    assert not list(ck.glob("*.pt"))
    train(run_args(tiny_dataset, ck, epochs=1))  # the killed holder left no stuck lock


@pytest.mark.parametrize(
    "layout, message", [("dir-is-file", "exists and is a file"), ("parent-is-file", "is a file, not a directory")]
)
def test_an_unwritable_checkpoint_dir_is_refused_before_any_work(
    layout: str, message: str, tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "plain").write_text("x")
    ck = tmp_path / "plain" if layout == "dir-is-file" else tmp_path / "plain" / "ck"
    monkeypatch.setattr(loop_module, "Trainer", _no_training)
    with pytest.raises(NoaError, match=message):
        train(run_args(tiny_dataset, ck))


def test_a_second_sigint_during_the_checkpoint_write_leaves_it_whole(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    ck = tmp_path / "ck"
    real_batch, real_save = loop_module.train_batch, loop_module.save_atomic

    def first_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the first batch
        return real_batch(*args, **kwargs)

    def second_signal_while_saving(obj, path):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while the checkpoint is being written
        real_save(obj, path)

    monkeypatch.setattr(loop_module, "train_batch", first_signal)
    monkeypatch.setattr(loop_module, "save_atomic", second_signal_while_saving)
    with pytest.raises(TrainingInterrupted, match="second SIGINT") as stopped:
        train(run_args(tiny_dataset, ck, save_every=0, one_step_steps=0))  # (train_batch: the rollout phase)
    assert stopped.value.exit_code == 130
    path, ckpt = find_latest(ck)
    assert path.name == "step_1.pt" and ckpt["global_step"] == 1
    assert json.loads((ck / "latest.json").read_text()) == {"path": "step_1.pt", "global_step": 1}
    monkeypatch.setattr(loop_module, "train_batch", real_batch)
    monkeypatch.setattr(loop_module, "save_atomic", real_save)
    result = train({"resume": "auto", "checkpoint_dir": str(ck), "device": "cpu"})
    assert result.global_step == 2 * 3


# ---- noa diagnose ------------------------------------------------------------------------


def test_diagnose_checks_its_report_directory_before_evaluating(tmp_path: Path, monkeypatch, capsys) -> None:
    from noa.diagnostics import report as report_module

    monkeypatch.setattr(report_module, "evaluate", _no_training)
    (tmp_path / "plain").write_text("x")
    argv = ["diagnose", "--noa-checkpoint", str(tmp_path / "best_model.pt")]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 2
    _one_line_error(capsys, "is a file, but a directory is written there")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("# my own report\n")
    assert main([*argv, "--out", str(mine)]) == 2
    _one_line_error(capsys, "report.md, which noa diagnose did not write")
    assert (mine / "report.md").read_text() == "# my own report\n"


def test_ctrl_c_during_tokenizer_training_is_one_line_and_exit_130(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer_job, "train_tokenizer", interrupted)
    assert main(["vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "vq"), *VQ]) == 130
    err = capsys.readouterr().err  # the stop the user asked for, said as a stop, not as an error
    assert err.startswith("Stopped: interrupted (Ctrl-C)") and "error" not in err and "Traceback" not in err, err
    assert not (tmp_path / "vq").exists()


def test_ctrl_c_during_training_is_said_as_a_stop_with_exit_130(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    real_batch = loop_module.train_batch

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the first batch
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_batch", ctrl_c)
    flags = run_args(tiny_dataset, tmp_path / "ck", one_step_steps=0)
    assert main(["train", *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items())]) == 130
    err = capsys.readouterr().err
    assert err.startswith("Stopped: training interrupted by SIGINT at epoch 1, batch 1/3; checkpoint written to"), err
    assert "error" not in err and "Resume with: noa train --resume" in err
