"""The one-step phase: the NOA learns the CNO's map from the states the CNO visits.

A rollout loss asks the untrained NOA to follow T steps of a noisy trajectory at once, and a
plain MSE on the update hears almost only the convex operators, whose update is of the order
of the state, while a residual update dt·O(x) with dt = 0.01 is a thousand times smaller in
the loss (``benchmarks/learnability.py``). So training starts by learning the map itself:

* every state x_t of the CNO's rollout (t < T) is advanced one NOA step;
* its target is the CNO's *noise-free* step from x_t (:func:`noa.operators.replay.noise_free_steps`),
  the conditional mean of x_{t+1}: a noisy draw would add σ²/scale² of pure noise per value;
* the squared error of each sample is divided by the square of its rule's scale (dt or 1-α)
  when the model applies the family's rule (:mod:`noa.model.update_rule`), so the loss is
  |f - O|² for every operator alike: each counts at unit scale.

Reported per batch: ``total`` = that unit-scale loss, ``traj`` = the plain MSE of the one-step
predictions against the noise-free targets. L_commit and L_latent need rollouts and wait for
the rollout phase. States are taken ``bptt_window`` steps at a time, so memory is that of a
window of the rollout phase.
"""

from __future__ import annotations

import torch

from noa.model import UAFNO
from noa.operators.replay import noise_free_steps
from noa.train.step import BatchLosses, Objective, sync_gradients


def unit_weights(model: UAFNO, params: torch.Tensor) -> torch.Tensor:
    """[B] weights that put each sample's one-step error at unit scale: 1/scale² with a rule head, else 1."""
    if model.rule is None:
        return torch.ones(params.shape[0], device=params.device)
    _, scale = model.rule.coefficients(params.float())
    return scale.reshape(-1).pow(-2)


def train_one_step_batch(obj: Objective, params: torch.Tensor, target: torch.Tensor) -> BatchLosses:
    """Accumulate the gradient of the unit-scale one-step loss into ``.grad``; return the losses.

    ``target`` is the CNO rollout ``[B, T+1, C, H, W]``; its frames 0..T-1 are the states.
    """
    timesteps = target.shape[1] - 1
    obj.train_step.new_batch()
    weights = unit_weights(obj.model, params)
    n_values = target[:, 1:].numel()
    plain_total = torch.zeros((), device=target.device)
    unit_total = torch.zeros((), device=target.device)
    starts = range(0, timesteps, obj.bptt_window)
    for start in starts:
        states = target[:, start : min(timesteps, start + obj.bptt_window)]
        clean = noise_free_steps(params, states)
        steps = states.shape[1]
        with sync_gradients(obj, now=start == starts[-1]):
            guess = obj.train_step(states.flatten(0, 1), params.repeat_interleave(steps, dim=0))
            per_sample = (guess.view_as(states) - clean).pow(2).sum(dim=(1, 2, 3, 4))  # type: ignore[union-attr]
            unit = (per_sample * weights).sum()
            (unit / n_values).backward()
        plain_total = plain_total + per_sample.detach().sum()
        unit_total = unit_total + unit.detach()
    return BatchLosses(float(unit_total) / n_values, float(plain_total) / n_values, None, None)
