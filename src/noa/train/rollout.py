"""NOA rollouts: the learned operator applied T times from an initial condition.

``sample_steps`` picks the timesteps whose bottleneck feeds L_latent (the guide's
``--latent-sample-steps``): 3 means first, middle and last step, K evenly spaced steps in
general, -1 every step. Step t is the forward pass that maps frame t to frame t+1, so the
bottleneck of step t describes the state x_t.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from noa.errors import NoaError


def sample_steps(timesteps: int, k: int) -> list[int]:
    """K evenly spaced steps of 0..T-1 including both ends (all of them for k = -1)."""
    if k == -1 or k >= timesteps:
        if k > timesteps:
            raise NoaError(f"--latent-sample-steps {k} is more than the {timesteps} timesteps available")
        return list(range(timesteps))
    if k < 1:
        raise NoaError(f"--latent-sample-steps must be -1 (all) or between 1 and --timesteps; got {k}")
    if k == 1:
        return [timesteps - 1]
    return sorted({round(i * (timesteps - 1) / (k - 1)) for i in range(k)})


@torch.no_grad()
def rollout_noa(
    model: Callable[..., Any],
    ic: torch.Tensor,
    params: torch.Tensor,
    timesteps: int,
    projector: nn.Module | None = None,
    steps: list[int] | None = None,
    restarts: torch.Tensor | None = None,
    every: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames ``[B, T+1, C, H, W]`` (frame 0 = ic) and, with a projector, the projected
    bottleneck latents ``[B, K, D]`` at ``steps`` (no gradients).

    ``model`` is a :class:`~noa.model.UAFNO` or anything called like one, such as a
    :class:`~noa.train.execution.Stepper`. With ``restarts`` (frames ``[B, T+1, C, H, W]``, the
    CNO target) the rollout restarts from ``restarts[:, t]`` every ``every`` steps: the frames a
    teacher-forced training batch scores.
    """
    frames = [ic]
    latents = []
    wanted = set(steps or [])
    x = ic
    for t in range(timesteps):
        if restarts is not None and t % every == 0:
            x = restarts[:, t]
        if projector is not None and t in wanted:
            x, bottleneck = model(x, params, return_bottleneck=True)
            latents.append(projector(bottleneck))
        else:
            x = model(x, params)
        frames.append(x)
    projected = torch.stack(latents, dim=1) if latents else None
    return torch.stack(frames, dim=1), projected
