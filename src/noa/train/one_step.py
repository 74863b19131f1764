"""The one-step phase: the NOA learns the CNO's map from the states the CNO visits.

A rollout loss asks the untrained NOA to follow T steps of a noisy trajectory at once, and a
plain MSE on the update hears almost only the convex operators, whose update is of the order
of the state, while a residual update dt·O(x) with dt = 0.01 is a thousand times smaller in
the loss (``benchmarks/learnability.py``). So training starts by learning the map itself:

* every state x_t (t < T) of every CNO realization is advanced one NOA step: with
  ``--n-realizations`` M each realization is a sample of its own, since their mean is a state
  the CNO never visits;
* its target is the CNO's *noise-free* step from x_t (:func:`noa.operators.replay.noise_free_steps`),
  the conditional mean of x_{t+1}: a noisy draw would add σ²/scale² of pure noise per value;
* the squared error of each sample is divided by the square of its rule's scale (dt or 1-α)
  when the model applies the family's rule (:mod:`noa.model.update_rule`), so the loss is
  |f - O|² for every operator alike: each counts at unit scale.

Reported per batch: ``total`` = that unit-scale loss, ``traj`` = the plain MSE of the one-step
predictions against the noise-free targets. L_commit and L_latent need rollouts and wait for
the rollout phase.

Memory. The steps are independent, so the model sees B states at a time (one realization, one
t), each micro-batch back-propagated at once: the forward batch and its activations are those
of one rollout step, and the step's input is the rollout phase's (B contiguous states: a
strided view would be a second compiled graph). The
gradient is the gradient of the whole loss, up to the order of float summation. A graph of one
step gains nothing from activation checkpointing, so it runs without (its peak is lower). The
targets are computed without gradients ``bptt_window`` steps at a time.
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


def train_one_step_batch(obj: Objective, params: torch.Tensor, realizations: torch.Tensor) -> BatchLosses:
    """Accumulate the gradient of the unit-scale one-step loss into ``.grad``; return the losses.

    ``realizations`` are the CNO rollouts ``[B, M, T+1, C, H, W]``; frames 0..T-1 of each
    realization are the states (B·M·T samples, B per forward pass).
    """
    n_real, timesteps = realizations.shape[1], realizations.shape[2] - 1
    obj.train_step.new_batch()
    weights = unit_weights(obj.model, params)
    n_values = realizations[:, :, 1:].numel()
    plain_total = torch.zeros((), device=realizations.device)
    unit_total = torch.zeros((), device=realizations.device)
    for m in range(n_real):
        for start in range(0, timesteps, obj.bptt_window):
            end = min(timesteps, start + obj.bptt_window)
            clean = noise_free_steps(params, realizations[:, m, start:end])
            for t in range(start, end):
                with sync_gradients(obj, now=m == n_real - 1 and t == timesteps - 1):
                    guess = obj.train_step(realizations[:, m, t].contiguous(), params, recompute=False)
                    per_sample = (guess - clean[:, t - start]).pow(2).sum(dim=(1, 2, 3))  # type: ignore[operator]
                    unit = (per_sample * weights).sum()
                    (unit / n_values).backward()
                plain_total = plain_total + per_sample.detach().sum()
                unit_total = unit_total + unit.detach()
    return BatchLosses(float(unit_total) / n_values, float(plain_total) / n_values, None, None)
