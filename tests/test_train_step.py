"""The three losses, truncated BPTT and the schedule, checked against hand computations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL
from noa.data.loader import SampleSource, usable_rows
from noa.features import FEATURE_CATEGORIES, compute_features, feature_dims, feature_names
from noa.model import UAFNO, LatentProjector, UAFNOConfig
from noa.tokenizer import CategoricalVQVAE, TokenizerConfig, load_tokenizer
from noa.tokenizer.model import isolated_global_rng
from noa.train.rollout import rollout_noa, sample_steps
from noa.train.schedule import lr_at
from noa.train.step import Objective, alignment, eval_batch, train_batch


def _model(seed: int = 0) -> UAFNO:
    with torch.random.fork_rng():
        torch.random.manual_seed(seed)
        return UAFNO(UAFNOConfig(**SMALL))


def _batch(dataset: Path, n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = SampleSource(dataset, usable_rows(dataset, None), with_trajectories=True)
    batch = src.get_batch(list(range(n)))
    src.close()
    return batch["ic"], batch["params"], batch["trajectory"].mean(dim=1)


def _objective(model, window, tokenizer=None, projector=None, steps=(), lc=0.5, ll=0.5) -> Objective:
    return Objective(model, projector, tokenizer, lc, ll, window, list(steps))


def _built_tokenizer(timesteps: int, grid: int = 16) -> CategoricalVQVAE:
    """A frozen, untrained tokenizer for T = ``timesteps`` with random codebooks (the trained one fits T = 8 only)."""
    config = TokenizerConfig(
        feature_dims=feature_dims(3),
        feature_names=feature_names(3),
        timesteps=timesteps,
        channels=3,
        grid=grid,
        levels=2,
        codebook_size=8,
        latent_dim=4,
        hidden=32,
    )
    with isolated_global_rng(0, "cpu"):
        tokenizer = CategoricalVQVAE(config)
        tokenizer.set_normalization(compute_features(torch.randn(8, timesteps + 1, 3, grid, grid)))
        with torch.no_grad():
            for category in FEATURE_CATEGORIES:
                for vq in tokenizer.quantizers[category]:
                    vq.codebook.copy_(torch.randn_like(vq.codebook))
    return tokenizer.requires_grad_(False).eval()


class SavedBytes:
    """Peak bytes of tensors saved for backward and still alive: every autograd graph counts (the
    alignment pass's included) until backward frees it, whichever function runs the backward."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def __enter__(self) -> SavedBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda held: held.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    def _pack(self, tensor: torch.Tensor) -> _Held:
        return _Held(tensor, self)


class _Held:
    def __init__(self, tensor: torch.Tensor, meter: SavedBytes) -> None:
        self.tensor, self.meter, self.bytes = tensor, meter, tensor.numel() * tensor.element_size()
        meter.live += self.bytes
        meter.peak = max(meter.peak, meter.live)

    def __del__(self) -> None:
        self.meter.live -= self.bytes


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_sample_steps_follow_the_guide() -> None:
    assert sample_steps(8, 3) == [0, 4, 7]  # first, middle, last
    assert sample_steps(8, -1) == list(range(8))
    assert sample_steps(8, 1) == [7]
    assert len(sample_steps(256, 8)) == 8
    from noa.errors import NoaError

    with pytest.raises(NoaError):
        sample_steps(8, 0)
    with pytest.raises(NoaError):
        sample_steps(8, 9)


def test_l_traj_is_the_mse_of_a_hand_rollout(tiny_dataset: Path) -> None:
    ic, params, target = _batch(tiny_dataset)
    model = _model()
    losses = eval_batch(_objective(model, 4), ic, params, target)
    x, frames = ic, []
    with torch.no_grad():
        for _ in range(target.shape[1] - 1):
            x = model(x, params)
            frames.append(x)
    expected = F.mse_loss(torch.stack(frames, 1), target[:, 1:]).item()
    assert losses.traj == pytest.approx(expected, rel=1e-6)
    assert losses.commit is None and losses.latent is None and losses.total == losses.traj


def test_tbptt_gradient_stops_at_window_boundaries(tiny_dataset: Path) -> None:
    ic, params, target = _batch(tiny_dataset)
    model = _model()
    train_batch(_objective(model, 4), ic, params, target)
    tbptt = _grads(model)

    model.zero_grad()
    n = target[:, 1:].numel()
    x = ic
    for start in (0, 4):
        loss = 0
        for t in range(start, start + 4):
            x = model(x, params)
            loss = loss + (x - target[:, t + 1]).pow(2).sum() / n
        loss.backward()
        x = x.detach()
    manual = _grads(model)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(tbptt, manual))

    model.zero_grad()
    train_batch(_objective(model, 8), ic, params, target)  # one window: full BPTT
    full = _grads(model)
    assert any(not torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(tbptt, full))


