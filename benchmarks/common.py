"""Pieces shared by the benchmarks: the training ones' common flags and shared dataset (the skills are
the library's: :mod:`noa.diagnostics.skill`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from noa.data.generate import GenerateConfig, generate

WORK = Path(__file__).resolve().parent / ".work"


def training_parser(description: str) -> argparse.ArgumentParser:
    """The data, schedule and width flags every training benchmark takes, at their small defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n-samples", type=int, default=400)
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bptt-window", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--encoder-levels", type=int, default=2)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--afno-blocks", type=int, default=2)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def ensure_dataset(args: argparse.Namespace) -> Path:
    """A toolkit dataset with cached trajectories (training then skips the per-batch replay),
    made once and shared by the benchmarks that ask for the same size."""
    path = WORK / f"toolkit_g{args.grid}_t{args.timesteps}_n{args.n_samples}_s{args.seed}.h5"
    if not path.exists():
        cfg = GenerateConfig(
            n_samples=args.n_samples, grid=args.grid, timesteps=args.timesteps, seed=args.seed, store_trajectories=True
        )
        generate(cfg, path, progress=False, log=lambda _: None)
    return path


class _EpochSummaries(logging.Handler):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage().strip()
        if line.startswith(("Train:", "Val:")):
            print(f"    {self.prefix}{line}", flush=True)


@contextmanager
def epoch_summaries(prefix: str = "") -> Iterator[None]:
    """Print only the epoch Train:/Val: lines of `noa train`'s log, as a benchmark's progress."""
    logger = logging.getLogger("noa.train")
    handler, level = _EpochSummaries(prefix), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cell(value: float | None, spec: str = ".5g") -> str:
    """A table cell: the number, or "–" for a loss the epoch did not have (a rollout loss in an
    epoch of the one-step phase only: its history entry is None)."""
    return "–" if value is None else format(value, spec)
