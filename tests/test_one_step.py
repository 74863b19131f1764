"""The rule head (the family's update applied by the model) and the one-step phase of training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import SMALL, run_args
from noa.data.loader import SampleSource, usable_rows
from noa.errors import NoaError
from noa.model import UAFNO, UAFNOConfig
from noa.model.update_rule import UpdateRule
from noa.operators.cno import apply_operator, build_operators, deterministic_step
from noa.operators.replay import noise_free_steps, replay
from noa.operators.space import CNO_SPACE, Dimension, ParameterSpace
from noa.train.checkpoint import load_checkpoint
from noa.train.execution import Execution
from noa.train.loop import train
from noa.train.one_step import state_picks, train_one_step_batch
from noa.train.settle import settle
from noa.train.step import Objective, train_batch

RULE = UpdateRule.from_space(CNO_SPACE)


def _theta(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, CNO_SPACE.size, generator=torch.Generator().manual_seed(seed))


def _model(rule: bool = True, seed: int = 0) -> UAFNO:
    with torch.random.fork_rng():
        torch.random.manual_seed(seed)
        return UAFNO(UAFNOConfig(**SMALL, update_rule=RULE.to_dict() if rule and RULE else None))


def _batch(dataset: Path, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    src = SampleSource(dataset, usable_rows(dataset, None), with_trajectories=True)
    batch = src.get_batch(list(range(n)))
    src.close()
    return batch["params"], batch["trajectory"][:, 0]


def test_the_rule_decodes_theta_as_the_replay_does() -> None:
    assert RULE is not None
    theta = _theta(256)
    keep, scale = RULE.coefficients(theta)
    decoded = [CNO_SPACE.decode(row) for row in theta]
    residual = torch.tensor([d["update_policy"] == "residual" for d in decoded])
    assert torch.equal(RULE.residual(theta), residual) and 0 < int(residual.sum()) < 256
    want_keep = torch.tensor([1.0 if d["update_policy"] == "residual" else d["alpha"] for d in decoded])
    want_scale = torch.tensor([d["dt"] if d["update_policy"] == "residual" else 1 - d["alpha"] for d in decoded])
    torch.testing.assert_close(keep.flatten(), want_keep, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scale.flatten(), want_scale, rtol=1e-5, atol=1e-7)


def test_a_space_without_the_rule_dimensions_has_no_rule() -> None:
    space = ParameterSpace((Dimension("dt", "log-float", 0.01, 0.5), Dimension("gain", "float", 0.5, 2.5)))
    assert UpdateRule.from_space(space) is None


@pytest.mark.parametrize("rule", [True, False])
def test_the_head_applies_the_rule_to_the_networks_output(rule: bool) -> None:
    """With the head's output fixed to a constant c per channel: x' = keep·x + scale·c (rule) or x + c."""
    model = _model(rule)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    theta, x = _theta(16, seed=1), torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    c = model.head.bias.detach()[None, :, None, None]
    keep, scale = RULE.coefficients(theta) if rule else (torch.ones(16, 1, 1, 1), torch.ones(16, 1, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(model(x, theta), keep * x + scale * c)


def test_the_rule_travels_in_the_config_and_old_configs_keep_the_additive_head() -> None:
    config = UAFNOConfig(**SMALL, update_rule=RULE.to_dict())
    again = UAFNOConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert UAFNO(again).rule == RULE
    legacy = {k: v for k, v in config.to_dict().items() if k != "update_rule"}
    assert UAFNO(UAFNOConfig.from_dict(legacy)).rule is None
    with pytest.raises(NoaError, match="update_rule"):
        UAFNOConfig(**SMALL, update_rule={"policy_index": 6})


def test_noise_free_steps_are_each_rows_own_step_without_noise(tiny_dataset: Path) -> None:
    params, traj = _batch(tiny_dataset, 6)
    states = traj[:, :3]
    together = noise_free_steps(params, states)
    for i in range(params.shape[0]):
        ops = build_operators(params[i : i + 1], [0], 3, states.shape[-1]).repeat(3)
        assert torch.equal(together[i], deterministic_step(ops, states[i]))
    # The stored step differs from it by the noise alone: σ·(unit-variance smoothed noise).
    sigma = torch.tensor([CNO_SPACE.decode(row)["noise_scale"] for row in params])
    again = replay(params, traj[:, 0], list(range(6)), 1)[:, 0, 1]  # any noise seed: the noise's size is σ
    spread = (again - together[:, 0]).flatten(1).std(dim=1)
    assert torch.all((spread / sigma > 0.5) & (spread / sigma < 2.0)), spread / sigma


def test_one_step_loss_is_the_unit_scale_error_against_the_noise_free_step(tiny_dataset: Path) -> None:
    """With the head zeroed (f = 0) the unit-scale loss is mean |O(x_t)|², whatever dt or α:
    residual (x - (x + dt·O))²/dt², convex (α·x - α·x - (1-α)·O)²/(1-α)²."""
    params, traj = _batch(tiny_dataset)
    model = _model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    losses = train_one_step_batch(Objective(model, None, None, 0.5, 0.5, 4, []), params, traj[:, None])
    steps = traj.shape[1] - 1
    ops = build_operators(params, [0] * 4, 3, traj.shape[-1]).repeat(steps)
    o = apply_operator(ops, traj[:, :steps].flatten(0, 1))
    _, scale = RULE.coefficients(params)
    n = traj[:, 1:].numel()
    assert losses.total == pytest.approx(float(o.pow(2).sum()) / n, rel=1e-5)
    plain = (o.view(4, steps, -1).pow(2).sum(dim=(1, 2)) * scale.flatten() ** 2).sum()
    assert losses.traj == pytest.approx(float(plain) / n, rel=1e-5)
    assert losses.commit is None and losses.latent is None


def test_one_step_gradient_does_not_depend_on_the_window(tiny_dataset: Path) -> None:
    """The window only chunks the states (no gradient crosses steps): windows 3 and 8 give one gradient."""
    params, traj = _batch(tiny_dataset)
    grads = []
    for window in (3, 8):
        model = _model(seed=5)
        train_one_step_batch(Objective(model, None, None, 0.5, 0.5, window, []), params, traj[:, None])
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def _seen_batches(model: UAFNO) -> list[torch.Tensor]:
    """The inputs the model is called with from now on (a forward pre-hook keeps a copy of each)."""
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    return seen


def test_one_step_forwards_b_states_at_a_time_with_the_whole_loss_gradient(tiny_dataset: Path) -> None:
    """B states per forward pass (a rollout step's batch and memory), and the gradient of the
    loss over all B·T states in one pass, up to float summation order."""
    params, traj = _batch(tiny_dataset)
    model = _model(seed=5)
    seen = _seen_batches(model)
    train_one_step_batch(Objective(model, None, None, 0.5, 0.5, 4, []), params, traj[:, None])
    steps = traj.shape[1] - 1
    assert [x.shape[0] for x in seen] == [4] * steps
    ours = [p.grad.clone() for p in model.parameters()]
    reference = _model(seed=5)
    states = traj[:, :steps].flatten(0, 1)
    clean = noise_free_steps(params, traj[:, :steps]).flatten(0, 1)
    _, scale = RULE.coefficients(params)
    weights = scale.reshape(-1).pow(-2).repeat_interleave(steps)
    guess = reference(states, params.repeat_interleave(steps, dim=0))
    ((guess - clean).pow(2).sum(dim=(1, 2, 3)) * weights).sum().div(traj[:, 1:].numel()).backward()
    for mine, theirs in zip(ours, (p.grad for p in reference.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_the_one_step_phase_of_a_run_forwards_the_rollout_phases_batch(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One one-step batch (B 4, T 8, window 2): every forward pass takes 4 states, as a rollout step does."""
    sizes: list[int] = []
    forward = UAFNO.forward

    def counted(self: UAFNO, x: torch.Tensor, *args, **kwargs):
        sizes.append(x.shape[0])
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(UAFNO, "forward", counted)
    train(run_args(tiny_dataset, tmp_path / "ck", max_steps=1))
    assert sizes == [4] * 8


def test_one_step_batches_run_without_activation_checkpointing(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone step back-propagated at once gains nothing from recomputation (its backward peaks higher)."""
    import noa.train.execution as execution

    calls: list[int] = []
    real = execution.checkpoint

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(execution, "checkpoint", counted)
    params, traj = _batch(tiny_dataset)
    obj = Objective(_model(), None, None, 0.5, 0.5, 4, [], execution=Execution(activation_checkpointing=True))
    train_one_step_batch(obj, params, traj[:, None])
    assert calls == []
    obj.train_step(traj[:, 0], params)  # a rollout step still recomputes
    assert calls == [1]


def test_each_realization_is_a_one_step_sample_of_its_own(tiny_dataset: Path) -> None:
    """With M = 2 the model sees each realization's states, never their mean, and each is
    scored against the noise-free step from itself: with f = 0 the loss is mean |O(x)|² over
    both realizations' states."""
    params, traj = _batch(tiny_dataset)
    realizations = replay(params, traj[:, 0], [3, 4, 5, 6], traj.shape[1] - 1, 2)
    assert not torch.equal(realizations[:, 0], realizations[:, 1])
    model = _model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    seen = _seen_batches(model)
    losses = train_one_step_batch(Objective(model, None, None, 0.5, 0.5, 3, []), params, realizations)
    steps = traj.shape[1] - 1
    states = realizations[:, :, :steps]
    assert len(seen) == 2 * steps
    for x in seen:
        assert any(torch.equal(x, states[:, m, t]) for m in range(2) for t in range(steps))
    ops = build_operators(params, [0] * 4, 3, traj.shape[-1]).repeat(2 * steps)
    o = apply_operator(ops, states.flatten(0, 2))
    assert losses.total == pytest.approx(float(o.pow(2).sum()) / realizations[:, :, 1:].numel(), rel=1e-5)


def test_the_training_loop_gives_the_one_step_phase_every_realization(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollout phase scores the mean of M realizations; the one-step phase gets them all."""
    import noa.train.loop as loop

    given: list[torch.Tensor] = []

    def spy(obj: Objective, params: torch.Tensor, realizations: torch.Tensor, picks: torch.Tensor | None):
        given.append(realizations)
        return train_one_step_batch(obj, params, realizations, picks)

    monkeypatch.setattr(loop, "train_one_step_batch", spy)
    train(run_args(tiny_dataset, tmp_path / "ck", n_realizations=2, max_steps=1))
    assert len(given) == 1 and given[0].shape[:3] == (4, 2, 9)
    assert not torch.equal(given[0][:, 0, 1:], given[0][:, 1, 1:])


def _records(ck: Path) -> list[dict]:
    lines = (ck / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train_batch"]


def test_a_fresh_run_learns_one_steps_for_its_first_half_then_rolls_out(tiny_dataset: Path, tmp_path: Path) -> None:
    train(run_args(tiny_dataset, tmp_path / "ck"))  # 2 epochs x 3 batches
    saved = load_checkpoint(tmp_path / "ck" / "epoch_2.pt")
    assert saved["args"]["one_step_steps"] == 3 and saved["args"]["rule_head"] is True
    assert saved["config"]["update_rule"] == RULE.to_dict()
    assert [r["phase"] for r in _records(tmp_path / "ck")] == ["one-step"] * 3 + ["rollout"] * 3


def test_a_checkpoint_from_before_the_rule_head_resumes_as_it_ran(tiny_dataset: Path, tmp_path: Path) -> None:
    """A checkpoint without the new keys: the additive head and no one-step phase, as it was trained."""
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, max_steps=2, rule_head=False, one_step_steps=0))
    old = load_checkpoint(ck / "step_2.pt")
    del old["args"]["one_step_steps"], old["args"]["rule_head"], old["config"]["update_rule"]
    torch.save(old, ck / "step_2.pt")
    run = settle({"resume": str(ck / "step_2.pt"), "device": "cpu"})
    assert run.config.one_step_steps == 0 and run.config.rule_head is False and run.config.model.update_rule is None
    train({"resume": str(ck / "step_2.pt"), "device": "cpu"})
    assert [r["phase"] for r in _records(ck)] == ["rollout"] * 6


def test_a_resume_cannot_change_the_head(tiny_dataset: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    train(run_args(tiny_dataset, ck, max_steps=2))
    with pytest.raises(NoaError, match="--rule-head: checkpoint True, asked False"):
        settle({"resume": str(ck / "step_2.pt"), "rule_head": False, "device": "cpu"})


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler"
)
def test_both_phases_share_one_compiled_graph(tiny_dataset: Path) -> None:
    """The one-step phase feeds the compiled step what a rollout does (B contiguous states): no
    second compilation. A minute or two of compiling on a CPU."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    params, traj = _batch(tiny_dataset, 2)
    ic = traj[:, 0].contiguous()  # as the loader's batch["ic"]
    obj = Objective(_model(), None, None, 0.5, 0.5, 4, [], execution=Execution(compile=True))
    train_batch(obj, ic, params, traj)
    assert counters["stats"]["unique_graphs"] == 1
    train_one_step_batch(obj, params, replay(params, ic, [1, 2], traj.shape[1] - 1, 2))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_state_picks_follow_the_sample_not_its_batch() -> None:
    picks = state_picks(3, 1, [7, 2, 9], 2, 8, 3)
    assert picks.shape == (3, 2, 3)
    assert all(p.unique().numel() == 3 and torch.equal(p, p.sort().values) for p in picks.flatten(0, 1))
    assert int(picks.min()) >= 0 and int(picks.max()) < 8
    alone = state_picks(3, 1, [9], 2, 8, 3)
    assert torch.equal(alone[0], picks[2])  # row 9's states whatever its neighbours
    assert not torch.equal(state_picks(3, 2, [9], 2, 8, 3), alone)  # another epoch, other states
    assert not torch.equal(picks[:, 0], picks[:, 1])  # each realization its own states


def test_one_step_on_picked_states_is_the_one_step_on_those_states_alone(tiny_dataset: Path) -> None:
    """K picked states per sample give the loss and gradient of a batch holding just those states."""
    params, traj = _batch(tiny_dataset)
    picks = state_picks(0, 0, [0, 1, 2, 3], 1, traj.shape[1] - 1, 3)
    chosen = traj[torch.arange(4)[:, None], picks[:, 0]]  # [B, K, C, H, W]
    alone = torch.cat([chosen, chosen[:, -1:]], dim=1)  # frames 0..K-1 are the states; frame K unused
    results, grads = [], []
    for realizations, given in ((traj[:, None], picks), (alone[:, None], None)):
        model = _model(seed=5)
        results.append(train_one_step_batch(Objective(model, None, None, 0.5, 0.5, 2, []), params, realizations, given))
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    assert results[0] == results[1]
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # All T picked is the phase without picks, bit for bit.
    every = torch.arange(traj.shape[1] - 1).expand(4, 1, -1)
    both = [train_one_step_batch(Objective(_model(seed=5), None, None, 0.5, 0.5, 3, []), params, traj[:, None], p)
            for p in (every, None)]  # fmt: skip
    assert both[0] == both[1]


def test_one_step_states_resume_exactly_and_are_checked(tiny_dataset: Path, tmp_path: Path) -> None:
    args = run_args(tiny_dataset, tmp_path / "straight", one_step_states=3, one_step_steps=5, save_every=1)
    train(args)
    train({**args, "checkpoint_dir": str(tmp_path / "cut"), "max_steps": 2})
    train({"resume": "auto", "checkpoint_dir": str(tmp_path / "cut"), "device": "cpu"})
    a, b = (load_checkpoint(tmp_path / d / "epoch_2.pt") for d in ("straight", "cut"))
    assert a["args"]["one_step_states"] == 3 == b["args"]["one_step_states"]
    assert all(torch.equal(a["model_state_dict"][k], v) for k, v in b["model_state_dict"].items())
    with pytest.raises(NoaError, match="--one-step-states must be between 1 and --timesteps 8"):
        train(run_args(tiny_dataset, tmp_path / "bad", one_step_states=9))