def test_teacher_forced_windows_start_from_the_cno_states(tiny_dataset: Path, tiny_tokenizer: Path) -> None:
    """Each window starts at the target's frame: the losses and the gradient equal those of
    hand-built windows restarted from the CNO's states, the alignment losses included."""
    ic, params, target = _batch(tiny_dataset)
    tokenizer = load_tokenizer(tiny_tokenizer)
    model = _model()
    obj = _objective(model, 4, tokenizer, lc=0.7)
    losses = train_batch(obj, ic, params, target, teacher_forced=True)
    got = _grads(model)

    model.zero_grad()
    n = target[:, 1:].numel()
    frames = [ic]
    with torch.no_grad():  # the frames a teacher-forced batch scores, for L_commit's gradient
        for start in (0, 4):
            x = target[:, start]
            for _ in range(4):
                x = model(x, params)
                frames.append(x)
    rollout = torch.stack(frames, 1).requires_grad_(True)
    latents = tokenizer.encode(compute_features(rollout))
    z_q = torch.cat(tokenizer.quantize([e.detach() for e in latents])[0], 1)
    l_commit = F.mse_loss(torch.cat(latents, 1), z_q)
    (frame_grad,) = torch.autograd.grad(l_commit, rollout)
    sq = 0.0
    for start in (0, 4):
        x, loss = target[:, start], 0
        for t in range(start, start + 4):
            x = model(x, params)
            loss = loss + (x - target[:, t + 1]).pow(2).sum() / n + 0.7 * (frame_grad[:, t + 1] * x).sum()
            sq += float((x.detach() - target[:, t + 1]).pow(2).sum())
        loss.backward()
    want = _grads(model)
    assert losses.traj == pytest.approx(sq / n, rel=1e-5)
    assert losses.commit == pytest.approx(l_commit.item(), rel=1e-5)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)

    model.zero_grad()
    free = train_batch(obj, ic, params, target)  # the NOA's own rollout: other frames, other losses
    assert free.traj != pytest.approx(losses.traj, rel=1e-3)


