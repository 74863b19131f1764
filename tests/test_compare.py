"""`noa compare`: several runs on the same held-out rows, none a training row of any of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_args
from noa.cli import main
from noa.data.loader import run_split
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train


@pytest.fixture(scope="module")
def two_runs(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs on other training rows: 16 samples with seed 0 (no tokenizer), 24 with seed 1 (a tokenizer)."""
    root = tmp_path_factory.mktemp("compare")
    train(run_args(tiny_dataset, root / "a", epochs=1))
    train(run_args(tiny_dataset, root / "b", epochs=1, n_samples=24, seed=1, vqvae_path=str(tiny_tokenizer)))
    return [root / "a" / "best_model.pt", root / "b" / "best_model.pt"]


def test_compare_scores_every_run_on_the_same_rows_none_a_training_row(
    two_runs: list[Path], tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, two_runs), "--dataset", str(tiny_dataset), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert rows and [run["rows"] for run in summary["runs"].values()] == [rows, rows]
    for checkpoint in two_runs:
        train_rows = run_split(tiny_dataset, load_checkpoint(checkpoint)["args"]).train
        assert not np.intersect1d(rows, train_rows).size  # no row is a training row of either run
    assert summary["timesteps"] == 8 and summary["horizons"] == [1, 2, 4, 8]
    groups = summary["groups"]
    assert "all operators" in groups and len(groups) >= 2  # and one group per update rule
    assert sum(g["operators"] for name, g in groups.items() if name != "all operators") == len(rows)
    for group in groups.values():
        for figures in group["runs"].values():
            assert len(figures["floor_ratio"]) == 8 and len(figures["vrmse_median"]) == 8
            assert figures["one_step_skill"] is not None
    a, b = (groups["all operators"]["runs"][label] for label in ("a/best_model.pt", "b/best_model.pt"))
    assert a["token_agreement"] is None and b["token_agreement"] is not None  # where a tokenizer allows
    assert (out / "error_vs_horizon.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "compare.md").read_text() in printed
    assert "| step | persistence/floor | MSE/floor a/best_model.pt | MSE/floor b/best_model.pt |" in printed
    assert main(argv) == 0  # an earlier comparison is replaced


def test_compare_refuses_to_replace_a_users_file_and_one_checkpoint(
    two_runs: list[Path], tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "compare.md").write_text("my notes")
    argv = ["compare", *map(str, two_runs), "--dataset", str(tiny_dataset), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "holds compare.md, which noa compare did not write" in capsys.readouterr().err
    assert (tmp_path / "compare.md").read_text() == "my notes"
    one = ["compare", str(two_runs[0]), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "x")]
    assert main(one) == 2 and "needs at least two checkpoints" in capsys.readouterr().err
