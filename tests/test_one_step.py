"""The rule head (the family's update applied by the model) and the one-step phase of training."""

from __future__ import annotations

import json
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
from noa.train.loop import train
from noa.train.one_step import train_one_step_batch
from noa.train.settle import settle
from noa.train.step import Objective

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
    losses = train_one_step_batch(Objective(model, None, None, 0.5, 0.5, 4, []), params, traj)
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
        train_one_step_batch(Objective(model, None, None, 0.5, 0.5, window, []), params, traj)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


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
