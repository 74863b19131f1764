"""Parallel scaling on one machine: dataset generation with 1 vs N workers, and a training step
on 1 vs N torchrun ranks (Gloo on the CPU) at equal global batch.

    python benchmarks/parallel_scaling.py                 # 2 workers / 2 ranks, CPU
    python benchmarks/parallel_scaling.py --workers 4 --n-samples 256

Generation: ``noa data generate`` of the same dataset with ``--workers 1`` and ``--workers N``
(one thread per process), timed end to end including the workers' start-up, and the two files
checked equal array for array. Training: ``noa train`` with the global batch held fixed
(1 rank x B vs N ranks x B/N), trajectories cached so the step is the NOA's own work; the
figure is the median of the per-batch seconds in ``metrics.jsonl`` after the first batch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from common import WORK

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _generate(out: Path, args: argparse.Namespace, workers: int) -> float:
    cmd = [
        sys.executable,
        "-m",
        "noa",
        "data",
        "generate",
        "--out",
        str(out),
        "--n-samples",
        str(args.n_samples),
        "--grid",
        str(args.grid),
        "--timesteps",
        str(args.timesteps),
        "--batch-size",
        str(args.gen_batch),
        "--workers",
        str(workers),
        "--no-progress",
        "--overwrite",
        "--store-trajectories",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _same(a: Path, b: Path) -> bool:
    with h5py.File(a) as fa, h5py.File(b) as fb:
        names: list[str] = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return all(np.array_equal(fa[n][()], fb[n][()]) for n in names)


def _train(dataset: Path, args: argparse.Namespace, ranks: int) -> float:
    ck = WORK / f"scaling_ck_{ranks}"
    shutil.rmtree(ck, ignore_errors=True)
    flags = [
        "train",
        "--dataset",
        str(dataset),
        "--epochs",
        "1",
        "--max-steps",
        str(args.steps),
        "--batch-size",
        str(args.global_batch // ranks),
        "--timesteps",
        str(args.timesteps),
        "--bptt-window",
        str(args.timesteps // 2),
        "--checkpoint-dir",
        str(ck),
        "--save-every",
        "0",
        "--base-channels",
        "16",
        "--encoder-levels",
        "2",
        "--modes",
        "8",
        "--afno-blocks",
        "2",
        "--device",
        "cpu",
        "--warmup-steps",
        "1",
    ]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), "-m", "noa"]
        if ranks > 1
        else [sys.executable, "-m", "noa"]
    )
    subprocess.run(launcher + flags, check=True, env=ENV, stdout=subprocess.DEVNULL)
    seconds = [
        json.loads(line)["sec"] for line in (ck / "metrics.jsonl").read_text().splitlines() if '"train_batch"' in line
    ]
    return statistics.median(seconds[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="workers and ranks to compare with 1")
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    n = args.workers
    print(
        f"## Generation: {args.n_samples} operators, {args.grid}x{args.grid}, T = {args.timesteps}, batch {args.gen_batch}\n"
    )
    print("| workers | seconds | operators/s | operator-steps/s |\n|---|---|---|---|")
    files = {}
    for workers in (1, n):
        files[workers] = WORK / f"scaling_gen_w{workers}.h5"
        seconds = _generate(files[workers], args, workers)
        print(
            f"| {workers} | {seconds:.1f} | {args.n_samples / seconds:.2f} | {args.n_samples * args.timesteps / seconds:.0f} |",
            flush=True,
        )
    print(f"\nthe two files are equal array for array: {_same(files[1], files[n])}\n")
    print(
        f"## Training step: global batch {args.global_batch}, T = {args.timesteps}, window {args.timesteps // 2}, base 16, L_traj\n"
    )
    print("| ranks | per-rank batch | s/batch (median) | speed-up |\n|---|---|---|---|")
    one = _train(files[1], args, 1)
    print(f"| 1 | {args.global_batch} | {one:.2f} | 1.00 |", flush=True)
    many = _train(files[1], args, n)
    print(f"| {n} | {args.global_batch // n} | {many:.2f} | {one / many:.2f} |")


if __name__ == "__main__":
    main()
