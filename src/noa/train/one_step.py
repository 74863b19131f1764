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

``--one-step-states K`` takes K of each realization's T states (drawn afresh for every epoch and
sample, :func:`state_picks`): the states of one rollout are much alike, so a batch of K states per
sample costs K/T as much and the phase reaches T/K times as many operators for the same compute.

Memory. The steps are independent, so the model sees B states at a time (one realization, one
t), each micro-batch back-propagated at once: the forward batch and its activations are those
of one rollout step, and the step's input is the rollout phase's (B contiguous states: a
strided view would be a second compiled graph). The
gradient is the gradient of the whole loss, up to the order of float summation. A graph of one
step gains nothing from activation checkpointing, so it runs without (its peak is lower). The
targets are computed without gradients ``bptt_window`` steps at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from noa.model import UAFNO
from noa.operators.replay import noise_free_steps
from noa.seeding import generator
from noa.train.step import BatchLosses, Objective, sync_gradients


def unit_weights(model: UAFNO, params: torch.Tensor) -> torch.Tensor:
    """[B] weights that put each sample's one-step error at unit scale: 1/scale² with a rule head, else 1."""
    if model.rule is None:
        return torch.ones(params.shape[0], device=params.device)
    _, scale = model.rule.coefficients(params.float())
    return scale.reshape(-1).pow(-2)


def state_picks(seed: int, epoch: int, rows: Sequence[int], realizations: int, timesteps: int, k: int) -> torch.Tensor:
    """``[B, M, K]``: the K steps (sorted) whose states each sample's realization contributes to
    a one-step batch, drawn from (run seed, epoch, dataset row, realization) alone, so they do not
    depend on the batch a sample falls in, and a resumed epoch draws the same ones."""
    picks = torch.empty(len(rows), realizations, k, dtype=torch.long)
    for b, row in enumerate(rows):
        for m in range(realizations):
            order = torch.randperm(timesteps, generator=generator(seed, "one-step-states", epoch, int(row), m))
            picks[b, m] = order[:k].sort().values
    return picks


def train_one_step_batch(
    obj: Objective, params: torch.Tensor, realizations: torch.Tensor, picks: torch.Tensor | None = None
) -> BatchLosses:
    """Accumulate the gradient of the unit-scale one-step loss into ``.grad``; return the losses.

    ``realizations`` are the CNO rollouts ``[B, M, T+1, C, H, W]``; the states are frames
    0..T-1 of each realization (B·M·T samples, B per forward pass), or with ``picks``
    (:func:`state_picks`, ``[B, M, K]``) the K frames it names per sample and realization.
    """
    b, n_real, timesteps = realizations.shape[0], realizations.shape[1], realizations.shape[2] - 1
    if picks is None:
        picks = torch.arange(timesteps).expand(b, n_real, timesteps)
    picks = picks.to(realizations.device)
    count = picks.shape[2]
    rows = torch.arange(b, device=realizations.device)[:, None]
    obj.train_step.new_batch()
    weights = unit_weights(obj.model, params)
    n_values = b * n_real * count * realizations[0, 0, 0].numel()
    plain_total = torch.zeros((), device=realizations.device)
    unit_total = torch.zeros((), device=realizations.device)
    for m in range(n_real):
        for start in range(0, count, obj.bptt_window):
            end = min(count, start + obj.bptt_window)
            states = realizations[:, m][rows, picks[:, m, start:end]]  # [B, S, C, H, W]
            clean = noise_free_steps(params, states)
            for j in range(end - start):
                with sync_gradients(obj, now=m == n_real - 1 and start + j == count - 1):
                    guess = obj.train_step(states[:, j].contiguous(), params, recompute=False)
                    per_sample = (guess - clean[:, j]).pow(2).sum(dim=(1, 2, 3))  # type: ignore[operator]
                    unit = (per_sample * weights).sum()
                    (unit / n_values).backward()
                plain_total = plain_total + per_sample.detach().sum()
                unit_total = unit_total + unit.detach()
    return BatchLosses(float(unit_total) / n_values, float(plain_total) / n_values, None, None)
