"""The `noa data` commands end to end, and their handling of user mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from noa.cli import main


def test_generate_then_info_from_the_console_script(tmp_path: Path) -> None:
    out = tmp_path / "ds" / "tiny.h5"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "noa.cli",
            "data",
            "generate",
            "--out",
            str(out),
            "--n-samples",
            "6",
            "--grid",
            "16",
            "--timesteps",
            "3",
            "--no-progress",
            "--no-features",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert out.exists() and "samples:       6" in run.stdout
    info = subprocess.run([sys.executable, "-m", "noa.cli", "data", "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "IC kinds" in info.stdout


def test_no_progress_bar_when_the_output_is_not_a_terminal(tmp_path: Path) -> None:
    # A log file gets lines, not a bar's carriage returns (stderr is a pipe here).
    out = tmp_path / "tiny.h5"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "noa.cli",
            "data",
            "generate",
            "--out",
            str(out),
            "--n-samples",
            "4",
            "--grid",
            "16",
            "--timesteps",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "\r" not in run.stdout, run.stderr[-500:]


def test_off_a_terminal_generation_and_features_log_plain_progress_lines(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "tiny.h5")
    # pytest's captured stderr is not a terminal: the situation of a run under nohup or Slurm.
    assert (
        main(
            [
                "data",
                "generate",
                "--out",
                out,
                "--n-samples",
                "20",
                "--grid",
                "8",
                "--timesteps",
                "1",
                "--batch-size",
                "2",
                "--no-features",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  replay:")]
    assert lines[0].startswith("  replay: 2/20 samples (10%), ") and lines[0].endswith(" s")
    assert len(lines) == 10 and lines[-1].startswith("  replay: 20/20 samples (100%), ")
    assert main(["data", "features", out, "--batch-size", "10"]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines() if "features:" in line] == [
        "  features: 10/20 samples (50%)",
        "  features: 20/20 samples (100%)",
    ]
    assert main(["data", "features", out, "--overwrite", "--no-progress"]) == 0
    assert "features:" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "info", "missing.h5"], "does not exist"),
        (["data", "generate", "--out", "x.h5", "--n-samples", "4", "--grid", "5", "--no-features"], "--grid"),
        (
            ["data", "generate", "--out", "x.h5", "--n-samples", "4", "--ic-kinds", "vortex", "--no-features"],
            "vortex",
        ),
        (["data", "generate", "--out", "x.h5", "--n-samples", "4", "--device", "cuda:7", "--no-features"], "CUDA"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, message, tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    if "cuda:7" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()


def test_info_on_an_interrupted_generation_gives_the_whole_resume_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds.h5"
    flags = ["--n-samples", "4", "--grid", "16", "--timesteps", "2", "--seed", "3", "--no-features", "--no-progress"]
    assert main(["data", "generate", "--out", str(out), *flags]) == 0
    out.rename(tmp_path / "ds.h5.partial")  # what an interrupted generation leaves (this one had replayed everything)
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"its generation was interrupted and the samples replayed so far are in {out}.partial" in err
    command = (
        f"noa data generate --out {out} --n-samples 4 --grid 16 --timesteps 2 --realizations 1 --seed 3 "
        "--no-features --resume"
    )
    assert f"continue it with `{command}`" in err and "create one with" not in err
    assert main([*command.split()[1:], "--no-progress"]) == 0 and out.is_file()  # the command given works


def test_info_on_a_missing_dataset_says_how_to_make_one(tmp_path: Path, capsys) -> None:
    assert main(["data", "info", str(tmp_path / "none.h5")]) == 2
    assert f"create one with `noa data generate --out {tmp_path / 'none.h5'} --n-samples N`" in capsys.readouterr().err


def test_ic_families_is_the_deprecated_name_of_ic_kinds(tmp_path: Path, capsys) -> None:
    """The former flag still works the same, and says once on stderr that it was renamed."""
    import json

    import h5py

    flags = ["--n-samples", "2", "--grid", "16", "--timesteps", "2", "--no-features", "--no-progress"]
    err, fields = {}, {}
    for flag in ("--ic-kinds", "--ic-families"):
        out = tmp_path / f"{flag[2:]}.h5"
        assert main(["data", "generate", "--out", str(out), *flags, flag, "sinusoid", "localized"]) == 0
        err[flag] = capsys.readouterr().err
        with h5py.File(out, "r") as f:
            assert json.loads(f.attrs["ic_families"]) == ["sinusoid", "localized"]  # the recorded name
            fields[flag] = f["inputs/fields"][:]
    assert (fields["--ic-kinds"] == fields["--ic-families"]).all()
    assert "deprecated" not in err["--ic-kinds"]
    warnings = [line for line in err["--ic-families"].splitlines() if "deprecated" in line]
    assert warnings == ["Warning: --ic-families is deprecated; use --ic-kinds (same values)"]
