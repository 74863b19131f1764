"""`noa train` under torchrun on the CPU (Gloo, 2 processes): same numbers as one process,
one set of files, resume on another number of ranks, and no hang when a rank goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import run_args
from noa.model import UAFNO, UAFNOConfig
from noa.model.uafno import ConvBlock
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train

pytestmark = pytest.mark.slow


def _flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not None:
            out += [flag, str(value)]
    return out


def _torchrun(values: dict, nproc: int = 2) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "noa",
        "train",
        *_flags(values),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _records(ck: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("sec",)} for r in rows if r["kind"] == kind]


def _cancelled_biases(config: dict) -> set[str]:
    """Convolution biases that the GroupNorm after them removes (one channel per group): their
    true gradient is 0, so Adam steps them by the sign of summation-order noise alone."""
    model = UAFNO(UAFNOConfig.from_dict(config))
    return {
        f"{name}.{conv}.bias"
        for name, module in model.named_modules()
        if isinstance(module, ConvBlock)
        for conv, norm in (("conv1", module.norm1), ("conv2", module.norm2))
        if norm.num_groups == norm.num_channels
    }


def _close(a: dict, b: dict) -> None:
    """Weights equal to within half an Adam step (lr 1e-3). Adam normalises each gradient
    component, so where a component is near 0 summation-order noise can flip its step: measured
    differences are a few 1e-6 for almost all weights and up to 1.3e-4 for a bias. Biases that a
    GroupNorm cancels have no effect on the model and a true gradient of 0: under the one-step
    phase's unit-scale loss their noise passes Adam's epsilon (measured 1.1e-3 apart) and they
    are left out."""
    cancelled = _cancelled_biases(a["config"])
    assert "stem.conv1.bias" in cancelled
    for key in a["model_state_dict"]:
        if key not in cancelled:
            torch.testing.assert_close(
                a["model_state_dict"][key], b["model_state_dict"][key], rtol=0, atol=5e-4, msg=key
            )


@pytest.fixture(scope="module")
def one_rank(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, batch 4, all three losses, four windows per batch."""
    ck = tmp_path_factory.mktemp("one_rank")
    train(run_args(tiny_dataset, ck, vqvae_path=str(tiny_tokenizer), enable_latent_loss=True))
    return ck


