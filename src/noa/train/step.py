"""One training batch: the three losses under truncated BPTT.

    L_total = L_traj + λ_commit·L_commit + λ_latent·L_latent

* **L_traj** = MSE over ``[B, T, C, H, W]`` between the NOA rollout and the CNO target.
* **L_commit** = MSE(z, sg(z_q)), z = concatenated ``tokenizer.encode(features(rollout))``,
  features of the *full-length* rollout (frame 0 = the IC), computed by the same code the
  tokenizer was trained on.
* **L_latent** = MSE(mean_k projector(bottleneck_{t_k}), sg(z)) over the sampled steps t_k.

Where the gradients go. The rollout runs in windows of ``bptt_window`` steps and the state is
detached between windows, so activation memory is bounded by one window and no gradient
crosses a window boundary. L_traj is a sum over frames, so each window's share is exact.
L_commit and L_latent depend on the whole rollout at once (features span all T frames;
L_latent averages over steps in different windows), so a *scout* pass first rolls the model
out without gradients and takes their values and their gradients with respect to each frame
(dL_commit/dx_t) and each sampled projector output (dL_latent/dp_k). Each window is then
recomputed with gradients and back-propagated with the surrogate

    Σ_t ||x_t - y_t||² / N  +  λ_commit·Σ_t <dL_commit/dx_t, x_t>  +  λ_latent·Σ_k <dL_latent/dp_k, p_k>,

whose gradient equals the true gradient of L_total truncated at window boundaries. The
tokenizer is frozen: L_commit moves only the NOA (through its frames), L_latent moves the
projector and, through the bottleneck of the same forward pass that produced x_{t+1}, the
NOA's encoder. Without a tokenizer there is no scout pass.

What memory is bounded by. No autograd graph spans more than one window of frames, the scout
pass's included. The features read each frame only through small statistics without spatial
axes (``noa.features.rollout_statistics``), so the scout pass gathers them ``bptt_window``
frames at a time without gradients, differentiates statistics -> features -> encoder ->
L_commit, and pulls that gradient back to the frames one window of frames at a time
(``noa.features.frame_gradient``; exact, frame 0 excepted: the IC is never trained). What
still grows with T is that middle graph, which has no spatial axes, and two plain tensors the
size of the rollout (its frames and dL_commit/dx_t) that belong to no graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from noa.features import features_from_statistics, frame_gradient, rollout_statistics
from noa.model import UAFNO
from noa.train.execution import Execution, Stepper
from noa.train.rollout import rollout_noa

if TYPE_CHECKING:
    from noa.tokenizer.frozen import FrozenTokenizer


@dataclass
class Objective:
    """What a batch is scored with: the model, optional alignment pieces and loss weights."""

    model: UAFNO
    projector: nn.Module | None
    tokenizer: FrozenTokenizer | None  # its encode takes noa's features and picks the columns it reads
    lambda_commit: float
    lambda_latent: float
    bptt_window: int
    latent_steps: list[int]
    # The modules that train, when they differ from the above: DistributedDataParallel
    # wrappers, whose gradients are synchronised once per batch, at the last window.
    ddp_model: nn.Module | None = None
    ddp_projector: nn.Module | None = None
    execution: Execution = field(default_factory=Execution)

    def __post_init__(self) -> None:
        # The trained step goes through DDP (when several ranks train); the scout pass and
        # evaluation need no gradient synchronisation and run the bare model.
        self.train_step = Stepper(self.ddp_model or self.model, self.execution)
        self.eval_step = Stepper(self.model, self.execution)

    @property
    def uses_latent(self) -> bool:
        return self.projector is not None and self.tokenizer is not None


@dataclass
class Alignment:
    """Scout-pass values and gradients of L_commit and L_latent."""

    commit: torch.Tensor
    latent: torch.Tensor | None
    frame_grad: torch.Tensor  # dL_commit/dx_t, [B, T+1, C, H, W]; zeros at frame 0 (the IC, never trained)
    projection_grad: torch.Tensor | None  # dL_latent/dp_k (the same for every k), [B, D]


def alignment(obj: Objective, frames: torch.Tensor, projected: torch.Tensor | None, need_grad: bool) -> Alignment:
    """L_commit and L_latent of a rollout ``frames`` (and their gradients when ``need_grad``).

    The features' statistics are gathered ``bptt_window`` frames at a time without gradients;
    autograd runs through statistics -> features -> encoder only, then back to the frames one
    chunk at a time (:func:`noa.features.frame_gradient`), so memory stays bounded by the window.
    """
    assert obj.tokenizer is not None
    with torch.no_grad():
        stats = rollout_statistics(frames, chunk=obj.bptt_window)
    if need_grad:
        stats = stats.requiring_grad()
    with torch.enable_grad() if need_grad else torch.no_grad():
        latents = obj.tokenizer.encode(features_from_statistics(stats))
        z = torch.cat(latents, dim=1)
        z_q = torch.cat(obj.tokenizer.quantize([entry.detach() for entry in latents])[0], dim=1)
        commit = F.mse_loss(z, z_q)
    frame_grad = frame_gradient(commit, stats, frames, obj.bptt_window) if need_grad else torch.zeros(0)
    latent = projection_grad = None
    if projected is not None:
        p_mean = projected.mean(dim=1)
        target = z.detach()
        latent = F.mse_loss(p_mean, target)
        # d MSE(mean_k p_k, z) / d p_k = 2 (mean_k p_k - z) / (B·D·K)
        projection_grad = 2.0 * (p_mean - target) / (p_mean.numel() * projected.shape[1])
    return Alignment(commit.detach(), latent, frame_grad, projection_grad)


@dataclass
class BatchLosses:
    total: float
    traj: float
    commit: float | None
    latent: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"total": self.total, "traj": self.traj, "commit": self.commit, "latent": self.latent}


def _combine(obj: Objective, traj: float, align: Alignment | None) -> BatchLosses:
    commit = float(align.commit) if align is not None else None
    latent = float(align.latent) if align is not None and align.latent is not None else None
    total = traj + obj.lambda_commit * (commit or 0.0) + obj.lambda_latent * (latent or 0.0)
    return BatchLosses(total, traj, commit, latent)


def train_batch(
    obj: Objective, ic: torch.Tensor, params: torch.Tensor, target: torch.Tensor, teacher_forced: bool = False
) -> BatchLosses:
    """Accumulate the gradient of L_total for one batch into ``.grad`` (TBPTT); return the losses.

    ``target`` is the CNO rollout ``[B, T+1, C, H, W]`` (frame 0 = ic). ``teacher_forced``
    starts every window from the target's state at the window's first step instead of the
    NOA's own: the windows learn the operator's dynamics from states the CNO visits, before
    the NOA's rollouts are good enough to learn from (the losses keep their definitions, on
    the frames so produced).
    """
    timesteps = target.shape[1] - 1
    obj.train_step.new_batch()
    restarts, every = (target, obj.bptt_window) if teacher_forced else (None, 0)
    align = None
    if obj.tokenizer is not None:
        frames, projected = rollout_noa(
            obj.eval_step,
            ic,
            params,
            timesteps,
            obj.projector if obj.uses_latent else None,
            obj.latent_steps,
            restarts,
            every,
        )
        align = alignment(obj, frames, projected, need_grad=True)
    wanted = set(obj.latent_steps) if obj.uses_latent else set()
    step = obj.train_step
    projector = obj.ddp_projector or obj.projector
    n_values = target[:, 1:].numel()
    sq_total = torch.zeros((), device=ic.device)
    x = ic
    starts = range(0, timesteps, obj.bptt_window)
    for start in starts:
        if teacher_forced:
            x = target[:, start]
        with sync_gradients(obj, now=start == starts[-1]):
            sq = torch.zeros((), device=ic.device)
            surrogate = torch.zeros((), device=ic.device)
            for t in range(start, min(timesteps, start + obj.bptt_window)):
                if t in wanted:
                    x, bottleneck = step(x, params, return_bottleneck=True)
                    # (wanted is empty unless L_latent is on, with its scout-pass gradient and a projector)
                    surrogate = surrogate + obj.lambda_latent * (align.projection_grad * projector(bottleneck)).sum()  # type: ignore[union-attr,operator,misc]
                else:
                    x = step(x, params)  # type: ignore[assignment]  # without return_bottleneck, the state alone
                sq = sq + (x - target[:, t + 1]).pow(2).sum()
                if align is not None and obj.lambda_commit > 0:
                    surrogate = surrogate + obj.lambda_commit * (align.frame_grad[:, t + 1] * x).sum()
            (sq / n_values + surrogate).backward()
        sq_total = sq_total + sq.detach()
        x = x.detach()
    return _combine(obj, float(sq_total) / n_values, align)


@contextmanager
def sync_gradients(obj: Objective, now: bool) -> Iterator[None]:
    """Let DDP all-reduce gradients only in the batch's last window (``now``); earlier windows
    accumulate locally under ``no_sync``, so a batch costs one synchronisation, not one per window."""
    with ExitStack() as stack:
        if not now:
            for wrapped in (obj.ddp_model, obj.ddp_projector):
                if wrapped is not None:
                    stack.enter_context(wrapped.no_sync())  # type: ignore[operator]  # DistributedDataParallel's
        yield


@torch.no_grad()
def eval_batch(obj: Objective, ic: torch.Tensor, params: torch.Tensor, target: torch.Tensor) -> BatchLosses:
    """The same losses without gradients (one rollout)."""
    timesteps = target.shape[1] - 1
    obj.eval_step.new_batch()
    frames, projected = rollout_noa(
        obj.eval_step, ic, params, timesteps, obj.projector if obj.uses_latent else None, obj.latent_steps
    )
    traj = float(F.mse_loss(frames[:, 1:], target[:, 1:]))
    align = alignment(obj, frames, projected, need_grad=False) if obj.tokenizer is not None else None
    return _combine(obj, traj, align)
