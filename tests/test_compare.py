"""`noa compare`: several runs on the same held-out rows, none a training row of any of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import PCA_CLASS, run_args
from noa import outputs
from noa.cli import main
from noa.data.loader import run_split
from noa.diagnostics.compare import (
    ALL,
    Comparison,
    RunFigures,
    _tokenizers_warning,
    check_compare_dir,
    classes_per_run,
    differing_tokenizers,
    format_comparison,
    labels_of,
    split_flag,
)
from noa.errors import NoaError
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
    a, b = (groups["all operators"]["runs"][label] for label in ("a", "b"))  # the parts that tell the paths apart
    assert a["token_agreement"] is None and b["token_agreement"] is not None  # where a tokenizer allows
    assert (out / "error_vs_horizon.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "compare.md").read_text() in printed
    assert "| step | persistence/floor | MSE/floor a | MSE/floor b |" in printed
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


def test_default_labels_are_the_parts_of_the_paths_that_differ(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert labels_of([runs / "a" / "best_model.pt", runs / "b" / "best_model.pt"]) == ["a", "b"]
    assert labels_of([runs / "a" / "best_model.pt", runs / "a" / "epoch_3.pt"]) == ["best_model.pt", "epoch_3.pt"]
    assert labels_of([runs / "x" / "noa" / "best.pt", runs / "y" / "noa" / "best.pt"]) == ["x", "y"]
    with pytest.raises(NoaError, match="the same checkpoint is given twice"):
        labels_of([runs / "a.pt", runs / "a.pt"])


def test_names_label_the_runs_and_a_bad_names_or_class_list_is_refused(
    two_runs: list[Path], tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, two_runs), "--dataset", str(tiny_dataset), "--out", str(out), "--no-tokens"]
    assert main([*argv, "--names", "physics, tokens", "--n-samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| step | persistence/floor | MSE/floor physics | MSE/floor tokens |" in printed
    assert list(json.loads((out / "summary.json").read_text())["runs"]) == ["physics", "tokens"]
    refusals = {
        "a,b,c": "--names gives 3 names for 2 checkpoints; give one per checkpoint, in their order, separated by commas",
        "a": "--names gives 1 name for 2 checkpoints",
        "a,a": "--names gives a to more than one run; give each run its own name",
        "a,": "--names: '' cannot label a run",
        "a|b,c": "--names: 'a|b' cannot label a run",
    }
    for names, message in refusals.items():
        assert main([*argv, "--names", names]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    # One class per run, noa for noa's own: both runs' own tokenizers (noa's) load as without the flag.
    assert main([*argv[:-1], "--vqvae-class", "noa,noa", "--n-samples", "4"]) == 0
    assert "| a | " in capsys.readouterr().out
    assert main([*argv, "--vqvae-class", f"{PCA_CLASS},noa,noa"]) == 2
    err = capsys.readouterr().err
    assert "--vqvae-class gives 3 classes for 2 checkpoints; give one for every run, or one per run" in err
    assert main([*argv, "--vqvae-class", f"{PCA_CLASS},"]) == 2
    assert "--vqvae-class has an empty entry" in capsys.readouterr().err


def test_a_class_per_run_loads_each_runs_own_tokenizer_class() -> None:
    assert classes_per_run(None, 2) == [None, None] and classes_per_run(PCA_CLASS, 2) == [PCA_CLASS, PCA_CLASS]
    assert classes_per_run([PCA_CLASS, "noa"], 2) == [PCA_CLASS, None]  # noa: noa's own tokenizer
    assert classes_per_run(["noa"], 3) == [None, None, None]
    assert split_flag(f"{PCA_CLASS}, noa") == [PCA_CLASS, "noa"] and split_flag(None) is None


def test_runs_scored_with_different_tokenizers_get_a_warning_and_a_tokenizer_column(
    two_runs: list[Path], tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other_vqvae"
    shutil.copytree(tiny_tokenizer, other)
    (other / "metrics.json").write_text("{}")  # not what the tokenizer's codes depend on: the same tokenizer
    figures = {
        label: RunFigures([1], [1.0], [1.0], [2.0], [1.0], [2.0], [0.5], 1.0, 0.5, 0.5, agree, reference)
        for label, agree, reference in (("a", 0.30, 0.899), ("b", 0.20, 0.471), ("c", None, None))
    }
    runs = {
        "a": {"checkpoint": "a.pt", "notes": [], "tokenizer": str(tiny_tokenizer), "tokenizer_class": None},
        "b": {"checkpoint": "b.pt", "notes": [], "tokenizer": str(other), "tokenizer_class": None},
        "c": {"checkpoint": "c.pt", "notes": [], "tokenizer": None, "tokenizer_class": None},
    }
    assert not differing_tokenizers(runs, figures)  # a copy is the same tokenizer
    with (other / "weights.pt").open("ab") as fh:
        fh.write(b"\0")  # other weights: another tokenizer
    assert differing_tokenizers(runs, figures)
    warning = _tokenizers_warning(runs, figures)
    assert len(warning) == 1 and "their token agreements are not comparable" in warning[0]
    assert "a: 89.9% between two CNO realizations with" in warning[0] and "b: 47.1%" in warning[0]
    c = Comparison("d.h5", 1, [0], [], runs, {ALL: figures}, {ALL: 1}, "full", 16, warning)
    text = format_comparison(c)
    assert f"WARNING: {warning[0]}" in text
    assert (
        "| run | horizon-averaged MSE/floor | one-step skill (pooled) | one-step skill (median operator) "
        "| token agreement (non-INITIAL) | two CNO realizations | tokenizer |" in text
    )
    assert f"| a | 1.00 | 0.500 | 0.500 | 30.0% | 89.9% | {tiny_tokenizer} |" in text
    assert (
        f"| b | 1.00 | 0.500 | 0.500 | 20.0% | 47.1% | {other} |" in text
        and "| c | 1.00 | 0.500 | 0.500 | n/a | n/a | n/a |" in text
    )
    one = Comparison("d.h5", 1, [0], [], {k: runs[k] for k in "ac"}, {ALL: {k: figures[k] for k in "ac"}}, {ALL: 1})
    assert "tokenizer |" not in format_comparison(one)  # one tokenizer: no column, no warning


def test_a_users_own_matplotlib_figure_is_never_replaced(tmp_path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from noa.diagnostics import plots
    from noa.diagnostics.report import check_report_dir

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1], [1, 0])
    mine = tmp_path / "mine"
    mine.mkdir()
    fig.savefig(mine / "error_vs_horizon.png")  # a user's figure: a PNG that matplotlib drew
    assert b"matplotlib" in (mine / "error_vs_horizon.png").read_bytes()[:4096]
    for check, command in ((check_compare_dir, "noa compare"), (check_report_dir, "noa diagnose")):
        with pytest.raises(NoaError, match=f"holds error_vs_horizon.png, which {command} did not write") as err:
            check(mine)
        assert "noa marks every figure it writes" in str(err.value)
    ours = tmp_path / "ours"
    ours.mkdir()
    plots._save(fig, ours / "error_vs_horizon.png")  # the way noa writes every figure: with its mark
    assert outputs.png_marked(ours / "error_vs_horizon.png") and not outputs.png_marked(mine / "error_vs_horizon.png")
    check_compare_dir(ours)
    check_report_dir(ours)
