"""CPU threads for the `noa` command: a count that leaves room for a neighbour.

torch's OpenMP threads spin while they wait for work. When two runs together ask for more
threads than there are cores, the spinning threads steal the cores the working threads need:
two small `noa train` runs side by side on a 2-core machine, each with both cores, ran 25×
slower than alone (`benchmarks/threads.py`). Letting waiting threads sleep
(``OMP_WAIT_POLICY=PASSIVE``) removes the collapse but costs a wake-up per operation, which
made a small run alone 2.5× slower. So the command takes **half of the cores idle at start-up**
(usable cores less the 1-minute load average), at least one: two runs started together never
oversubscribe the machine, and on this 2-core CPU one thread is also the fastest choice for a
run alone (replay and small models do not gain from a second thread here). ``--threads N`` or
``OMP_NUM_THREADS`` win; ``OMP_WAIT_POLICY`` is left to the user.
"""

from __future__ import annotations

import os

from noa.errors import NoaError


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
    """The thread count and where it came from: --threads, OMP_NUM_THREADS, or half the idle cores."""
    if requested is not None:
        if requested < 1:
            raise NoaError(f"--threads must be >= 1; got {requested}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError as err:
            raise NoaError(
                f"OMP_NUM_THREADS={env!r} is not a whole number; unset it or set e.g. OMP_NUM_THREADS=1"
            ) from err
        if value >= 1:
            return value, "OMP_NUM_THREADS"
    return max(1, idle_cores() // 2), f"half the idle cores of {usable_cores()}"


def apply_threads(requested: int | None) -> str:
    """Set torch's intra-op threads; returns a short description for the start-up line."""
    import torch

    count, source = choose_threads(requested)
    torch.set_num_threads(count)
    return f"{count} ({source})"
