"""Every command survives ``kill -9``: killed at a few well-defined moments (a seeded delay after
a progress line, or the moment a partial output appears) and run again the documented way,
it ends with the outputs of an uninterrupted run, whole, or refuses clearly; a half-written
file is never read as whole. (`noa train`'s own test is in test_resume.py.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from helpers import assert_same_file, h5_arrays, run_args
from noa.data.generate import GenerateConfig, generate
from noa.diagnostics import diagnose
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(SRC)}
TINY_FLAGS = ["--grid", str(TINY["grid"]), "--timesteps", str(TINY["timesteps"])]


def _noa(*args: str) -> list[str]:
    return [sys.executable, "-m", "noa", *args]


def _kill_when(cmd: list[str], ready: Callable[[list[str]], bool], delay: float) -> bool:
    """Start ``cmd``; ``delay`` seconds after ``ready(lines printed so far)`` first holds, SIGKILL
    it. True when the kill found it running (False: it had already ended, with status 0)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while proc.poll() is None and not ready(lines) and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode in (0, -signal.SIGKILL), "".join(lines)[-3000:]
    return proc.returncode == -signal.SIGKILL


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def _printed(text: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(text in line for line in lines)


def _leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".new")
    )


def test_data_generate_killed_and_resumed_writes_the_uninterrupted_dataset(tiny_dataset: Path, tmp_path: Path) -> None:
    rng = random.Random(11)
    out = tmp_path / "d.h5"
    partial = out.with_name("d.h5.partial")
    cmd = _noa(
        "data",
        "generate",
        "--out",
        str(out),
        "--n-samples",
        "40",
        "--seed",
        "11",
        *TINY_FLAGS,
        "--store-trajectories",
        "--batch-size",
        "4",
        "--resume",
    )
    # The layout being written (or the first batch replayed), then a seeded moment of the replay.
    assert _kill_when(cmd, lambda _: partial.exists() or partial.with_name("d.h5.partial.new").exists(), 0.0)
    assert not out.exists()
    line = f"replay: {4 * rng.randint(2, 6)}/40"
    assert _kill_when(cmd, _printed(line), rng.uniform(0, 0.1))
    assert not out.exists() and partial.exists()
    done = _run(cmd)
    assert done.returncode == 0 and "Resuming generation in" in done.stdout, done.stdout + done.stderr
    assert_same_file(tiny_dataset, out)
    assert _leftovers(tmp_path) == []


DIES_IN_A_FLUSH = """import os, signal, sys
import h5py
from noa.cli import main
flush = h5py.File.flush
def flush_or_die(self):  # SIGKILL as soon as the third batch's rows are flagged replayed, before any flush
    if "metadata/replayed" in self and self["metadata/replayed"][:].sum() >= 12:
        os.kill(os.getpid(), signal.SIGKILL)
    flush(self)
h5py.File.flush = flush_or_die
sys.exit(main(sys.argv[1:]))
"""