def test_tbptt_memory_is_bounded_by_one_window(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The autograd graph alive at each backward holds one window, whatever T is."""
    ic, params, target = _batch(tiny_dataset)
    model = _model()
    saved = {"bytes": 0, "peaks": []}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved["bytes"] += t.numel() * t.element_size()
        return t

    real_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        saved["peaks"].append(saved["bytes"])
        saved["bytes"] = 0
        return real_backward(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "backward", backward)

    def peak(window: int, steps: int) -> int:
        saved["peaks"].clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            train_batch(_objective(model, window), ic, params, target[:, : steps + 1])
        return max(saved["peaks"])

    assert peak(2, 8) == peak(2, 4)  # longer rollout, same memory
    assert peak(4, 8) == pytest.approx(2 * peak(2, 8), rel=0.01)


def test_tbptt_memory_with_a_tokenizer_is_bounded_by_one_window(tiny_dataset: Path) -> None:
    """With L_commit and L_latent on, the peak of live saved tensors over all of train_batch (the
    alignment pass included) does not grow with T. Window 1 keeps each window's graph small enough that
    a graph over all T+1 frames (about 10 bytes saved per byte of rollout) would exceed it at T = 32."""
    ic, params, _ = _batch(tiny_dataset)
    model = _model()

    def peak(steps: int) -> int:
        tokenizer = _built_tokenizer(steps)
        with torch.random.fork_rng():
            torch.random.manual_seed(1)
            projector = LatentProjector(model.bottleneck_channels, tokenizer.latent_dim, hidden=16)
        obj = _objective(model, 1, tokenizer, projector, [0, steps - 1])  # one sampled step in the peak window
        target = torch.zeros(ic.shape[0], steps + 1, *ic.shape[1:])
        with SavedBytes() as saved:
            losses = train_batch(obj, ic, params, target)
        assert losses.commit is not None and losses.latent is not None
        return saved.peak

    assert peak(32) == peak(8)


def test_chunked_alignment_gradient_equals_full_autograd(tiny_dataset: Path) -> None:
    """dL_commit/dx_t from the chunked pass equals autograd through compute_features over the whole rollout
    (frame 0 excepted: the IC is never trained). T = 16, window 3: chunks end mid-rollout and the lag-8 and
    lag-T covariances pair frames of different chunks."""
    ic, params, _ = _batch(tiny_dataset)
    model = _model()
    tokenizer = _built_tokenizer(16)
    frames, _ = rollout_noa(model, ic, params, 16)
    align = alignment(_objective(model, 3, tokenizer), frames, None, need_grad=True)

    x = frames.clone().requires_grad_(True)
    latents = tokenizer.encode(compute_features(x))
    z_q = tokenizer.quantize([e.detach() for e in latents])[0]
    commit = F.mse_loss(torch.cat(latents, 1), torch.cat(z_q, 1))
    (want,) = torch.autograd.grad(commit, x)

    assert align.commit.item() == pytest.approx(commit.item(), rel=1e-6)
    assert align.frame_grad.shape == frames.shape and not align.frame_grad[:, 0].any()
    scale = want[:, 1:].abs().max().item()
    assert scale > 0
    # float32: the chunked sums run in another order; measured agreement is ~1e-7 of the largest entry.
    torch.testing.assert_close(align.frame_grad[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-5 * scale)


def test_surrogate_gradient_equals_full_autograd_of_the_three_losses(tiny_dataset: Path, tiny_tokenizer: Path) -> None:
    """With one window, train_batch's gradient must equal autograd of L_total built by hand."""
    ic, params, target = _batch(tiny_dataset)
    tokenizer = load_tokenizer(tiny_tokenizer)
    model = _model()
    with torch.random.fork_rng():
        torch.random.manual_seed(1)
        projector = LatentProjector(model.bottleneck_channels, tokenizer.latent_dim, hidden=16)
    steps = sample_steps(8, 3)
    obj = _objective(model, 8, tokenizer, projector, steps, lc=0.7, ll=0.3)
    losses = train_batch(obj, ic, params, target)
    got = _grads(model) + _grads(projector)

    model.zero_grad()
    projector.zero_grad()
    x, frames, projections = ic, [ic], []
    for t in range(8):
        x, bottleneck = model.step(x, params, return_bottleneck=True)
        if t in steps:
            projections.append(projector(bottleneck))
        frames.append(x)
    rollout = torch.stack(frames, 1)
    latents = tokenizer.encode(compute_features(rollout))
    z = torch.cat(latents, 1)
    z_q = torch.cat(tokenizer.quantize([e.detach() for e in latents])[0], 1)
    l_traj = F.mse_loss(rollout[:, 1:], target[:, 1:])
    l_commit = F.mse_loss(z, z_q.detach())
    l_latent = F.mse_loss(torch.stack(projections, 1).mean(1), z.detach())
    (l_traj + 0.7 * l_commit + 0.3 * l_latent).backward()
    want = _grads(model) + _grads(projector)

    assert losses.traj == pytest.approx(l_traj.item(), rel=1e-5)
    assert losses.commit == pytest.approx(l_commit.item(), rel=1e-5)
    assert losses.latent == pytest.approx(l_latent.item(), rel=1e-5)
    assert losses.total == pytest.approx((l_traj + 0.7 * l_commit + 0.3 * l_latent).item(), rel=1e-5)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
    assert all(p.grad is None for p in tokenizer.parameters())  # the tokenizer stays frozen


def test_projector_weights_change_after_a_step(tiny_dataset: Path, tiny_tokenizer: Path) -> None:
    ic, params, target = _batch(tiny_dataset)
    tokenizer = load_tokenizer(tiny_tokenizer)
    model = _model()
    projector = LatentProjector(model.bottleneck_channels, tokenizer.latent_dim, hidden=16)
    before = [p.detach().clone() for p in projector.parameters()]
    opt = torch.optim.AdamW([*model.parameters(), *projector.parameters()], lr=1e-3)
    train_batch(_objective(model, 4, tokenizer, projector, sample_steps(8, 3)), ic, params, target)
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, projector.parameters()))


def test_schedule_warmup_and_cosine() -> None:
    assert lr_at(0, 3e-4, 500, 10_000) == pytest.approx(3e-5)
    assert lr_at(250, 3e-4, 500, 10_000) == pytest.approx(3e-5 + 0.5 * 2.7e-4)
    assert lr_at(500, 3e-4, 500, 10_000) == pytest.approx(3e-4)
    assert lr_at(5250, 3e-4, 500, 10_000) == pytest.approx(1.5e-4)
    assert lr_at(10_000, 3e-4, 500, 10_000) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(9_000, 3e-4, 500, 10_000, "constant") == 3e-4
    assert lr_at(0, 3e-4, 0, 100) == 3e-4
