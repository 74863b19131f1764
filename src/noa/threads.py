"""CPU threads for the `noa` command: a count that fits the machine now, and threads that sleep
when they wait.

torch's OpenMP threads spin while they wait for work by default. On a machine whose cores are
busy (another training run, a test suite), spinning threads steal the cores the working
threads need: two small `noa train` runs side by side on 2 cores each ran 18× slower than
alone. The command therefore (1) asks OpenMP to let waiting threads sleep
(``OMP_WAIT_POLICY=PASSIVE``), which must happen before torch is imported, and (2) uses the
cores that are idle at start-up (the usable cores less the 1-minute load average), at least
one. ``--threads N`` or the usual ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` variables win.
This module imports no torch at import time, so :func:`prefer_passive_waiting` can run first.
"""

from __future__ import annotations

import os

from noa.errors import NoaError


def prefer_passive_waiting() -> None:
    """Waiting OpenMP threads sleep instead of spinning, unless the user chose a policy.
    Takes effect only if torch (its OpenMP runtime) is not loaded yet."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def idle_cores() -> int:
    """Usable cores not busy with other work right now (1-minute load average), at least 1."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, usable_cores() - int(load + 0.5))


def choose_threads(requested: int | None) -> tuple[int, str]:
    """The thread count and where it came from: --threads, OMP_NUM_THREADS, or the idle cores."""
    if requested is not None:
        if requested < 1:
            raise NoaError(f"--threads must be >= 1; got {requested}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError as err:
            raise NoaError(f"OMP_NUM_THREADS={env!r} is not a whole number; unset it or set e.g. OMP_NUM_THREADS=1") from err
        if value >= 1:
            return value, "OMP_NUM_THREADS"
    return idle_cores(), f"idle cores of {usable_cores()}"


def apply_threads(requested: int | None) -> str:
    """Set torch's intra-op threads; returns a short description for the start-up line."""
    import torch

    count, source = choose_threads(requested)
    torch.set_num_threads(count)
    return f"{count} ({source}; waiting threads {os.environ.get('OMP_WAIT_POLICY', 'default').lower()})"
