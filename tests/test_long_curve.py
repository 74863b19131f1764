"""benchmarks/long_curve.py on tiny runs: resume is exact, fresh batches are reproducible,
a mismatched folder is refused, the report's fit reads a power law back, and gpu_quality.sh's
smoke mode writes a curve."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import long_curve  # noqa: E402  (a script folder, not a package)
import long_curve_report  # noqa: E402
from long_curve_report import RunCurve, equal_budget_table, fit_power, skill_at  # noqa: E402

from noa.families import load_family  # noqa: E402

TINY = ["--grid", "16", "--timesteps", "4", "--n-train", "8", "--n-test", "4", "--batch-size", "4", "--threads", "1"]
TINY += ["--skill-per-rule", "3"]


def run(out: Path, updates: int, *extra: str) -> None:
    long_curve.main([*TINY, "--out", str(out), "--updates", str(updates), *extra])


def saved(out: Path) -> dict:
    return torch.load(out / long_curve.CHECKPOINT, weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """The same weights and optimizer state, bit for bit, and the same skills at the last point."""
    sa, sb = saved(a), saved(b)
    assert sa["progress"]["updates"] == sb["progress"]["updates"]
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    for slot, state in sa["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, sb["optimizer"]["state"][slot][name]), (slot, name)
    assert sa["progress"]["curve"][-1]["held_out"] == sb["progress"]["curve"][-1]["held_out"]


@pytest.mark.parametrize("data", ["pool", "fresh"])
def test_a_run_stopped_and_extended_equals_an_uninterrupted_one(tmp_path: Path, data: str) -> None:
    run(tmp_path / "split", 3, "--data", data)
    assert (tmp_path / "split" / long_curve.POOL).exists() == (data == "pool")  # the resume reads the pool back
    run(tmp_path / "split", 6, "--data", data)
    run(tmp_path / "whole", 6, "--data", data)
    assert_same_run(tmp_path / "split", tmp_path / "whole")
    curve = [json.loads(line) for line in (tmp_path / "split" / long_curve.CURVE).read_text().splitlines()]
    assert [entry["updates"] for entry in curve] == [3, 6]
    medians = curve[-1]["median_over_operators"]
    assert set(medians) == {"held_out", "training"}
    assert all(math.isfinite(v) and v <= 1.0 for split in medians.values() for v in split.values())


def test_sigterm_finishes_the_update_saves_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = long_curve.timed_update

    def signalled_after_two(r: long_curve.Run, batches: long_curve.Source | long_curve.Prefetched) -> None:
        plain(r, batches)
        if r.progress.updates == 2:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(long_curve, "timed_update", signalled_after_two)
    run(tmp_path / "split", 5)
    out = capsys.readouterr().out
    assert "stopped by SIGTERM at update 2" in out and "run the same command again" in out
    assert saved(tmp_path / "split")["progress"]["updates"] == 2
    monkeypatch.setattr(long_curve, "timed_update", plain)
    run(tmp_path / "split", 5)
    run(tmp_path / "whole", 5)
    assert_same_run(tmp_path / "split", tmp_path / "whole")


def test_a_prefetched_run_is_the_same_run(tmp_path: Path) -> None:
    """Batches made ahead in a worker process are the source's own: a prefetched run, stopped and
    extended, equals the plain one bit for bit, and a cap between the two stops the worker cleanly."""
    run(tmp_path / "prefetched", 3, "--data", "fresh", "--prefetch", "2")
    run(tmp_path / "prefetched", 6, "--data", "fresh", "--prefetch", "3")
    run(tmp_path / "plain", 6, "--data", "fresh")
    assert_same_run(tmp_path / "prefetched", tmp_path / "plain")
    summary = json.loads((tmp_path / "prefetched" / long_curve.SUMMARY).read_text())
    assert summary["this_invocation"]["prefetch"] == 3


def test_prefetched_batches_arrive_in_order() -> None:
    source = long_curve.FreshSource(load_family("full"), 0, 2, 16, 4, torch.device("cpu"))
    ahead = long_curve.Prefetched(source, 5, 8, 2)
    assert torch.equal(ahead.batch(5).x, source.batch(5).x)
    with pytest.raises(RuntimeError, match="asked for 7, next is 6"):
        ahead.batch(7)


def test_fresh_batches_are_a_function_of_seed_and_update() -> None:
    source = long_curve.FreshSource(load_family("full"), 0, 4, 16, 4, torch.device("cpu"))
    first, again, second = source.batch(7), source.batch(7), source.batch(8)
    for name in ("theta", "x", "target"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
        assert not torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.x.shape == first.target.shape == (4, 3, 16, 16)


def test_another_models_run_in_an_existing_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path / "run", 2)
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "run", 4, "--model", "hyper", "--seed", "3")
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert 'model "uafno" there, "hyper" asked' in message and "seed 0 there, 3 asked" in message
    assert "Traceback" not in message


def test_the_fit_reads_a_power_law_back_and_a_flat_curve_never_arrives() -> None:
    updates = np.array([300.0, 500, 1000, 2000, 3000, 5000, 10000])
    fit = fit_power(updates, 1 - 0.9 * updates**-0.2, 300)
    assert fit is not None and fit.b == pytest.approx(0.2)
    assert fit.updates_for(0.8)[0] == pytest.approx((0.9 / 0.2) ** (1 / 0.2), rel=1e-6)
    flat = fit_power(updates, np.array([0.3, 0.31, 0.29, 0.3, 0.3, 0.31, 0.29]), 300)
    assert flat is not None and math.isinf(flat.updates_for(0.8)[2])


def synthetic_run(name: str, seconds_per_update: float, skill_of_updates: dict[str, float]) -> RunCurve:
    curve = [
        {"updates": u, "seconds": u * seconds_per_update, "held_out": {"residual": s}, "training": {"residual": s}}
        for u, s in skill_of_updates.items()
    ]
    identity = {"model": name, "data": "fresh", "family": "full"}
    return RunCurve(Path(name), identity, {}, curve, label=name)


def test_equal_wall_time_favours_the_cheaper_update_and_equal_updates_the_better_curve() -> None:
    # "slow" learns more per update (0.4 at 1k) but costs 4x the seconds per update
    fast = synthetic_run("fast", 0.25, {100: 0.1, 1000: 0.3, 4000: 0.45})
    slow = synthetic_run("slow", 1.0, {100: 0.2, 1000: 0.4})
    assert skill_at(slow, "residual", "updates", 100 * 10**0.5) == pytest.approx(0.3)  # linear in log u
    assert skill_at(fast, "residual", "seconds", 2000.0) is None  # beyond the run's last point
    table = equal_budget_table([fast, slow]).splitlines()
    assert "residual at 1k updates" in table[0] and "residual at 0.28 h" in table[0]
    assert table[2] == "| fast | 0.250 | 0.300 | 0.450 (4k) |"
    assert table[3] == "| slow | 1.000 | 0.400 | 0.400 (1k) |"
    at_250s = equal_budget_table([fast, slow], hours=250 / 3600).splitlines()
    assert at_250s[2] == "| fast | 0.250 | 0.300 | 0.300 (1k) |" and at_250s[3].endswith("0.280 (250) |")


def test_gpu_quality_smoke_mode_writes_a_curve_of_finite_skills(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    root = BENCHMARKS.parent
    subprocess.run(["bash", "benchmarks/gpu_quality.sh", "--smoke"], cwd=root, env=env, check=True, timeout=120)
    figures = json.loads((tmp_path / "gpu_quality_smoke.json").read_text())
    assert figures["curve"] and figures["seconds_per_update"] > 0
    skills = [v for entry in figures["curve"] for split in ("held_out", "training") for v in entry[split].values()]
    assert skills and all(math.isfinite(v) for v in skills)


def test_a_curve_point_carries_the_skill_on_o_table(tmp_path: Path) -> None:
    run(tmp_path / "run", 3, "--data", "fresh")
    entry = json.loads((tmp_path / "run" / long_curve.CURVE).read_text().splitlines()[-1])
    table = entry["skill_on_o"]["held_out"]
    assert set(table) == {"residual", "convex"}
    for rule in table.values():
        assert rule["all"]["operators"] == 3  # --skill-per-rule 3
        low, high = rule["all"]["median_90"]
        assert low <= rule["all"]["median"] <= high
        assert sum(e["operators"] for e in rule["gain"].values()) == 3
    assert set(entry["skill_on_o"]["training"]) <= {"residual", "convex"}
    assert (tmp_path / "run" / long_curve.SKILL_SET).exists()


def test_the_oracle_trains_on_the_curve_with_its_levers(tmp_path: Path) -> None:
    levers = ["--model", "oracle", "--data", "fresh", "--oracle-banks", "6", "--near-zero-output"]
    run(tmp_path / "split", 2, *levers, "--gain-curriculum", "10", "--lr", "1e-2")
    run(tmp_path / "split", 4, *levers, "--gain-curriculum", "10", "--lr", "1e-2")
    run(tmp_path / "whole", 4, *levers, "--gain-curriculum", "10", "--lr", "1e-2")
    assert_same_run(tmp_path / "split", tmp_path / "whole")
    identity = json.loads((tmp_path / "whole" / long_curve.RUN).read_text())["identity"]
    assert identity["oracle_banks"] == 6 and identity["near_zero_output"] and identity["gain_curriculum"] == 10
    assert saved(tmp_path / "whole")["model"]["banks.w_in"].shape[0] == 6


def test_runs_without_the_later_settings_keep_their_identity() -> None:
    """A run made before --skill-per-rule and the oracle's levers records none of them, so it
    resumes; a run that sets one records it."""
    args = long_curve.train_parser().parse_args(["--out", "x", "--skill-per-rule", "192"])
    assert not set(long_curve.LATER_IDENTITY) & set(long_curve.identity(args, load_family("full")))
    args = long_curve.train_parser().parse_args(["--out", "x", "--skill-per-rule", "16"])
    assert long_curve.identity(args, load_family("full"))["skill_per_rule"] == 16


def test_the_gain_curriculum_starts_low_and_widens_to_the_family() -> None:
    family = load_family("full")
    gain = family.space.position("weight_gain")
    theta = torch.from_numpy(family.draw(256, 0))
    early = long_curve.gain_curriculum(family, theta, 0, 100)
    late = long_curve.gain_curriculum(family, theta, 100, 100)
    decode = family.space.dims[gain].value
    assert max(decode(float(u)) for u in early[:, gain]) < 0.5 + 2.0 / 3 + 1e-6  # the low third of 0.5 - 2.5
    assert torch.equal(late, theta)
    assert torch.equal(early[:, :gain], theta[:, :gain])  # nothing else moves


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--near-zero-output"], "use them with --model oracle"),
        (["--model", "oracle", "--oracle-banks", "3"], "at least the generator's 4 banks"),
        (["--gain-curriculum", "10"], "use it with --data fresh"),
        (["--prefetch", "2", "--device", "meta"], "use it with --device cpu"),
    ],
)
def test_a_lever_the_run_cannot_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], said: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "run", 2, *extra)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_report_shows_the_skill_on_o_of_each_runs_last_point(tmp_path: Path) -> None:
    run(tmp_path / "run", 3, "--data", "fresh")
    old = synthetic_run("old", 0.5, {10: 0.1})
    runs = [long_curve_report.read_run(tmp_path / "run"), old]
    long_curve_report.label_runs(runs)
    lines = long_curve_report.skill_on_o_table(runs).splitlines()
    residual = next(line for line in lines if "| residual | 3 | 3 |" in line)
    entry = json.loads((tmp_path / "run" / long_curve.CURVE).read_text().splitlines()[-1])
    median = entry["skill_on_o"]["held_out"]["residual"]["all"]["median"]
    assert f"| {median:.3f} [" in residual
    assert lines[-1].startswith("| old fresh | – |") and "made before it" in lines[-1]
