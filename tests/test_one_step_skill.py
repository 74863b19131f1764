"""The one-step skill `noa diagnose` and `noa compare` show is the shared, noise-free one
(noa.diagnostics.skill): a model that steps exactly as the CNO's noise-free step scores 1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import noa
import noa.diagnostics.evaluate as evaluate_module
from helpers import run_args
from noa.diagnostics.compare import ALL, compare, format_comparison
from noa.diagnostics.evaluate import evaluate
from noa.diagnostics.report import format_report
from noa.diagnostics.skill import ALL as ALL_SKILL
from noa.model import UAFNO
from noa.operators.replay import noise_free_steps
from noa.train.loop import train


class NoiseFreeCNO(nn.Module):
    """Called like the run's U-AFNO, but each step is the CNO's own noise-free step."""

    def __init__(self, model: UAFNO) -> None:
        super().__init__()
        self.config = model.config
        self.anchor = nn.Parameter(torch.zeros(()))  # where `noa.load`'s agent reads its device

    def forward(self, x: torch.Tensor, params: torch.Tensor, return_bottleneck: bool = False) -> torch.Tensor:
        assert not return_bottleneck  # runs without a tokenizer have no projector
        return noise_free_steps(params, x[:, None])[:, 0]


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("one-step")
    train(run_args(tiny_dataset, root / "a", epochs=1))
    train(run_args(tiny_dataset, root / "b", epochs=1, n_samples=24, seed=1))
    return [root / "a" / "best_model.pt", root / "b" / "best_model.pt"]


@pytest.fixture
def perfect(monkeypatch: pytest.MonkeyPatch) -> None:
    build = evaluate_module.build_model

    def noise_free(ckpt: dict, device: str):
        model, projector = build(ckpt, device)
        return NoiseFreeCNO(model), projector

    monkeypatch.setattr(evaluate_module, "build_model", noise_free)


def test_diagnose_scores_the_cnos_noise_free_step_one(runs: list[Path], tiny_dataset: Path, perfect: None) -> None:
    ev = evaluate(runs[0], None, tiny_dataset, n_samples=8, log=lambda _: None)
    skills = ev.result.one_step_skill
    assert ALL_SKILL in skills and len(skills) >= 2  # all, and each update rule
    for entry in skills.values():
        assert entry["pooled"] == pytest.approx(1.0, abs=1e-6) and entry["median"] == pytest.approx(1.0, abs=1e-6)
    ev.result.text = format_report(ev.result)
    assert "One-step skill = 1 − Σ‖x̂′ − E[x′|x]‖²" in ev.result.text


def test_compare_scores_the_cnos_noise_free_step_one(runs: list[Path], tiny_dataset: Path, perfect: None) -> None:
    c = compare(runs, tiny_dataset, n_samples=8, log=lambda _: None)
    assert ALL in c.groups and len(c.groups) >= 2
    for by_run in c.groups.values():
        for figures in by_run.values():
            assert figures.one_step_skill == pytest.approx(1.0, abs=1e-6)
            assert figures.one_step_skill_median == pytest.approx(1.0, abs=1e-6)
    text = format_comparison(c)
    assert "| one-step skill (pooled) | one-step skill (median operator) |" in text
    assert all(f"| {label} | " in text and " | 1.000 | 1.000 | " in text for label in c.runs)


def test_a_trained_runs_skill_is_the_diagnosiss_own(runs: list[Path], tiny_dataset: Path) -> None:
    """Without the stand-in, compare reports exactly what diagnose computes for the same rows."""
    c = compare(runs, tiny_dataset, n_samples=8, log=lambda _: None)
    ev = evaluate(runs[0], None, tiny_dataset, rows=c.rows, log=lambda _: None)
    label = next(iter(c.runs))
    assert c.groups[ALL][label].one_step_skill == ev.result.one_step_skill[ALL_SKILL]["pooled"] < 1.0


def test_fresh_skill_reports_both_skills_per_rule_and_a_perfect_step_scores_one(runs: list[Path]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import fresh_skill  # a script folder, not a package

    from noa.families import load_family

    agent = noa.load(runs[0], device="cpu")
    family = load_family("starter")
    trained = fresh_skill.measure(agent, family, per_rule=3, grid=16, timesteps=8, seed=5)
    assert set(trained) == {"residual", "convex"}
    for m in trained.values():
        assert m["operators"] == 3
        for key in ("one_step", "skill_on_o"):
            entry = m[key]["all"]
            assert entry["operators"] == 3 and entry["median_90"][0] <= entry["median"] <= entry["median_90"][1]
    agent.model = NoiseFreeCNO(agent.model)
    perfect = fresh_skill.measure(agent, family, per_rule=3, grid=16, timesteps=8, seed=5)
    for m in perfect.values():
        for key in ("one_step", "skill_on_o"):
            assert m[key]["all"]["median"] == pytest.approx(1.0, abs=1e-5), key


def test_quality_scores_the_evaluation_rows_as_diagnose_and_fresh_operators_per_rule(
    runs: list[Path], tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality  # a script folder, not a package

    from noa.families import load_family

    monkeypatch.setitem(quality.DATA, "timesteps", 8)
    monkeypatch.setitem(quality.DATA, "grid", 16)
    full = load_family("full")
    ev = evaluate(runs[0], None, tiny_dataset, n_samples=8, log=lambda _: None)
    table = quality.one_step_skill(runs[0], ev.result.rows, tiny_dataset, "cpu", full)
    for rule, entry in table.items():
        assert entry["all"]["pooled"] == pytest.approx(ev.result.one_step_skill[rule]["pooled"], abs=1e-9)
        assert sum(e["operators"] for e in entry["activation"].values()) == entry["all"]["operators"]
    fresh = quality.fresh_skills(runs[0], full, 2, "cpu")
    assert fresh["per_rule"] == 2
    for key in ("one_step", "skill_on_o"):
        assert {rule: e["all"]["operators"] for rule, e in fresh[key].items()} == {"residual": 2, "convex": 2}
