"""The CNO family: parameter space, counter-based noise, deterministic batched replay."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from noa.errors import NoaError
from noa.operators.cno import apply_operator, build_operators
from noa.operators.noise import CounterNormal, mix32
from noa.operators.replay import DIVERGENCE_BOUND, replay, rollout_status
from noa.operators.space import CNO_SPACE, Dimension, ParameterSpace
from noa.operators.weights import operator_weights

GRID, STEPS = 16, 6


def _inputs(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    params = torch.rand(b, CNO_SPACE.size, generator=gen)
    ics = torch.randn(b, 3, GRID, GRID, generator=gen)
    return params, ics, [1000 + 7 * i for i in range(b)]


def test_dimension_unit_mapping() -> None:
    assert Dimension("n", "int", 2, 5).value(0.0) == 2
    assert Dimension("n", "int", 2, 5).value(1.0) == 5
    assert [Dimension("n", "int", 2, 5).value(u) for u in (0.1, 0.3, 0.6, 0.9)] == [2, 3, 4, 5]
    assert Dimension("x", "log-float", 1e-5, 1.0).value(0.5) == pytest.approx(10**-2.5)
    assert Dimension("c", "choice", choices=("a", "b", "c")).value(0.99) == "c"
    assert Dimension("f", "float", 0.1, 0.9).value(0.5) == pytest.approx(0.5)


def test_space_json_round_trip_and_required_dimensions() -> None:
    assert ParameterSpace.from_json(CNO_SPACE.to_json()) == CNO_SPACE
    required = {
        "n_layers",
        "base_channels",
        "kernel_size",
        "activation",
        "noise_scale",
        "noise_correlation",
        "update_policy",
        "dt",
        "alpha",
    }
    assert required <= set(CNO_SPACE.names)
    with pytest.raises(NoaError):
        CNO_SPACE.decode([0.5] * (CNO_SPACE.size - 1))


def test_counter_noise_is_standard_normal_and_addressable() -> None:
    noise = CounterNormal([123, 456], [0, 0], 4096, torch.device("cpu"))
    a = noise(0)
    assert a.shape == (2, 4096)
    assert abs(a.mean().item()) < 0.05 and abs(a.std().item() - 1) < 0.05
    assert torch.equal(a, noise(0))  # the same coordinates give the same values
    assert not torch.equal(a, noise(1))
    assert not torch.equal(a[0], a[1])
    alone = CounterNormal([456], [0], 4096, torch.device("cpu"))(0)
    assert torch.equal(alone[0], a[1])  # a row depends on its own key only


def test_mix32_stays_in_32_bits_and_is_injective_on_a_range() -> None:
    x = torch.arange(1 << 16, dtype=torch.int64)
    h = mix32(x)
    assert int(h.min()) >= 0 and int(h.max()) < (1 << 32)
    assert len(torch.unique(h)) == len(x)


def test_replay_shape_and_initial_frame() -> None:
    params, ics, seeds = _inputs(3)
    traj = replay(params, ics, seeds, STEPS, realizations=2)
    assert traj.shape == (3, 2, STEPS + 1, 3, GRID, GRID)
    assert torch.equal(traj[:, 0, 0], ics) and torch.equal(traj[:, 1, 0], ics)
    assert torch.isfinite(traj).all()
    assert not torch.equal(traj[:, 0, -1], traj[:, 1, -1])  # realizations differ by their noise


def test_replay_is_bit_identical_and_batch_independent() -> None:
    params, ics, seeds = _inputs(6)
    full = replay(params, ics, seeds, STEPS)
    assert torch.equal(full, replay(params, ics, seeds, STEPS))
    for i in range(6):
        alone = replay(params[i : i + 1], ics[i : i + 1], seeds[i : i + 1], STEPS)
        assert torch.equal(alone[0], full[i]), f"sample {i} changed with its batch"
    perm = [4, 0, 5, 2]
    shuffled = replay(params[perm], ics[perm], [seeds[i] for i in perm], STEPS)
    assert torch.equal(shuffled, full[perm])


def test_realization_zero_does_not_depend_on_how_many_realizations() -> None:
    params, ics, seeds = _inputs(2)
    one = replay(params, ics, seeds, STEPS, realizations=1)
    three = replay(params, ics, seeds, STEPS, realizations=3)
    assert torch.equal(one[:, 0], three[:, 0])


def test_replay_is_bit_identical_across_processes() -> None:
    params, ics, seeds = _inputs(3)
    here = replay(params, ics, seeds, STEPS)
    code = (
        "import sys, torch\n"
        "from noa.operators.replay import replay\n"
        "p, x, s = torch.load(sys.argv[1], weights_only=True)\n"
        "torch.save(replay(p, x, s, %d), sys.argv[2])\n" % STEPS
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save((params, ics, seeds), inp)
        subprocess.run([sys.executable, "-c", code, str(inp), str(out)], check=True)
        there = torch.load(out, weights_only=True)
    assert torch.equal(here, there)


def _unit(**overrides: float) -> torch.Tensor:
    row = torch.full((1, CNO_SPACE.size), 0.5)
    row[0, CNO_SPACE.position("update_policy")] = 0.25  # residual
    for name, value in overrides.items():
        row[0, CNO_SPACE.position(name)] = value
    return row


# For each dimension: a base point where it is active and a second value to move it to.
PERTURBATIONS = {
    "n_layers": ({}, 0.05),
    "base_channels": ({}, 0.95),
    "kernel_size": ({}, 0.05),
    "activation": ({}, 0.05),
    "noise_scale": ({}, 0.9),
    "noise_correlation": ({"noise_scale": 0.9}, 0.05),
    "update_policy": ({}, 0.75),
    "dt": ({}, 0.9),
    "alpha": ({"update_policy": 0.75}, 0.9),
    "weight_gain": ({}, 0.95),
    "weight_mix_1": ({}, 0.95),
    "weight_mix_2": ({}, 0.05),
    "weight_mix_3": ({}, 0.95),
}


@pytest.mark.parametrize("name", CNO_SPACE.names)
def test_every_dimension_changes_the_trajectory(name: str) -> None:
    base_overrides, moved = PERTURBATIONS[name]
    base = _unit(**base_overrides)
    other = base.clone()
    other[0, CNO_SPACE.position(name)] = moved
    assert CNO_SPACE.decode(base[0])[name] != CNO_SPACE.decode(other[0])[name]
    ic = torch.randn(1, 3, GRID, GRID, generator=torch.Generator().manual_seed(3))
    a = replay(base, ic, [42], STEPS)
    b = replay(other, ic, [42], STEPS)
    assert (a - b).abs().max() > 1e-4, f"{name} did not change the dynamics"


@pytest.mark.parametrize(
    "name, policy", [("dt", 0.75), ("alpha", None)], ids=["dt-under-convex", "alpha-under-residual"]
)
def test_the_update_rule_not_chosen_leaves_its_dimension_inert(name: str, policy: float | None) -> None:
    # What the CNO_SPACE docstring says: update_policy picks dt (residual) or alpha (convex).
    base = _unit(**({"update_policy": policy} if policy is not None else {}))
    other = base.clone()
    other[0, CNO_SPACE.position(name)] = 0.9
    ic = torch.randn(1, 3, GRID, GRID, generator=torch.Generator().manual_seed(3))
    assert torch.equal(replay(base, ic, [42], STEPS), replay(other, ic, [42], STEPS))


def _weights(ops) -> list[torch.Tensor]:
    return [t for g in ops.groups for t in (g.w_in, g.b_in, g.depthwise, g.pointwise, g.b_hidden, g.w_out, g.b_out)]


def test_the_noise_seed_keys_the_noise_and_nothing_else() -> None:
    params, ics, _ = _inputs(3)
    a, b = build_operators(params, [1, 2, 3], 3, GRID), build_operators(params, [7, 8, 9], 3, GRID)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    assert torch.equal(apply_operator(a, ics), apply_operator(b, ics))  # the operator is θ's alone
    assert a.noise_keys != b.noise_keys
    assert not torch.equal(replay(params, ics, [1, 2, 3], STEPS), replay(params, ics, [7, 8, 9], STEPS))


def test_smaller_operators_are_nested_in_larger_ones() -> None:
    hp = CNO_SPACE.decode(_unit()[0])
    big = operator_weights({**hp, "base_channels": 64, "n_layers": 5, "kernel_size": "7"}, 3)
    small = operator_weights({**hp, "base_channels": 16, "n_layers": 2, "kernel_size": "3"}, 3)
    gain = hp["weight_gain"]
    # Same family entries, each at its own fan-in scaling.
    assert torch.allclose(
        small["pointwise"] * 16**0.5 / gain, big["pointwise"][:2, :16, :16] * 64**0.5 / gain, atol=1e-6
    )
    assert torch.allclose(small["depthwise"] * 3, big["depthwise"][:2, :16, 2:5, 2:5] * 7, atol=1e-6)
    assert torch.equal(small["w_in"], big["w_in"][:16])
    assert torch.equal(small["b_hidden"], big["b_hidden"][:2, :16])


def test_weight_coordinates_move_the_weights_smoothly_and_span_unrelated_operators() -> None:
    hp = CNO_SPACE.decode(_unit()[0])
    w = lambda c: operator_weights({**hp, "weight_mix_1": c, "weight_mix_2": 0.0, "weight_mix_3": 0.0}, 3)[
        "pointwise"
    ].flatten()  # noqa: E731
    near = (w(0.001) - w(0.0)).norm() / w(0.0).norm()
    assert 0 < near < 2e-3  # ∝ the step: a smooth function of the coordinate
    far = torch.corrcoef(torch.stack([w(-1.0), w(1.0)]))[0, 1]
    assert abs(far) < 0.05  # opposite corners are uncorrelated networks
    assert float(w(1.0).std()) == pytest.approx(float(w(0.0).std()), rel=0.05)  # every coordinate is a typical draw


CONTINUOUS = [d.name for d in CNO_SPACE.dims if d.kind in ("float", "log-float")]


@pytest.mark.parametrize("name", CONTINUOUS)
def test_a_small_change_of_a_continuous_coordinate_changes_the_rollout_a_little_and_a_large_one_a_lot(
    name: str,
) -> None:
    base_overrides, moved = PERTURBATIONS[name]
    base = _unit(**base_overrides)
    ic = torch.randn(1, 3, GRID, GRID, generator=torch.Generator().manual_seed(3))
    ref = replay(base, ic, [42], 16)[0, 0, 1:]
    scale = (ref - ic).pow(2).mean().sqrt()  # how far the rollout moves from its IC

    def change(value: float) -> float:
        other = base.clone()
        other[0, CNO_SPACE.position(name)] = value
        return float((replay(other, ic, [42], 16)[0, 0, 1:] - ref).pow(2).mean().sqrt() / scale)

    u = float(base[0, CNO_SPACE.position(name)])
    small = change(u + 1e-3)
    large = change(moved)
    assert small < 0.02, f"{name}: a step of 1e-3 in θ moved the rollout by {small:.3g} of its own motion"
    assert large > 10 * small and large > 0.02, f"{name}: a large move changed the rollout by only {large:.3g}"


def test_divergence_is_reported_per_sample() -> None:
    params, ics, seeds = _inputs(3)
    ics[1, 0, 0, 0] = float("nan")
    ics[2] *= 10 * DIVERGENCE_BOUND
    status = rollout_status(replay(params, ics, seeds, 2))
    assert status.valid.tolist() == [True, False, False]
    assert torch.isinf(status.max_abs[1]) and status.max_abs[2] > DIVERGENCE_BOUND


def test_rollouts_stay_bounded_over_long_horizons() -> None:
    params, ics, seeds = _inputs(8, seed=5)
    status = rollout_status(replay(params, ics, seeds, 64))
    assert status.valid.all()


@pytest.mark.parametrize("grid", [4, 7])
def test_too_small_grid_is_refused(grid: int) -> None:
    with pytest.raises(NoaError, match="at least 8x8"):
        replay(torch.rand(1, CNO_SPACE.size), torch.zeros(1, 3, grid, grid), [0], 2)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(NoaError, match="replay needs"):
        replay(torch.rand(2, CNO_SPACE.size), torch.zeros(1, 3, 16, 16), [0, 1], 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_replay_is_deterministic_and_close_to_cpu() -> None:
    params, ics, seeds = _inputs(4)
    a = replay(params, ics.cuda(), seeds, STEPS)
    assert torch.equal(a, replay(params, ics.cuda(), seeds, STEPS))
    assert torch.allclose(a.cpu(), replay(params, ics, seeds, STEPS), atol=1e-3, rtol=1e-3)
