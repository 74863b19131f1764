"""The CNO ground truth for (IC, θ, noise seed): the replay the NOA is trained and judged against.

A thin layer over :func:`noa.operators.replay.replay` that takes θ and ICs in the forms the
rest of the API takes (:mod:`noa.api.inputs`), so a comparison with
:meth:`NeuralOperatorAgent.rollout` feeds both sides the same float32 θ and the same IC.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from noa.api.inputs import Theta, paired
from noa.errors import NoaError
from noa.operators.replay import replay
from noa.runtime import resolve_device


def replay_cno(
    ic: torch.Tensor,
    theta: Theta,
    timesteps: int,
    *,
    noise_seed: int | Sequence[int] | torch.Tensor,
    realizations: int = 1,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """CNO rollouts ``[B, M, T+1, C, H, W]`` (frame 0 is the IC, M = ``realizations``), float32.

    ``ic`` is ``[C, H, W]`` or ``[B, C, H, W]`` and ``theta`` one θ or B of them (unit
    coordinates or physical values); a batch of 1 on either side is repeated to the other's B.
    ``noise_seed`` keys the noise stream and nothing else: one int for every row or one per
    row. The same (θ, IC, noise seed) gives the same rollout bit for bit on one device, as in
    any dataset that holds that sample (its ``noise_seed``). ``device`` is where the replay
    runs (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``) and where the result is.
    """
    ics, rows = paired(ic, theta)
    seeds = _noise_seeds(noise_seed, ics.shape[0])
    for name, value in (("timesteps", timesteps), ("realizations", realizations)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise NoaError(f"{name} must be an integer >= 1, got {value!r}")
    dev = resolve_device(str(device))
    return replay(rows, ics, seeds, int(timesteps), int(realizations), device=dev)


def _noise_seeds(noise_seed: int | Sequence[int] | torch.Tensor, batch: int) -> list[int]:
    if isinstance(noise_seed, numbers.Integral) and not isinstance(noise_seed, bool):
        return [int(noise_seed)] * batch
    seeds = noise_seed.tolist() if isinstance(noise_seed, torch.Tensor) else noise_seed
    if not isinstance(seeds, Sequence) or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seeds
    ):
        raise NoaError(f"noise_seed must be an int or one int per row, got {noise_seed!r}")
    if len(seeds) != batch:
        raise NoaError(f"got {len(seeds)} noise seeds for {batch} rows; give one per row or a single int")
    return [int(s) for s in seeds]
