"""Replay throughput: operator-steps per second of batched CNO rollouts, against one-by-one rollouts.

A batch of B random operators (θ from the dataset generator's scrambled Sobol sampler, ICs
cycling through every IC kind) is rolled out T steps by ``noa.operators.replay.replay``.
The same B rollouts are then run as B sequential single-operator replays (identical total
work), so the table shows what batching heterogeneous operators buys. Weight construction
(``build_operators``) is timed on its own; replay times include it, the "roll" column does not.

    python benchmarks/replay.py                      # B=16, T=32, grids 64 and 32, CPU (+ CUDA if present)
    python benchmarks/replay.py --grid 64 --device cuda --repeats 5

Each figure is the median of ``--repeats`` timed runs after one untimed warm-up run; on CUDA
the timed region is bracketed by ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from noa.data.generate import sobol_params
from noa.data.ics import IC_KINDS, make_ics
from noa.operators.cno import build_operators
from noa.operators.replay import replay
from noa.errors import NoaError
from noa.operators.space import CNO_SPACE
from noa.runtime import resolve_device
from noa.seeding import derive_seed

CHANNELS = 3


@dataclass
class Workload:
    """B operators and their ICs, on the host (moved to the device per run)."""

    params: torch.Tensor  # [B, P] unit θ
    ics: torch.Tensor  # [B, C, H, W]
    seeds: list[int]  # noise seeds (θ alone defines each operator)


@dataclass
class Row:
    device: str
    grid: int
    mode: str
    build_s: float
    replay_s: float
    steps: int

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.replay_s

    @property
    def roll_steps_per_s(self) -> float:
        return self.steps / max(self.replay_s - self.build_s, 1e-12)


def make_workload(batch: int, grid: int, seed: int) -> Workload:
    """The same kind of samples `noa data generate` draws, for dataset seed ``seed``."""
    params = torch.from_numpy(sobol_params(batch, seed, CNO_SPACE.size))
    kinds = [IC_KINDS[i % len(IC_KINDS)] for i in range(batch)]
    ics, _ = make_ics(kinds, [derive_seed(seed, "ic", i) for i in range(batch)], CHANNELS, grid)
    return Workload(params, ics, [derive_seed(seed, "noise", i) for i in range(batch)])


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up, and its last result."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench(work: Workload, grid: int, timesteps: int, device: torch.device, repeats: int) -> tuple[list[Row], float]:
    """Batched and sequential rows for one (device, grid), and the largest |batched - sequential|."""
    b = len(work.seeds)
    ics = work.ics.to(device)
    steps = b * timesteps

    build_batched, _ = timed(lambda: build_operators(work.params, work.seeds, CHANNELS, grid, device), device, repeats)
    replay_batched, batched = timed(lambda: replay(work.params, ics, work.seeds, timesteps), device, repeats)

    def build_each() -> None:
        for i in range(b):
            build_operators(work.params[i : i + 1], work.seeds[i : i + 1], CHANNELS, grid, device)

    def replay_each() -> torch.Tensor:
        return torch.cat(
            [replay(work.params[i : i + 1], ics[i : i + 1], work.seeds[i : i + 1], timesteps) for i in range(b)]
        )

    build_seq, _ = timed(build_each, device, repeats)
    replay_seq, sequential = timed(replay_each, device, repeats)
    name = str(device)
    rows = [
        Row(name, grid, f"batched {b}", build_batched, replay_batched, steps),
        Row(name, grid, f"{b} x single", build_seq, replay_seq, steps),
    ]
    return rows, float((batched - sequential).abs().max())


def print_table(rows: list[Row], diffs: dict[tuple[str, int], float]) -> None:
    header = f"{'device':<7} {'grid':>4}  {'mode':<12} {'build s':>8} {'replay s':>9} {'steps/s':>9} {'roll steps/s':>13} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        baseline = next(r for r in rows if r.device == row.device and r.grid == row.grid and "single" in r.mode)
        print(
            f"{row.device:<7} {row.grid:>4}  {row.mode:<12} {row.build_s:>8.3f} {row.replay_s:>9.3f} "
            f"{row.steps_per_s:>9.1f} {row.roll_steps_per_s:>13.1f} {baseline.replay_s / row.replay_s:>8.2f}x"
        )
    for (device, grid), diff in diffs.items():
        print(f"max |batched - sequential| on {device} at {grid}x{grid}: {diff:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="operators per batch; default 16")
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 32], help="grid sizes; default 64 32")
    parser.add_argument("--timesteps", type=int, default=32, help="steps per rollout; default 32")
    parser.add_argument("--device", nargs="+", default=None, help="devices; default cpu, plus cuda when present")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median); default 3")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default torch's own choice")
    parser.add_argument("--seed", type=int, default=0, help="seed of θ, ICs and operator seeds; default 0")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        devices = [
            resolve_device(name) for name in args.device or (["cpu", "auto"] if torch.cuda.is_available() else ["cpu"])
        ]
    except NoaError as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"replay benchmark: B={args.batch} operators x T={args.timesteps} steps, {CHANNELS} channels, "
        f"median of {args.repeats}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    rows: list[Row] = []
    diffs: dict[tuple[str, int], float] = {}
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda":
            print(f"cuda device: {torch.cuda.get_device_name(device)}")
        for grid in args.grid:
            work = make_workload(args.batch, grid, args.seed)
            new_rows, diffs[(name, grid)] = bench(work, grid, args.timesteps, device, args.repeats)
            rows += new_rows
    print_table(rows, diffs)


if __name__ == "__main__":
    main()
