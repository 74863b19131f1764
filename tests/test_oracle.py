"""The oracle student (noa.model.oracle): with the generator's banks it is the CNO, in every bin."""

from __future__ import annotations

import pytest
import torch

from noa.diagnostics.held_out import held_out_operators
from noa.diagnostics.skill import skill_on_o
from noa.families import load_family
from noa.model.oracle import GENERATOR_BANKS, OracleConfig, OracleStudent
from noa.operators.space import ACTIVATIONS


@pytest.fixture(scope="module")
def full():
    return load_family("full")


@pytest.fixture(scope="module")
def held(full):
    return held_out_operators(full, 16, seed=3, channels=3, grid=16, timesteps=8)


@pytest.mark.parametrize("banks", [GENERATOR_BANKS, GENERATOR_BANKS + 2])
def test_the_true_banks_score_one_in_every_gain_and_activation_bin(full, held, banks: int) -> None:
    student = OracleStudent(OracleConfig(banks=banks, near_zero_output=True))
    student.load_generator_banks()
    table = skill_on_o(student, held, full, seed=0)
    seen_activations: set[str] = set()
    for rule, entry in table.items():
        assert set(entry["gain"]) == {"gain low", "gain mid", "gain high"}, rule
        seen_activations |= set(entry["activation"])
        for bin_entry in [entry["all"], *entry["gain"].values(), *entry["activation"].values()]:
            assert round(bin_entry["median"], 3) == 1.0 and round(bin_entry["pooled"], 3) == 1.0
            assert bin_entry["median"] > 1 - 1e-5
    assert seen_activations == set(ACTIVATIONS)


def test_from_scratch_it_is_not_the_family_and_a_near_zero_output_starts_at_zero(full, held) -> None:
    plain = skill_on_o(OracleStudent(OracleConfig(seed=1)), held, full, seed=0)
    assert all(entry["all"]["median"] < 0.5 for entry in plain.values())
    quiet = OracleStudent(OracleConfig(seed=1, near_zero_output=True))
    with torch.no_grad():
        f_quiet = quiet(held.states[:, 0], held.theta)
        f_plain = OracleStudent(OracleConfig(seed=1))(held.states[:, 0], held.theta)
    assert f_quiet.abs().mean() < 0.1 * f_plain.abs().mean()
    quiet_table = skill_on_o(quiet, held, full, seed=0)
    assert all(abs(entry["all"]["median"]) < 0.05 for entry in quiet_table.values())


def test_a_few_updates_move_the_student_towards_the_family(full, held) -> None:
    student = OracleStudent(OracleConfig(seed=2, near_zero_output=True))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.0)
    x, o, theta = held.states[:, 0], held.maps[:, 0], held.theta

    def loss() -> torch.Tensor:
        return (student(x, theta) - o).pow(2).mean()

    before = float(loss().detach())
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < 0.9 * before
    assert student.mixing.grad is not None and student.banks["depthwise"].grad is not None


def test_fewer_banks_than_the_generator_has_are_refused() -> None:
    with pytest.raises(ValueError, match="at least the generator's 4 banks"):
        OracleConfig(banks=3)
