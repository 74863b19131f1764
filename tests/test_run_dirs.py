"""Where a run writes: never over another run's files, nor over a run's own later checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import run_args
from noa.cli import main
from noa.errors import NoaError
from noa.train.loop import train


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture(scope="module")
def finished(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (16 samples, 3 batches per epoch, 2 epochs) in ``<tmp>/checkpoints/noa``."""
    root = tmp_path_factory.mktemp("finished")
    train(run_args(tiny_dataset, root / "checkpoints" / "noa"))
    return root / "checkpoints" / "noa"


@pytest.fixture
def workdir(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the finished run at the default --checkpoint-dir, as the current directory."""
    shutil.copytree(finished, tmp_path / "checkpoints" / "noa")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _without_dir(args: dict) -> dict:
    return {k: v for k, v in args.items() if k != "checkpoint_dir"}


def test_a_fresh_run_without_checkpoint_dir_takes_a_fresh_sibling(
    workdir: Path, tiny_dataset: Path, train_log: list[str]
) -> None:
    before = _hashes(workdir)
    result = train(_without_dir(run_args(tiny_dataset, workdir, epochs=1)))
    assert result.checkpoint_dir == Path("checkpoints/noa-2")
    assert "checkpoints/noa holds another run (kept as it is); this run writes to checkpoints/noa-2" in train_log
    after = _hashes(workdir)
    assert {k: after[k] for k in before} == before
    train(_without_dir(run_args(tiny_dataset, workdir, epochs=1)))
    assert (workdir / "checkpoints/noa-3/epoch_1.pt").exists()


def test_an_explicit_checkpoint_dir_that_holds_a_run_is_refused(
    workdir: Path, tiny_dataset: Path, train_log: list[str]
) -> None:
    before = _hashes(workdir)
    with pytest.raises(
        NoaError, match=r"--checkpoint-dir checkpoints/noa already holds checkpoints .*e\.g\. checkpoints/noa-2"
    ):
        train(run_args(tiny_dataset, Path("checkpoints/noa"), epochs=1))
    assert _hashes(workdir) == before and not train_log  # refused before anything was loaded or printed


def test_a_fine_tune_refused_prints_nothing_as_loaded(workdir: Path, tiny_dataset: Path, train_log: list[str]) -> None:
    with pytest.raises(NoaError, match="already holds checkpoints"):
        train(run_args(tiny_dataset, Path("checkpoints/noa"), init_from="checkpoints/noa/best_model.pt", epochs=1))
    assert not any("Loaded" in line for line in train_log)


@pytest.mark.parametrize("name", ["step_2.pt", "epoch_1.pt"])
def test_resuming_an_earlier_checkpoint_branches_and_keeps_every_file(
    workdir: Path, name: str, train_log: list[str]
) -> None:
    before = _hashes(workdir)
    result = train({"resume": f"checkpoints/noa/{name}", "device": "cpu"})
    assert _hashes(workdir).items() >= before.items()  # nothing in the run's directory changed or went
    assert result.checkpoint_dir == Path("checkpoints/noa-2") and (workdir / "checkpoints/noa-2/epoch_2.pt").exists()
    assert any(f"beyond {name}" in line and "this resume branches into checkpoints/noa-2" in line for line in train_log)
    records = [json.loads(line) for line in (workdir / "checkpoints/noa/metrics.jsonl").read_text().splitlines()]
    assert len({(r["kind"], r["global_step"]) for r in records}) == len(records)  # no duplicated lines


def test_resuming_an_earlier_checkpoint_into_its_named_directory_is_refused_with_the_branch_command(
    workdir: Path, train_log: list[str]
) -> None:
    before = _hashes(workdir)
    with pytest.raises(NoaError) as refused:
        train({"resume": "checkpoints/noa/step_2.pt", "checkpoint_dir": "checkpoints/noa", "device": "cpu"})
    message = str(refused.value)
    assert "epoch_2.pt" in message and "would overwrite them" in message
    assert "noa train --resume checkpoints/noa/step_2.pt --checkpoint-dir checkpoints/noa-2" in message
    assert _hashes(workdir) == before and not any("Loaded" in line for line in train_log)
    train(
        {"resume": "checkpoints/noa/step_2.pt", "checkpoint_dir": "checkpoints/noa-2", "device": "cpu"}
    )  # the command it gave
    assert _hashes(workdir).items() >= before.items() and (workdir / "checkpoints/noa-2/epoch_2.pt").exists()


def test_resuming_the_newest_checkpoint_continues_in_place(workdir: Path, tiny_dataset: Path) -> None:
    ck = workdir / "checkpoints" / "noa"
    for later in ("step_4.pt", "step_6.pt", "epoch_2.pt", "best_model.pt", "latest.json"):
        (ck / later).unlink()
    result = train({"resume": "checkpoints/noa/epoch_1.pt", "device": "cpu"})
    assert result.checkpoint_dir == Path("checkpoints/noa") and (ck / "epoch_2.pt").exists()


def test_overwrite_without_checkpoint_dir_still_replaces_the_default(workdir: Path, tiny_dataset: Path) -> None:
    result = train({**_without_dir(run_args(tiny_dataset, workdir, epochs=1)), "overwrite": True})
    assert result.checkpoint_dir == Path("checkpoints/noa") and not (workdir / "checkpoints/noa/epoch_2.pt").exists()
    assert not os.path.exists(workdir / "checkpoints/noa-2")


def test_a_default_directory_holding_only_an_earlier_runs_log_is_passed_over(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "noa").mkdir(parents=True)
    (tmp_path / "checkpoints" / "noa" / "metrics.jsonl").write_text('{"kind": "train_batch", "global_step": 1}\n')
    result = train(_without_dir(run_args(tiny_dataset, tmp_path, epochs=1, max_steps=1)))
    assert result.checkpoint_dir == Path("checkpoints/noa-2")
    assert (tmp_path / "checkpoints/noa/metrics.jsonl").read_text() == '{"kind": "train_batch", "global_step": 1}\n'


def test_resuming_into_another_runs_directory_is_refused(workdir: Path, tiny_dataset: Path) -> None:
    train(run_args(tiny_dataset, Path("checkpoints/other"), epochs=1, max_steps=1))
    before = _hashes(workdir)
    with pytest.raises(
        NoaError, match=r"checkpoints/other holds another run's checkpoints .*--checkpoint-dir checkpoints/other-2"
    ):
        train({"resume": "checkpoints/noa/step_2.pt", "checkpoint_dir": "checkpoints/other", "device": "cpu"})
    assert _hashes(workdir) == before


@pytest.mark.parametrize("how", ["resume", "init_from"])
def test_overwrite_never_deletes_the_run_a_fine_tune_starts_from(workdir: Path, tmp_path: Path, how: str) -> None:
    from noa.data.generate import GenerateConfig, generate

    other = tmp_path / "other.h5"
    generate(GenerateConfig(n_samples=12, grid=16, timesteps=8, seed=99), other, progress=False, log=lambda _: None)
    before = _hashes(workdir / "checkpoints")
    with pytest.raises(
        NoaError,
        match=r"--overwrite would delete the run in checkpoints/noa, whose epoch_2.pt this fine-tune starts from",
    ):
        train(
            {
                how: "checkpoints/noa/epoch_2.pt",
                "dataset": str(other),
                "overwrite": True,
                "device": "cpu",
                "timesteps": 8,
                "bptt_window": 2,
            }
        )
    assert _hashes(workdir / "checkpoints") == before


def test_the_current_directory_as_checkpoint_dir_trains_and_resumes(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    assert train(run_args(tiny_dataset, Path("."), max_steps=2)).global_step == 2
    assert (run / "step_2.pt").is_file()
    assert not list(tmp_path.rglob("*.lock"))  # the lock (beside the directory, .run.lock) is gone once released
    assert train({"resume": "auto", "checkpoint_dir": ".", "max_steps": 1, "device": "cpu"}).global_step == 3
    with pytest.raises(NoaError, match=r"--checkpoint-dir \. already holds checkpoints .*--checkpoint-dir .*/run-2\)"):
        train(run_args(tiny_dataset, Path("."), max_steps=1))


GENERATE = ["data", "generate", "--n-samples", "4", "--grid", "16", "--timesteps", "2", "--out"]
TRAIN = [
    "train",
    "--dataset",
    "{data}",
    "--timesteps",
    "8",
    "--bptt-window",
    "2",
    "--device",
    "cpu",
    "--checkpoint-dir",
]


@pytest.mark.parametrize(
    "command, out",
    [(GENERATE, "."), (GENERATE, "/"), (TRAIN, "/")],
    ids=["generate-dot", "generate-root", "train-root"],
)
def test_an_output_named_dot_or_root_gets_a_message_not_a_traceback(
    command: list[str],
    out: str,
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from noa.cli import main

    monkeypatch.chdir(tmp_path)
    status = main([part.format(data=tiny_dataset) for part in command] + [out])
    err = capsys.readouterr().err
    assert status != 0 and err.startswith("error: ") and "Traceback" not in err
    assert ("root of the file system" in err) if out == "/" else ("is a directory; give a file path" in err)


def test_resume_auto_in_a_typod_directory_beside_a_run_asks_did_you_mean(
    workdir: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(workdir / "checkpoints" / "noa", workdir / "checkpoints" / "run1")
    typo = ["train", "--resume", "auto", "--checkpoint-dir", "checkpoints/rn1", "--max-steps", "1", "--device", "cpu"]
    assert main(typo) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --checkpoint-dir checkpoints/rn1 does not exist, and checkpoints/run1 beside it")
    assert "did you mean checkpoints/run1?" in err and "--resume auto --new-ok" in err
    assert not (workdir / "checkpoints" / "rn1").exists()
    # Confirmed, it starts fresh there; a name far from every run (an elastic restart's new directory) needs nothing.
    flags = ["--dataset", str(tiny_dataset), *(f"--{k.replace('_', '-')}={v}" for k, v in _tiny_flags().items())]
    assert main([*typo, "--new-ok", *flags]) == 0
    assert (workdir / "checkpoints" / "rn1" / "step_1.pt").is_file()
    assert (
        main(["train", "--resume", "auto", "--checkpoint-dir", "checkpoints/elastic", "--max-steps", "1", *flags]) == 0
    )


def _tiny_flags() -> dict:
    keep = ("n_samples", "batch_size", "bptt_window", "timesteps", "base_channels", "encoder_levels", "modes")
    return {k: v for k, v in run_args(Path("unused"), Path("unused")).items() if k in keep}
