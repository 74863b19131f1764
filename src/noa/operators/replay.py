"""Deterministic batched replay of CNO rollouts: the ground truth, recomputed on demand.

A rollout is a pure function of (θ row, initial condition, noise seed, T, M): the operator
(weights, update rule, noise law) is a function of θ alone (:mod:`noa.operators.weights`), the
noise comes from a counter-based stream keyed by (noise seed, realization, step, element), and
every operator runs in a padded shape that depends on itself alone (:mod:`noa.operators.cno`).
So a dataset only needs to store those inputs, and any sample's trajectory can be rebuilt at
any time, in any batch, bit for bit on the same device; two samples with the same θ, IC and
noise seed are the same rollout whatever their index or dataset.

The time loop issues device work only: no ``.item()``, no host draws. Divergence (non-finite
values, or magnitudes above ``DIVERGENCE_BOUND``) is checked once, after the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noa.errors import NoaError
from noa.operators.cno import OperatorBatch, build_operators, deterministic_step, padded_shape, step
from noa.operators.noise import CounterNormal
from noa.operators.space import CNO_SPACE, ParameterSpace

# |x| above this is called divergent. Every operator's update is bounded (tanh output), so
# honest rollouts of T <= 1024 steps stay far below it; crossing it means broken inputs.
DIVERGENCE_BOUND = 1.0e4


@dataclass
class RolloutStatus:
    """Per-sample verdict of one rollout (host tensors)."""

    valid: torch.Tensor  # [B] bool
    max_abs: torch.Tensor  # [B] float32; inf or nan when non-finite


def _check_inputs(params: torch.Tensor, ics: torch.Tensor, seeds: list[int], timesteps: int, realizations: int) -> None:
    if params.ndim != 2 or ics.ndim != 4 or params.shape[0] != ics.shape[0] or len(seeds) != params.shape[0]:
        raise NoaError(
            f"replay needs params [B, P], ics [B, C, H, W] and B seeds; got params {tuple(params.shape)}, "
            f"ics {tuple(ics.shape)} and {len(seeds)} seeds"
        )
    if ics.shape[-1] != ics.shape[-2]:
        raise NoaError(f"the CNO needs a square grid; got {ics.shape[-2]}x{ics.shape[-1]}")
    if ics.shape[-1] < 8:
        raise NoaError(f"the CNO needs a grid of at least 8x8 (its kernels span 7 cells); got {ics.shape[-1]}")
    if timesteps < 1 or realizations < 1:
        raise NoaError(f"timesteps and realizations must be >= 1; got {timesteps} and {realizations}")


@torch.no_grad()
def replay(
    params: torch.Tensor,
    ics: torch.Tensor,
    seeds: list[int] | torch.Tensor,
    timesteps: int,
    realizations: int = 1,
    *,
    device: torch.device | str | None = None,
    space: ParameterSpace = CNO_SPACE,
) -> torch.Tensor:
    """Roll out B operators from their ICs: ``[B, M, T+1, C, H, W]`` (frame 0 is the IC).

    ``seeds`` are the rows' noise seeds: they key the noise stream and nothing else.
    """
    seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    _check_inputs(params, ics, seeds, timesteps, realizations)
    dev = torch.device(device) if device is not None else ics.device
    b, c, h, w = ics.shape
    order = _grouped_order(params, space)
    index = torch.tensor(order, device=dev)
    ops: OperatorBatch = build_operators(params.cpu()[index.cpu()], [seeds[i] for i in order], c, h, dev, space)
    ops = ops.repeat(realizations)
    noise = CounterNormal(ops.noise_keys, [r for _ in range(b) for r in range(realizations)], c * h * w, dev)
    out = torch.empty(b, realizations, timesteps + 1, c, h, w, device=dev, dtype=torch.float32)
    x = ics.to(dev, torch.float32)[index].repeat_interleave(realizations, dim=0)
    out[index, :, 0] = x.reshape(b, realizations, c, h, w)
    for t in range(timesteps):
        x = step(ops, x, noise(t).reshape(x.shape))
        out[index, :, t + 1] = x.reshape(b, realizations, c, h, w)
    return out


def _grouped_order(params: torch.Tensor, space: ParameterSpace) -> list[int]:
    """Rows sorted by padded shape, then activation: one group per shape, one call per
    nonlinearity within it (outputs are put back in the caller's order)."""
    hps = [space.decode(row.tolist()) for row in params]
    return sorted(range(len(hps)), key=lambda i: (padded_shape(hps[i]), hps[i]["activation"]))


@torch.no_grad()
def noise_free_steps(params: torch.Tensor, states: torch.Tensor, space: ParameterSpace = CNO_SPACE) -> torch.Tensor:
    """The CNO's noise-free step from every state: ``[B, S, C, H, W]`` -> ``[B, S, C, H, W]``.

    Row b's S states are advanced by operator θ_b without noise: the conditional mean of the
    next state, which a one-step target can use where a stored rollout holds one noisy draw.
    """
    b, s, c, h, w = states.shape
    if params.ndim != 2 or params.shape[0] != b:
        raise NoaError(f"noise_free_steps needs params [B, P] for states [B, S, C, H, W]; got {tuple(params.shape)}")
    order = _grouped_order(params, space)
    index = torch.tensor(order, device=states.device)
    ops = build_operators(params.cpu()[index.cpu()], [0] * b, c, h, states.device, space).repeat(s)
    x = states[index].reshape(b * s, c, h, w).float()
    out = torch.empty_like(states, dtype=torch.float32)
    out[index] = deterministic_step(ops, x).reshape(b, s, c, h, w)
    return out


def rollout_status(trajectories: torch.Tensor, bound: float = DIVERGENCE_BOUND) -> RolloutStatus:
    """Which samples of ``[B, M, T+1, C, H, W]`` stayed finite and below ``bound``."""
    flat = trajectories.reshape(trajectories.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    max_abs = flat.abs().amax(dim=1)
    max_abs = torch.where(finite, max_abs, torch.full_like(max_abs, float("inf")))
    valid = finite & (max_abs <= bound)
    return RolloutStatus(valid=valid.cpu(), max_abs=max_abs.float().cpu())
