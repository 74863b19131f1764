"""Several processes under ``torchrun``: the process group and the few collectives noa uses.

``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) starts one process per device. Each joins one process group,
NCCL when it trains on CUDA and Gloo on the CPU, and works on its ``LOCAL_RANK`` device.
Without those variables the run is one process and every helper here is a no-op, so the same
code serves both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from noa.errors import NoaError

# How long a collective may wait for a lost peer before the run fails (NCCL; Gloo notices a
# closed connection at once).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_environment() -> Ranks:
    """The ranks torchrun declared (one process when it declared none)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise NoaError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {err}") from err
    if not 0 <= rank < world:
        raise NoaError(f"RANK={rank} is outside WORLD_SIZE={world}; launch with torchrun")
    return Ranks(rank=rank, world_size=world, local_rank=local)


def rank_device(requested: str, ranks: Ranks) -> str:
    """``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``) when several ranks train."""
    if ranks.distributed and requested == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise NoaError(
                f"LOCAL_RANK={ranks.local_rank} but this node has {torch.cuda.device_count()} GPUs; "
                "launch at most one process per GPU (--nproc_per_node)"
            )
        return f"cuda:{ranks.local_rank}"
    return requested


@contextmanager
def process_group(ranks: Ranks, device: str, backend: str | None = None) -> Iterator[None]:
    """Join (and finally leave) the process group of a multi-process run: NCCL for CUDA
    training, Gloo on the CPU or when ``backend`` says so (object exchange needs no GPU)."""
    if not ranks.distributed or dist.is_initialized():
        yield
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
    # The rendezvous store outlives a torchrun restart (--max-restarts), and with it the addresses
    # the killed attempt's ranks published; each attempt keys its own so no rank dials a dead one.
    store, rank, world_size = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(f"noa/attempt-{attempt}", store),
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all ranks (the tensor itself in a one-process run)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def lost_peer(err: BaseException) -> bool:
    """Whether a collective failed because another rank is gone (killed, crashed, timed out)."""
    if isinstance(err, getattr(dist, "DistBackendError", ())):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _LOST_PEER)
