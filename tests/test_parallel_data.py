"""Parallel dataset generation and features: worker processes and torchrun ranks write the
same file, array for array, as one process, and a killed parallel run resumes to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import assert_same_file
from noa.data.generate import GenerateConfig, add_features, generate

pytestmark = pytest.mark.slow

CONFIG = dict(n_samples=48, grid=16, timesteps=16, seed=5, store_trajectories=True)
BATCH = 4  # byte equality holds for one --batch-size: rollouts are batch-independent to the bit,
# features only to float rounding (about 1e-7), so every split keeps the batches of BATCH rows


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serial") / "serial.h5"
    generate(GenerateConfig(**CONFIG), path, batch_size=BATCH, progress=False, log=lambda _: None)
    return path


def test_two_workers_write_the_same_dataset(one_process: Path, tmp_path: Path) -> None:
    path = tmp_path / "two.h5"
    generate(GenerateConfig(**CONFIG), path, batch_size=BATCH, workers=2, progress=False, log=lambda _: None)
    assert_same_file(one_process, path)


def test_features_with_two_workers_equal_one(one_process: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.h5"
    generate(
        GenerateConfig(**{**CONFIG, "store_trajectories": False}, features=False),
        bare,
        batch_size=BATCH,
        progress=False,
        log=lambda _: None,
    )
    add_features(bare, batch_size=BATCH, workers=2, progress=False, log=lambda _: None)
    with h5py.File(one_process) as a, h5py.File(bare) as b:
        for family in ("initial", "summary", "temporal"):
            assert np.array_equal(a["features"][family][:], b["features"][family][:]), family


def _cli(out: Path, *extra: str) -> list[str]:
    """`python -m` arguments of `noa data generate` for CONFIG."""
    c = CONFIG
    return [
        "noa",
        "data",
        "generate",
        "--out",
        str(out),
        "--n-samples",
        str(c["n_samples"]),
        "--grid",
        str(c["grid"]),
        "--timesteps",
        str(c["timesteps"]),
        "--seed",
        str(c["seed"]),
        "--store-trajectories",
        "--no-progress",
        *extra,
    ]


def test_two_torchrun_ranks_write_the_same_dataset(one_process: Path, tmp_path: Path) -> None:
    path = tmp_path / "ranks.h5"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        *_cli(path, "--batch-size", str(BATCH)),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Wrote ") == 1
    assert_same_file(one_process, path)


def _some_rows_written(partial: Path) -> bool:
    try:  # the writer may be mid-way through creating the file
        with h5py.File(partial, "r", locking=False) as f:
            return "metadata/replayed" in f and bool(f["metadata/replayed"][:].any())
    except (OSError, KeyError):
        return False


def test_a_killed_parallel_generation_resumes_to_the_same_dataset(one_process: Path, tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    partial = path.with_name(path.name + ".partial")
    proc = subprocess.Popen(
        [sys.executable, "-m", *_cli(path, "--batch-size", str(BATCH), "--workers", "2")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if _some_rows_written(partial):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the writer and its workers
    proc.wait()
    assert partial.exists() and not path.exists()
    generate(
        GenerateConfig(**CONFIG), path, batch_size=BATCH, workers=2, resume=True, progress=False, log=lambda _: None
    )
    assert_same_file(one_process, path)
