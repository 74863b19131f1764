"""Data outside what a NOA was trained on (its θ box, its grid) is said once per stage, never silently."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from helpers import run_args
from noa.cli import main
from noa.coverage import outside_box, theta_warning
from noa.data.generate import GenerateConfig, generate
from noa.families import load_family
from noa.model import UAFNOConfig
from noa.operators.space import CNO_SPACE


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def starter_runs(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> dict[str, Path]:
    """Two NOAs trained on the starter family (16×16), its dataset, and an 8×8 dataset of the
    full family neither saw."""
    from noa.train.loop import train

    root = tmp_path_factory.mktemp("coverage")
    starter = root / "starter.h5"
    generate(GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=3, store_trajectories=True,
                            family=load_family("starter").as_dict()), starter, progress=False, log=quiet)  # fmt: skip
    small = root / "small.h5"
    generate(GenerateConfig(n_samples=8, grid=8, timesteps=8, seed=5, store_trajectories=True), small,
             progress=False, log=quiet)  # fmt: skip
    train(run_args(starter, root / "starter_run", epochs=1, bptt_window=4, warmup_steps=1))
    train(run_args(starter, root / "second", epochs=1, bptt_window=4, warmup_steps=1, seed=1, max_steps=1))
    return {
        "starter": starter,
        "small": small,
        "run": root / "starter_run" / "best_model.pt",
        "second": root / "second" / "step_1.pt",
    }


def test_the_box_check_says_each_dimension_outside_in_physical_units_and_a_fixed_one_that_now_varies() -> None:
    starter, full = load_family("starter"), load_family("full")
    config = UAFNOConfig(theta_box=starter.unit_box(), theta_family="starter")
    assert outside_box(config, CNO_SPACE, starter.draw(64, 1)) == []  # the family's own θ: nothing to say
    phrases = {p.split(" ", 1)[0]: p for p in outside_box(config, CNO_SPACE, full.draw(64, 0))}
    assert set(phrases) == set(CNO_SPACE.names) - {"noise_correlation", "update_policy"}  # starter keeps those whole
    assert phrases["weight_gain"].startswith(
        "weight_gain takes 0.501 … 2.48 against the box's 0.8 … 1 (up to 0.299 below"
    )
    assert "its embedding reads -4 … 16, trained on -1 … 1" in phrases["weight_gain"]
    assert phrases["activation"].startswith(
        "activation takes tanh, gelu, silu, sin, relu against the box's tanh … gelu"
    )
    # A dimension the training family fixed (zero width: its input always 0) that now varies.
    box = [[0.0, 1.0]] * CNO_SPACE.size
    j = CNO_SPACE.position("noise_scale")
    fixed = CNO_SPACE.dims[j].unit(0.05)
    box[j] = [fixed, fixed]
    config = UAFNOConfig(theta_box=box, theta_family="mine")
    varying = torch.full((3, CNO_SPACE.size), 0.5)
    varying[:, j] = torch.tensor([fixed, 0.2, 0.9])
    line = theta_warning(config, CNO_SPACE, varying, data="dataset d.h5", data_family="full")
    assert line is not None and line.startswith(
        "θ of dataset d.h5 fall outside the box the NOA's θ embedding is scaled to (family mine's box, the family it was first "
        "trained on, not the data's family full): noise_scale was fixed at 0.05 in training (its embedding input always 0) "
        "and here takes 0.0001 … 0.316 (its embedding reads -1.1 … 0.32)"
    )
    same = torch.full((2, CNO_SPACE.size), 0.5)
    same[:, j] = fixed
    assert theta_warning(config, CNO_SPACE, same, data="dataset d.h5") is None
    # A NOA without a box (the full family's) reads every θ of the space.
    assert outside_box(UAFNOConfig(), CNO_SPACE, full.draw(16, 0)) == []


def test_a_fine_tune_onto_another_family_warns_at_its_start_and_its_start_line_names_whose_box(
    starter_runs: dict[str, Path], tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    from noa.train.loop import train

    args = run_args(tiny_dataset, tmp_path / "tuned", epochs=1, bptt_window=4, lr=1e-4)
    train({**args, "init_from": str(starter_runs["run"]), "max_steps": 1})
    warned = [line for line in train_log if line.startswith("Warning: θ of dataset")]
    assert len(warned) == 1  # once for the stage
    assert "(family starter's box, the family it was first trained on, not the data's family full)" in warned[0]
    assert "weight_gain takes" in warned[0]
    header = next(line for line in train_log if line.startswith("noa train: finetune run"))
    assert "θ scaled to family starter's box, the family it was first trained on, not the data's family full" in header
    train_log.clear()
    train(run_args(starter_runs["starter"], tmp_path / "again", epochs=1, bptt_window=4, max_steps=1))
    assert not [line for line in train_log if "fall outside" in line]  # its own family's data: nothing to say
    header = next(line for line in train_log if line.startswith("noa train: fresh run"))
    assert "θ scaled to family starter's box, the data's family" in header


def test_diagnose_names_the_family_trained_on_and_warns_of_theta_outside_its_box(
    starter_runs: dict[str, Path], tiny_dataset: Path
) -> None:
    from noa.diagnostics import diagnose

    result = diagnose(starter_runs["run"], None, tiny_dataset, n_samples=4, log=quiet)
    assert "Family:     full (the dataset's operator family" in result.text
    assert "Trained on: family starter at 16×16; θ embedding scaled to family starter's box" in result.text
    assert result.coverage and result.coverage[0].startswith("θ of dataset")
    assert f"WARNING: {result.coverage[0]}" in result.text
    assert result.verdict.endswith("(WARNING: θ outside the NOA's box: it extrapolates there (see the warning above))")
    own = diagnose(starter_runs["run"], None, starter_runs["starter"], n_samples=2, log=quiet)
    assert own.coverage == [] and "WARNING" not in own.verdict


def test_compare_says_a_run_is_scored_at_another_grid_and_outside_its_box(
    starter_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["compare", str(starter_runs["run"]), str(starter_runs["second"]), "--dataset", str(starter_runs["small"])]
    assert main([*argv, "--out", str(tmp_path / "cmp"), "--no-tokens", "--device", "cpu", "--names", "s,t"]) == 0
    printed = capsys.readouterr().out
    assert f"runs on 8 rows of {starter_runs['small']} (family full, 8×8)" in printed
    assert "- s: " in printed and "(trained on family starter at 16×16;" in printed
    grid = [line for line in printed.splitlines() if "trained at 16×16 and dataset" in line]
    assert [line.split(":", 2)[1].strip() for line in grid] == ["s", "t"]  # one line per run
    assert grid[0].startswith("WARNING: s: the NOA was trained at 16×16 and dataset") and "is 8×8" in grid[0]
    assert any(line.startswith("WARNING: s: θ of dataset") for line in printed.splitlines())


def test_a_loaded_noa_warns_once_when_given_theta_outside_its_box(
    starter_runs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    import noa

    caplog.set_level(logging.WARNING, logger="noa.api")
    agent = noa.load(starter_runs["run"], device="cpu")
    ic = torch.zeros(3, 16, 16)
    agent.rollout(ic, torch.tensor(load_family("starter").draw(2, 0)), timesteps=1)
    assert not caplog.records  # inside the box
    outside = torch.tensor(load_family("full").draw(2, 0))
    agent.rollout(ic, outside, timesteps=1)
    agent.rollout(ic, outside, timesteps=1)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    assert caplog.records[0].getMessage().startswith("Warning: θ of this rollout fall outside")