def test_generation_killed_between_its_flags_and_their_flush_never_skips_missing_rows(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # HDF5 may put a small flag in the file before the rows it flags, still in its cache: the
    # data are flushed before the flags are set, so no row is flagged done without its data.
    script = tmp_path / "dies_in_a_flush.py"
    script.write_text(DIES_IN_A_FLUSH)
    out = tmp_path / "d.h5"
    killed = _run(
        [
            sys.executable,
            str(script),
            "data",
            "generate",
            "--out",
            str(out),
            "--n-samples",
            "40",
            "--seed",
            "11",
            *TINY_FLAGS,
            "--store-trajectories",
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    cfg = GenerateConfig(n_samples=40, seed=11, store_trajectories=True, **TINY)
    generate(cfg, out, batch_size=4, resume=True, progress=False, log=lambda _: None)
    assert_same_file(tiny_dataset, out)


def test_data_features_killed_and_run_again_stores_the_uninterrupted_features(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    rng = random.Random(12)
    path = tmp_path / "bare.h5"
    cfg = GenerateConfig(n_samples=40, seed=11, features=False, **TINY)  # no trajectories: features replay them
    generate(cfg, path, batch_size=20, progress=False, log=lambda _: None)
    before = h5_arrays(path)
    cmd = _noa("data", "features", str(path), "--batch-size", "4")
    line = f"features: {4 * rng.randint(1, 8)}/40"
    assert _kill_when(cmd, _printed(line), rng.uniform(0, 0.1)), line
    done = _run(cmd)
    assert done.returncode == 0 and f"Features stored in {path}" in done.stdout, done.stdout + done.stderr
    after, whole = h5_arrays(path), h5_arrays(tiny_dataset)
    assert after.keys() == before.keys() | {k for k in whole if k.startswith("features/")}
    for name, array in after.items():
        assert np.array_equal(array, whole[name] if name.startswith("features/") else before[name], equal_nan=True), (
            name
        )


def test_vqvae_train_killed_and_run_again_writes_the_uninterrupted_tokenizer(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    rng = random.Random(13)
    out, reference = tmp_path / "tok", tmp_path / "reference"

    def vqvae_train(to: Path) -> list[str]:
        return _noa(
            "vqvae",
            "train",
            "--dataset",
            str(tiny_dataset),
            "--out",
            str(to),
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--lr",
            "2e-3",
            "--levels",
            "2",
            "--codebook-size",
            "8",
            "--latent-dim",
            "4",
            "--hidden",
            "32",
            "--seed",
            "0",
            "--val-split",
            "0.2",
            "--device",
            "cpu",
            # The uninterrupted run is the same command: float32 sums depend on the thread count.
            "--threads",
            "1",
        )

    cmd = vqvae_train(out)
    assert _run(vqvae_train(reference)).returncode == 0
    # No --resume: a tokenizer directory appears whole (renamed into place) or not at all.
    assert _kill_when(cmd, _printed(f"epoch {rng.randint(1, 2)}/3"), rng.uniform(0, 0.05))
    assert not out.exists()
    # The second time, the moment its temporary directory appears (or, if missed, the end).
    killed = _kill_when(cmd, lambda _: any(tmp_path.glob(".tok.tmp-*")), 0.0)
    if out.exists():  # whole: the rename was its last step, so the same command now refuses
        again = _run(cmd)
        assert again.returncode == 2 and "is not empty; choose a new directory or pass --overwrite" in again.stderr, (
            again.stderr
        )
    else:
        assert killed
        done = _run(cmd)
        assert done.returncode == 0, done.stdout + done.stderr
    a = torch.load(reference / "weights.pt", weights_only=True)
    b = torch.load(out / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("config.json", "history.json"):
        assert (reference / name).read_text() == (out / name).read_text(), name
    assert _leftovers(tmp_path) == []


def _timeless(summary: dict) -> dict:
    return {**summary, "run": {k: v for k, v in summary["run"].items() if k != "date"}}


def test_diagnose_killed_and_run_again_writes_the_uninterrupted_report(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    rng = random.Random(14)
    train(
        run_args(
            tiny_dataset,
            tmp_path / "ck",
            epochs=1,
            save_every=0,
            vqvae_path=str(tiny_tokenizer),
            enable_latent_loss=True,
            lambda_latent=0.5,
            latent_sample_steps=3,
        )
    )
    ckpt = tmp_path / "ck" / "best_model.pt"
    whole = tmp_path / "whole"
    diagnose(ckpt, None, None, n_samples=4, out_dir=whole, log=lambda _: None)
    out = tmp_path / "report"
    cmd = _noa("diagnose", "--noa-checkpoint", str(ckpt), "--n-samples", "4", "--out", str(out), "--device", "cpu")
    # While it writes its report: its first figure is in place, the others are being drawn.
    assert _kill_when(cmd, lambda _: any(out.glob("*.png")), rng.uniform(0, 0.05))
    assert not (out / "report.md").exists()
    done = _run(cmd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _timeless(json.loads((whole / "summary.json").read_text())) == _timeless(
        json.loads((out / "summary.json").read_text())
    )
    undated = lambda path: [line for line in path.read_text().splitlines() if "UTC" not in line]  # noqa: E731
    assert undated(whole / "report.md") == undated(out / "report.md")
    assert sorted(p.name for p in whole.iterdir()) == sorted(p.name for p in out.iterdir())  # no temporary file left


QUICKSTART = """import sys
from noa import quickstart
from noa.cli import main
quickstart.DATA = {**quickstart.DATA, "n_samples": 40, "grid": 16, "timesteps": 4}
quickstart.TOKENIZER = {**quickstart.TOKENIZER, "epochs": 2, "hidden": 32}
quickstart.NOA = {**quickstart.NOA, "n_samples": 40, "batch_size": 4, "timesteps": 4, "bptt_window": 2, "epochs": 3, "base_channels": 8,
                  "modes": 4, "afno_blocks": 1, "projector_hidden": 16}
sys.exit(main(sys.argv[1:]))
"""


def test_quickstart_killed_in_several_stages_and_run_again_finishes_whole(tmp_path: Path) -> None:
    from noa.data.h5 import open_dataset
    from noa.tokenizer.io import load_tokenizer

    rng = random.Random(15)
    script = tmp_path / "tiny_quickstart.py"  # the command with its embedded sizes shrunk
    script.write_text(QUICKSTART)
    root = tmp_path / "qs"
    cmd = [sys.executable, str(script), "quickstart", "--out", str(root), "--device", "cpu"]
    for moment in ("3/5  NOA training", "5/5  Diagnosis"):  # (a killed generation: the tests above)
        assert _kill_when(cmd, _printed(moment), rng.uniform(0, 0.2)), moment
    done = _run(cmd)
    assert done.returncode == 0 and "Quickstart finished" in done.stdout, done.stdout[-3000:] + done.stderr
    assert "quickstart.h5 is already complete" in done.stdout and "training already ran to its end" in done.stdout
    with open_dataset(root / "datasets" / "quickstart.h5") as f:
        assert f.attrs["complete"] and f["metadata/replayed"][:].all() and f["features/done"][:].all()
    load_tokenizer(root / "checkpoints" / "production" / "quickstart_vqvae")
    assert load_checkpoint(root / "checkpoints" / "noa" / "epoch_3.pt")["global_step"] == 27
    report = root / "checkpoints" / "noa" / "diagnostics"
    assert (report / "report.md").read_text().rstrip().endswith("|") and "verdict_rule" in json.loads(
        (report / "summary.json").read_text()
    )
    assert not any(".tmp-" in p.name for p in root.rglob("*"))
    shutil.rmtree(root)
