"""Checkpointing and exact resume: a resumed run is indistinguishable from an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noa.data.generate import GenerateConfig, generate
from noa.errors import NoaError
from noa.train import checkpoint as checkpoint_module
from noa.train.checkpoint import load_checkpoint, save_atomic
from noa.train.loop import train
from noa.train.resume import find_latest

from test_train_loop import run_args


def _args(dataset: Path, tokenizer: Path, ck: Path, **kw) -> dict:
    # 14 train samples, batch 4 -> 3 batches per epoch; all three losses on.
    return run_args(dataset, ck, vqvae_path=str(tokenizer), enable_latent_loss=True, lambda_latent=0.5, latent_sample_steps=3, **kw)


def _batch_records(ck: Path) -> list[dict]:
    records = [json.loads(l) for l in (ck / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sec"} for r in records if r["kind"] in ("train_batch", "epoch")]


def _assert_same_state(a: dict, b: dict) -> None:
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key
    for key in a["alignment_state"]["state_dict"]:
        assert torch.equal(a["alignment_state"]["state_dict"][key], b["alignment_state"]["state_dict"][key]), key
    sa, sb = a["optimizer_state_dict"]["state"], b["optimizer_state_dict"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)
    assert a["scheduler_state_dict"] == b["scheduler_state_dict"]
    assert a["global_step"] == b["global_step"]
    timeless = lambda h: {k: v for k, v in h.items() if k != "epoch_seconds"}  # noqa: E731 (wall time differs)
    assert timeless(a["history"]) == timeless(b["history"])


@pytest.fixture(scope="module")
def straight(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = tmp_path_factory.mktemp("straight")
    train(_args(tiny_dataset, tiny_tokenizer, ck), log=lambda _: None)
    return ck


def test_resume_from_a_mid_epoch_step_checkpoint_is_exact(straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, tiny_tokenizer, ck, max_steps=2), log=lambda _: None)
    assert (ck / "step_2.pt").exists() and not (ck / "epoch_1.pt").exists()
    lines: list[str] = []
    # The guide's short resume command: flags it leaves out come from the checkpoint.
    train({"resume": str(ck / "step_2.pt"), "dataset": str(tiny_dataset), "epochs": 2, "batch_size": 4,
           "enable_latent_loss": True, "device": "cpu"}, log=lines.append)
    text = "\n".join(lines)
    for expected in ("Resuming from checkpoint:", "  ✓ Loaded model weights", "  ✓ Loaded optimizer state",
                     "  ✓ Loaded scheduler state", "  ✓ Resuming from epoch 1, step 2",
                     "    (Will skip first 2 batches of epoch 1)", "  ✓ No validation history (first epoch incomplete)",
                     "  ✓ Loaded latent projector weights", "  Skipping first 2 batches (already processed)...", "  [3/3] loss="):
        assert expected in text, expected
    first_epoch = text.split("Epoch 2/2")[0]
    assert "[1/3]" not in first_epoch and "[2/3]" not in first_epoch
    _assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))
    assert _batch_records(straight) == _batch_records(ck)


def test_resume_from_an_epoch_checkpoint_is_exact(straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(_args(tiny_dataset, tiny_tokenizer, ck, max_steps=3), log=lambda _: None)
    lines: list[str] = []
    train({"resume": str(ck / "epoch_1.pt"), "device": "cpu"}, log=lines.append)
    text = "\n".join(lines)
    assert "  ✓ Resuming from epoch 2, step 3" in text and "Will skip" not in text
    assert "  ✓ Best val loss so far: " in text
    _assert_same_state(load_checkpoint(straight / "epoch_2.pt"), load_checkpoint(ck / "epoch_2.pt"))


def test_resume_auto_takes_the_newest_intact_checkpoint(straight: Path, tmp_path: Path) -> None:
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(straight, ck)
    newest = ck / "step_6.pt"
    os.utime(newest, None)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # torn
    notes: list[str] = []
    path, ckpt = find_latest(ck, notes.append)
    assert path.name != "step_6.pt" and "model_state_dict" in ckpt
    assert any("step_6.pt" in n and "truncated or corrupted" in n for n in notes)


def test_changing_the_optimisation_path_on_resume_is_refused(straight: Path, tiny_dataset: Path) -> None:
    with pytest.raises(NoaError) as err:
        train({"resume": str(straight / "step_4.pt"), "batch_size": 2, "bptt_window": 4, "device": "cpu"}, log=lambda _: None)
    assert "--batch-size: checkpoint 4, now 2" in str(err.value) and "--bptt-window: checkpoint 2, now 4" in str(err.value)


def test_old_format_checkpoint_infers_step_and_warns(straight: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    full = load_checkpoint(straight / "step_2.pt")
    ck = tmp_path / "old"
    ck.mkdir()
    save_atomic({"model_state_dict": full["model_state_dict"], "optimizer_state_dict": full["optimizer_state_dict"]}, ck / "step_2.pt")
    lines: list[str] = []
    result = train({**_args(tiny_dataset, tiny_tokenizer, ck), "resume": str(ck / "step_2.pt"), "epochs": 1}, log=lines.append)
    text = "\n".join(lines)
    for expected in ("  ⚠ Old checkpoint format detected - inferred global_step=2 from filename",
                     "  ⚠ Syncing scheduler to step 2...", "  ✓ Scheduler synced to step 2, lr=",
                     "  ✓ Resuming from epoch 1, step 2", "    (Will skip first 2 batches of epoch 1)",
                     "  ✓ No validation history (first epoch incomplete)",
                     "  ⚠⚠ WARNING: Old checkpoint has no projector weights!",
                     "Recommend: Either disable --enable-latent-loss or train from scratch."):
        assert expected in text, expected
    assert result.global_step == 3
    from noa.train.schedule import lr_at

    synced = [l for l in lines if "Scheduler synced" in l][0]
    assert f"lr={lr_at(2, 1e-3, 2, 6):.2e}" in synced


def test_fine_tuning_on_another_dataset_starts_fresh(straight: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=99, store_trajectories=True), other, progress=False, log=lambda _: None)
    source = load_checkpoint(straight / "best_model.pt")
    lines: list[str] = []
    ck = tmp_path / "ft"
    result = train({"resume": str(straight / "best_model.pt"), "dataset": str(other), "epochs": 1, "lr": 1e-4,
                    "checkpoint_dir": str(ck), "max_steps": 0, "device": "cpu"}, log=lines.append)
    text = "\n".join(lines)
    assert "fine-tuning (weights only)" in text and "Fresh optimizer, LR schedule (with warmup) and epoch count" in text
    assert result.global_step == 0
    start = load_checkpoint(ck / "step_0.pt")
    assert all(torch.equal(start["model_state_dict"][k], v) for k, v in source["model_state_dict"].items())
    assert start["optimizer_state_dict"]["state"] == {} and start["args"]["lr"] == 1e-4
    # The explicit form does the same.
    lines.clear()
    train({"init_from": str(straight / "best_model.pt"), "dataset": str(other), "epochs": 1, "checkpoint_dir": str(tmp_path / "ft2"),
           "max_steps": 0, "device": "cpu", "timesteps": 8, "bptt_window": 4, **{k: source["args"][k] for k in ("base_channels", "encoder_levels", "modes", "afno_blocks")}},
          log=lines.append)
    assert any(l.startswith("Fine-tuning from") for l in lines)


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
    with pytest.raises(NoaError, match="torn.pt is truncated or corrupted"):
        load_checkpoint(torn)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model_state_dict": {}, "args": __import__("argparse").Namespace(lr=1)}, unsafe)
    with pytest.raises(NoaError, match="needs arbitrary unpickling"):
        load_checkpoint(unsafe)
    with pytest.raises(NoaError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_keep_last_prunes_only_step_checkpoints(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, save_every=1, keep_last=2), log=lambda _: None)
    names = {p.name for p in ck.glob("*.pt")}
    assert {n for n in names if n.startswith("step_")} == {"step_5.pt", "step_6.pt"}
    assert {"epoch_1.pt", "epoch_2.pt"} <= names


def test_sigint_writes_a_checkpoint_and_says_how_to_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "noa.cli", "train", "--dataset", str(tiny_dataset), "--n-samples", "16", "--epochs", "50",
           "--batch-size", "4", "--timesteps", "8", "--bptt-window", "4", "--checkpoint-dir", str(ck), "--save-every", "0",
           "--base-channels", "8", "--encoder-levels", "2", "--modes", "4", "--afno-blocks", "1", "--device", "cpu"]
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
