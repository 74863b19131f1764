"""Two `noa train` runs side by side on one machine: how much each slows the other.

    python benchmarks/threads.py            # needs a quiet machine for the "alone" baseline

A small `noa train` (the quickstart's widths, 16x16, T = 8) is timed end to end alone, then
twice at once, under two thread policies:

* ``noa default``: what the command does by itself (half the cores idle at start-up, at least
  one; see ``noa/threads.py``);
* ``sleeping, every core``: every core for each run with waiting threads asleep
  (``OMP_WAIT_POLICY=PASSIVE``), the alternative that was measured and not taken;
* ``spinning``: the previous behaviour, every core for each run and OpenMP's spin-waiting
  (``OMP_WAIT_POLICY=ACTIVE --threads <all cores>``).

Fair sharing of the cores would make two runs at once take about 2x as long as one alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import WORK

from noa.data.generate import GenerateConfig, generate
from noa.threads import usable_cores


def _command(dataset: Path, ck: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "noa",
        "train",
        "--dataset",
        str(dataset),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--timesteps",
        "8",
        "--bptt-window",
        "4",
        "--base-channels",
        "16",
        "--encoder-levels",
        "2",
        "--modes",
        "8",
        "--afno-blocks",
        "2",
        "--warmup-steps",
        "2",
        "--save-every",
        "0",
        "--device",
        "cpu",
        "--checkpoint-dir",
        str(ck),
        "--overwrite",
        *extra,
    ]


def _run_together(dataset: Path, env: dict, extra: list[str], copies: int) -> float:
    """Wall seconds until all ``copies`` runs, started together, have finished (their mean)."""
    procs, starts = [], []
    for i in range(copies):
        ck = WORK / f"threads_ck_{i}"
        shutil.rmtree(ck, ignore_errors=True)
        starts.append(time.perf_counter())
        procs.append(subprocess.Popen(_command(dataset, ck, extra), env=env, stdout=subprocess.DEVNULL))
    ends = []
    for proc in procs:
        proc.wait()
        ends.append(time.perf_counter())
        if proc.returncode:
            raise SystemExit(f"noa train failed with status {proc.returncode}")
    return sum(e - s for e, s in zip(ends, starts)) / copies


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    dataset = WORK / "threads_g16_t8_n160.h5"
    if not dataset.exists():
        generate(
            GenerateConfig(n_samples=160, grid=16, timesteps=8, store_trajectories=True),
            dataset,
            progress=False,
            log=lambda _: None,
        )
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    policies = {
        "noa default": (base, []),
        "sleeping, every core": ({**base, "OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", str(usable_cores())]),
        "spinning": ({**base, "OMP_WAIT_POLICY": "ACTIVE"}, ["--threads", str(usable_cores())]),
    }
    print(f"{usable_cores()} usable cores; load average at start {os.getloadavg()[0]:.2f}\n")
    print("| policy | alone (s) | two at once, each (s) | slow-down |\n|---|---|---|---|")
    for name, (env, extra) in policies.items():
        alone = _run_together(dataset, env, extra, 1)
        together = _run_together(dataset, env, extra, 2)
        print(f"| {name} | {alone:.1f} | {together:.1f} | {together / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
