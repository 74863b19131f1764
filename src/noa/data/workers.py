"""Replaying a dataset's rows in parallel: worker processes on one machine, ranks under torchrun.

A dataset has one writer. The work — CNO replay and behavioural features, batch by batch — is a
pure function of the rows' stored inputs (θ, IC, noise seed), and a row's result never depends
on its batch neighbours, so it can run anywhere: in this process, in ``--workers N`` processes
of this machine, or on the ranks ``torchrun`` started (each with its own device). Results come
back to the writer (this process, or rank 0), which stores them and flags the rows done; a
killed run resumes from the flags. Whatever the split, the file is byte-for-byte the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch

from noa.operators.replay import replay, rollout_status


@dataclass
class Task:
    """One batch of rows to work on, with the inputs read by the writer."""

    rows: np.ndarray
    params: np.ndarray
    ics: np.ndarray
    noise_seeds: list[int]
    trajectories: np.ndarray | None = None  # cached rollouts: features only, no replay


@dataclass(frozen=True)
class Work:
    """What to compute for every task (the same for all)."""

    timesteps: int
    realizations: int
    keep_trajectories: bool
    features: bool
    device: str = "cpu"


@dataclass
class Result:
    rows: np.ndarray
    trajectories: np.ndarray | None
    features: dict[str, np.ndarray] | None
    valid: np.ndarray
    max_abs: np.ndarray
    replayed: bool  # False when the task brought cached rollouts (features only)


def run_task(task: Task, work: Work) -> Result:
    """Replay (unless cached) and featurize one batch of rows."""
    if task.trajectories is not None:
        traj = torch.from_numpy(task.trajectories).to(work.device)
    else:
        ics = torch.from_numpy(task.ics).to(work.device)
        traj = replay(torch.from_numpy(task.params), ics, task.noise_seeds, work.timesteps, work.realizations)
    features = None
    if work.features:
        from noa.features import compute_features

        features = {category: values.cpu().numpy() for category, values in compute_features(traj, stable=True).items()}
    status = rollout_status(traj)
    return Result(
        rows=task.rows,
        trajectories=traj.cpu().numpy() if work.keep_trajectories else None,
        features=features,
        valid=status.valid.numpy(),
        max_abs=status.max_abs.numpy(),
        replayed=task.trajectories is None,
    )


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_tasks(tasks: Iterable[Task], work: Work, workers: int) -> Iterator[Result]:
    """Results of ``tasks`` in order: here when ``workers`` <= 1, else in a pool of that many
    processes (spawned, each with its share of this process's CPU threads), at most two tasks
    each in flight."""
    if workers <= 1:
        for task in tasks:
            yield run_task(task, work)
        return
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    ) as pool:
        in_flight: deque[Future] = deque()
        for task in tasks:
            in_flight.append(pool.submit(run_task, task, work))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def run_tasks_on_ranks(tasks: Iterable[Task] | None, work: Work) -> Iterator[Result]:
    """Under torchrun: rank 0 reads the tasks and hands one to each rank per round; every rank
    computes on its own device; the results come back to rank 0, which yields them (other
    ranks yield nothing). Call on every rank; ``tasks`` matters on rank 0 only."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    source = iter(tasks) if rank == 0 and tasks is not None else None
    while True:
        batch = [next(source, None) for _ in range(world)] if source is not None else None
        done = [batch is not None and all(task is None for task in batch)]
        dist.broadcast_object_list(done, src=0)
        if done[0]:
            return
        mine: list[Task | None] = [None]
        dist.scatter_object_list(mine, batch, src=0)
        result = run_task(mine[0], work) if mine[0] is not None else None
        gathered: list[Result | None] | None = [None] * world if rank == 0 else None
        dist.gather_object(result, gathered, dst=0)
        if gathered is not None:
            yield from (r for r in gathered if r is not None)