def test_two_ranks_with_half_the_batch_match_one_rank(
    one_rank: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    ck = tmp_path / "ck"
    proc = _torchrun(run_args(tiny_dataset, ck, vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, batch_size=2))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "global batch 4 (2 per rank)" in out and out.count("Training finished") == 1  # rank 0 speaks
    ours, theirs = _records(ck, "train_batch"), _records(one_rank, "train_batch")
    assert len(ours) == len(theirs) == 6  # one metrics file, written once
    # Float tolerance: the sums run in another order. L_commit, small and read off a nearest-code
    # search, drifts most (measured up to 2e-4 relative by step 6; the others up to 2e-6).
    tolerance = {"total": 1e-4, "traj": 1e-4, "commit": 1e-3, "latent": 1e-4, "lr": 1e-12}
    assert [r["phase"] for r in ours] == [r["phase"] for r in theirs] == ["one-step"] * 3 + ["rollout"] * 3
    for a, b in zip(ours, theirs):
        for key, rel in tolerance.items():
            if b[key] is None:  # L_commit and L_latent wait for the rollout phase
                assert a[key] is None, (a["global_step"], key)
            else:
                assert a[key] == pytest.approx(b[key], rel=rel), (a["global_step"], key)
    for a, b in zip(_records(ck, "epoch"), _records(one_rank, "epoch")):  # validation: means over all ranks' samples
        assert a["val_traj"] == pytest.approx(b["val_traj"], rel=1e-3) and a["val_total"] == pytest.approx(
            b["val_total"], rel=1e-3
        )
    assert sorted(p.name for p in ck.glob("*.pt")) == sorted(p.name for p in one_rank.glob("*.pt"))
    _close(load_checkpoint(ck / "epoch_2.pt"), load_checkpoint(one_rank / "epoch_2.pt"))


def test_a_two_rank_checkpoint_resumes_on_one_rank(
    one_rank: Path, tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    ck = tmp_path / "ck"
    proc = _torchrun(
        run_args(tiny_dataset, ck, vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, batch_size=2, max_steps=2)
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    saved = load_checkpoint(ck / "step_2.pt")
    assert saved["parts"]["cursor"]["global_batch"] == 4 and saved["parts"]["cursor"]["samples_in_epoch"] == 8
    train({"resume": str(ck / "step_2.pt"), "device": "cpu"})  # one rank: --batch-size 4 follows
    assert any("global batch 4 (4 per rank)" in line for line in train_log)
    _close(load_checkpoint(ck / "epoch_2.pt"), load_checkpoint(one_rank / "epoch_2.pt"))
    assert [r["global_step"] for r in _records(ck, "train_batch")] == [1, 2, 3, 4, 5, 6]


def _rank_pids(proc: subprocess.Popen, timeout: float = 120) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ranks = {}
        for child in Path("/proc").glob("[0-9]*"):
            try:
                if int((child / "stat").read_text().split()[3]) != proc.pid:
                    continue
                env = dict(item.split("=", 1) for item in (child / "environ").read_text().split("\0") if "=" in item)
            except (OSError, ValueError, IndexError):
                continue
            if "RANK" in env:
                ranks[int(env["RANK"])] = int(child.name)
        if len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError("torchrun's ranks did not start")


def _wait_for(proc: subprocess.Popen, text: str) -> str:
    """The run's output up to the first line holding ``text``."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"the run ended before printing {text!r}")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_losing_one_rank_ends_the_run_with_a_resumable_checkpoint(
    tiny_dataset: Path, tmp_path: Path, how: signal.Signals
) -> None:
    ck = tmp_path / "ck"
    proc = _torchrun(run_args(tiny_dataset, ck, batch_size=2, epochs=200, save_every=1))
    _wait_for(proc, "[2/3]")
    os.kill(_rank_pids(proc)[1], how)
    start = time.time()
    _, err = proc.communicate(timeout=180)
    assert time.time() - start < 120 and proc.returncode != 0  # ended, not hung
    steps = sorted(ck.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    assert steps, err[-3000:]
    if how == signal.SIGTERM:  # a signal on any rank: every rank stops at the same batch, one checkpoint
        assert "training interrupted by SIGTERM" in err and "Resume with: noa train --resume" in err
    else:
        assert "a training process was lost" in err
    last = load_checkpoint(steps[-1])
    result = train({"resume": "auto", "checkpoint_dir": str(ck), "batch_size": 4, "max_steps": 1, "device": "cpu"})
    assert result.global_step == last["global_step"] + 1


def test_torchrun_restarts_a_killed_rank_and_the_run_ends_as_an_uninterrupted_one(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # One command line for the first start and the restart: --resume auto starts fresh in an
    # empty directory, then continues from the newest checkpoint after torchrun restarts the group.
    ck, reference = tmp_path / "ck", tmp_path / "reference"
    flags = run_args(tiny_dataset, ck, batch_size=2, epochs=3, save_every=1, resume="auto")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        "1",
        "-m",
        "noa",
        "train",
        *_flags(flags),
    ]
    start = time.time()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    first = _wait_for(proc, "[2/3]")
    os.kill(_rank_pids(proc)[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    seconds = time.time() - start
    assert proc.returncode == 0, err[-3000:]
    assert f"--resume auto: no checkpoint in {ck} yet; starting a fresh run there" in first
    assert (
        "Resuming from checkpoint" in out + err and out.count("Training finished") == 1
    )  # restarted once, then ran to its end
    train(run_args(tiny_dataset, reference, epochs=3))  # uninterrupted, one rank with the same global batch
    _close(load_checkpoint(ck / "epoch_3.pt"), load_checkpoint(reference / "epoch_3.pt"))
    steps = [r["global_step"] for r in _records(ck, "train_batch")]
    assert steps == list(range(1, 10)), (
        steps
    )  # the killed attempt's lines beyond its checkpoint were dropped, none lost
    print(f"elastic restart test: {seconds:.1f} s for the torchrun part")
