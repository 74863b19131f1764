"""The shared skill measure (noa.diagnostics.skill) on constructed cases, and the balanced held-out set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noa.diagnostics.held_out import balanced_theta, held_out_operators, rules_of, skill_steps
from noa.diagnostics.skill import OperatorSkills, operator_sums, pooled, skill_on_o, summary, unit_scale
from noa.families import load_family
from noa.families.family import family_from_dict
from noa.model.update_rule import CONVEX, RESIDUAL, UpdateRule
from noa.operators.cno import apply_operator, build_operators
from noa.operators.space import CNO_SPACE


@pytest.fixture(scope="module")
def full():
    return load_family("full")


@pytest.fixture(scope="module")
def held(full):
    return held_out_operators(full, 6, seed=11, channels=3, grid=16, timesteps=8)


def test_a_perfect_predictor_scores_one_and_a_zero_predictor_zero(full, held) -> None:
    """Skill on O: the CNO's own O as f is 1 in every rule and bin; f = 0 is exactly 0."""

    def perfect(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return apply_operator(build_operators(theta, [0] * theta.shape[0], 3, 16), x)

    best = skill_on_o(perfect, held, full, seed=0)
    worst = skill_on_o(lambda x, theta: torch.zeros_like(x), held, full, seed=0)
    assert set(best) == {RESIDUAL, CONVEX}
    for rule in best:
        for entry in [best[rule]["all"], *best[rule]["gain"].values(), *best[rule]["activation"].values()]:
            assert entry["median"] == pytest.approx(1.0, abs=1e-6) and entry["pooled"] == pytest.approx(1.0, abs=1e-6)
            assert entry["median_90"] == pytest.approx([1.0, 1.0], abs=1e-6)
        assert worst[rule]["all"]["median"] == 0.0 and worst[rule]["all"]["pooled"] == 0.0


def test_median_and_pooled_differ_where_one_operator_dominates() -> None:
    """Three operators learned perfectly with small O, one large operator not at all: the median
    over operators is 1, the pooled figure listens to the large one."""
    error = np.array([0.0, 0.0, 0.0, 100.0])
    reference = np.array([1.0, 1.0, 1.0, 100.0])
    s = summary(error, reference, np.random.default_rng(0))
    assert s["median"] == 1.0
    assert s["pooled"] == pytest.approx(1.0 - 100.0 / 103.0)
    assert pooled(error, reference) == s["pooled"]


def test_the_intervals_hold_the_estimate_and_repeat_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    reference = rng.uniform(0.5, 2.0, 50)
    error = reference * rng.uniform(0.0, 1.0, 50)
    a = summary(error, reference, np.random.default_rng(7))
    b = summary(error, reference, np.random.default_rng(7))
    c = summary(error, reference, np.random.default_rng(8))
    assert a == b
    assert a["median_90"] != c["median_90"]
    for key in ("median", "pooled"):
        low, high = a[f"{key}_90"]
        assert low <= a[key] <= high and low < high


def test_operators_with_nothing_to_learn_are_left_out_and_counted() -> None:
    s = summary(np.array([0.5, 1.0]), np.array([1.0, 0.0]), np.random.default_rng(0))
    assert s["operators"] == 1 and s["left_out"] == 1 and s["median"] == 0.5


def test_the_bins_partition_each_rules_operators(full) -> None:
    theta = balanced_theta(full, 40, seed=2)
    n = theta.shape[0]
    gen = torch.Generator().manual_seed(0)
    sums = OperatorSkills.of(full, theta, torch.rand(n, generator=gen), 1.0 + torch.rand(n, generator=gen))
    table = sums.table(full, seed=0)
    assert set(table) == {RESIDUAL, CONVEX}
    for entry in table.values():
        total = entry["all"]["operators"]
        assert total == 40
        for kind in ("gain", "activation"):
            assert sum(e["operators"] for e in entry[kind].values()) == total
        assert set(entry["gain"]) == {"gain low", "gain mid", "gain high"}
    assert table == sums.table(full, seed=0)  # deterministic for a seed


def test_a_held_out_set_has_its_count_of_each_rule(full) -> None:
    theta = balanced_theta(full, 192, seed=5)
    rules = rules_of(full, theta)
    assert rules.count(RESIDUAL) == 192 and rules.count(CONVEX) == 192
    convex_only = family_from_dict({"name": "c", "dimensions": {"update_policy": {"choices": ["convex"]}}}, "test")
    assert rules_of(convex_only, balanced_theta(convex_only, 8, seed=5)) == [CONVEX] * 8
    skewed = load_family("spinlock")  # residual drawn 3 times as often as convex
    assert sorted(rules_of(skewed, balanced_theta(skewed, 16, seed=5))) == [CONVEX] * 16 + [RESIDUAL] * 16


def test_held_out_states_are_the_skill_steps_of_the_rollout(held) -> None:
    assert skill_steps(8) == [0, 2, 4, 6]
    assert held.states.shape[:2] == (12, 4) and held.maps.shape == held.states.shape


def test_unit_scale_reads_f_back_from_a_step() -> None:
    """x' = keep·x + scale·f for both rules, so f comes back from the next state."""
    rule = UpdateRule.from_space(CNO_SPACE)
    assert rule is not None
    theta = torch.rand(6, CNO_SPACE.size, generator=torch.Generator().manual_seed(1))
    x, f = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    assert torch.allclose(unit_scale(rule.apply(x, f, theta), x, theta, rule), f, atol=1e-4)


def test_operator_sums_against_a_baseline() -> None:
    target, state = torch.full((2, 3), 2.0), torch.ones(2, 3)
    error, reference = operator_sums(state, target, state)
    assert error.tolist() == [3.0, 3.0] and reference.tolist() == [3.0, 3.0]
