"""`noa quickstart` end to end, with its embedded sizes shrunk so the test stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from noa import quickstart
from noa.cli import main
from noa.errors import NoaError


@pytest.fixture
def tiny_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quickstart, "DATA", {**quickstart.DATA, "n_samples": 40, "grid": 16, "timesteps": 4})
    monkeypatch.setattr(quickstart, "TOKENIZER", {**quickstart.TOKENIZER, "epochs": 2, "hidden": 32})
    monkeypatch.setattr(
        quickstart,
        "NOA",
        {
            **quickstart.NOA,
            "n_samples": 40,
            "batch_size": 4,
            "timesteps": 4,
            "bptt_window": 2,
            "epochs": 3,
            "base_channels": 8,
            "modes": 4,
            "afno_blocks": 1,
            "projector_hidden": 16,
        },
    )


def test_quickstart_runs_every_stage_with_a_stop_and_resume(
    tiny_defaults: None, tmp_path: Path, train_log: list[str]
) -> None:
    paths = quickstart.run_quickstart(tmp_path / "qs", device="cpu")
    text = "\n".join(train_log)
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert stage in text
    assert "Stopped after 13 batches as asked (--max-steps)" in text  # 9 batches per epoch, 1.5 epochs
    assert "Resuming from checkpoint:" in text and "(Will skip first 4 batches of epoch 2)" in text
    assert "Epoch 3/3" in text and "➜ Final Verdict:" in text
    assert (paths["report"] / "report.md").exists() and (paths["report"] / "summary.json").exists()
    assert (paths["checkpoints"] / "epoch_3.pt").exists()
    with pytest.raises(NoaError, match="already holds a quickstart that ran to its end"):
        quickstart.run_quickstart(tmp_path / "qs", device="cpu")


def test_quickstart_overwrite_replaces_only_what_it_wrote(
    tiny_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "qs"
    quickstart.run_quickstart(root, device="cpu")
    notes = root / "checkpoints" / "noa" / "notes.txt"
    notes.write_text("mine")
    (root / "checkpoints" / "production" / "quickstart_vqvae" / "mine.txt").write_text("mine")
    started: list[str] = []
    generate = quickstart.generate
    monkeypatch.setattr(quickstart, "generate", lambda *a, **k: started.append("generate"))
    with pytest.raises(NoaError, match="mine.txt"):  # refused before the first stage
        quickstart.run_quickstart(root, device="cpu", overwrite=True)
    assert not started
    monkeypatch.setattr(quickstart, "generate", generate)  # (undo() would drop the tiny sizes too)
    (root / "checkpoints" / "production" / "quickstart_vqvae" / "mine.txt").unlink()
    paths = quickstart.run_quickstart(root, device="cpu", overwrite=True)
    assert notes.read_text() == "mine" and (paths["checkpoints"] / "epoch_3.pt").exists()


def test_an_interrupted_overwrite_continues_without_overwrite(
    tiny_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_log: list[str]
) -> None:
    root = tmp_path / "qs"
    paths = quickstart.run_quickstart(root, device="cpu")
    import noa.train.loop

    def ctrl_c(flags: dict) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(noa.train.loop, "train", ctrl_c)  # stage 3 stops at once
        with pytest.raises(
            quickstart.QuickstartInterrupted,
            match="during stage 3/5; .*run the same command without --overwrite to continue",
        ):
            quickstart.run_quickstart(root, device="cpu", overwrite=True)
    # The earlier run's report and checkpoints went first: nothing reads as finished or mismatched.
    assert not (paths["report"] / "report.md").exists() and not (paths["checkpoints"] / "best_model.pt").exists()
    train_log.clear()
    quickstart.run_quickstart(root, device="cpu")
    text = "\n".join(train_log)
    assert (
        "quickstart.h5 is already complete" in text
        and "quickstart_vqvae is complete; kept" in text
        and "Epoch 3/3" in text
    )
    assert (paths["report"] / "report.md").exists() and (paths["checkpoints"] / "best_model.pt").exists()


STAGES = {  # stage -> the function it calls (looked up at the call) and which of its calls to interrupt
    "1/5": ("noa.quickstart.generate", lambda *a, **k: True),
    "2/5": ("noa.tokenizer.job.train_tokenizer_on_dataset", lambda *a, **k: True),
    "3/5": ("noa.train.loop.train", lambda flags: "resume" not in flags),
    "4/5": ("noa.train.loop.train", lambda flags: flags.get("resume") == "auto"),
    "5/5": ("noa.diagnostics.report.diagnose", lambda *a, **k: True),
}
# What each rerun, after the interrupt in the stage before, says it kept or continued.
KEPT = {
    "3/5": ["quickstart.h5 is already complete"],
    "4/5": [
        "quickstart_vqvae is complete; kept",
        "holds this quickstart's checkpoints",
        "Resuming from checkpoint: ",
        "step_2.pt",
    ],
    "5/5": [
        "quickstart_vqvae is complete; kept",
        "holds this quickstart's checkpoints",
        "(Will skip first 4 batches of epoch 1)",
    ],
}


def _interrupt_call(real, matches, stage: str):  # noqa: ANN001, ANN202
    """``real``, but a call that ``matches`` raises KeyboardInterrupt, as Ctrl-C would."""

    def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not matches(*args, **kwargs):
            return real(*args, **kwargs)
        if stage in ("3/5", "4/5"):  # Ctrl-C mid-training: two more batches done, their checkpoint written
            real({**args[0], "max_steps": 2})
        raise KeyboardInterrupt

    return call


def test_an_interrupted_quickstart_continues_when_run_again(
    tiny_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_log: list[str]
) -> None:
    """Ctrl-C in each stage in turn (one quickstart, interrupted five times): every rerun of the
    same call keeps the finished stages, continues the interrupted one, and the last completes."""
    import importlib

    for stage, (target, matches) in STAGES.items():
        module_name, _, name = target.rpartition(".")
        module = importlib.import_module(module_name)
        train_log.clear()
        with monkeypatch.context() as patch:
            patch.setattr(module, name, _interrupt_call(getattr(module, name), matches, stage))
            with pytest.raises(
                quickstart.QuickstartInterrupted, match=f"during stage {stage}; .*run the same command again"
            ):
                quickstart.run_quickstart(tmp_path / "qs", device="cpu")
        text = "\n".join(train_log)
        for kept in KEPT.get(stage, []):
            assert kept in text, (stage, kept)
    train_log.clear()
    paths = quickstart.run_quickstart(tmp_path / "qs", device="cpu")
    assert (paths["report"] / "report.md").exists() and (paths["checkpoints"] / "epoch_3.pt").exists()
    assert "training already ran to its end (epoch_3.pt); kept" in "\n".join(train_log)


def test_a_marker_cut_short_by_a_kill_is_written_again_and_a_correct_one_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "qs"
    root.mkdir()
    marker = root / quickstart.MARKER
    marker.write_text("")  # killed between the marker's creation and its write
    quickstart._claim(root, 3, overwrite=False)
    assert marker.read_text() == '{"seed": 3}'
    os.utime(marker, (0, 0))
    quickstart._claim(root, 3, overwrite=False)
    assert marker.stat().st_mtime == 0  # a rerun does not write it again (nor tear it)
    with pytest.raises(NoaError, match=r"another --seed; rerun with its seed \(3\)"):
        quickstart._claim(root, 4, overwrite=False)


def test_overwrite_refuses_a_folder_that_is_not_a_quickstarts_and_removes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``noa quickstart --out . --overwrite`` in a project folder: checkpoints/noa is also
    ``noa train``'s default directory, so the user's own run sits where the quickstart writes."""
    root = tmp_path / "project"
    planted = {
        "checkpoints/noa/step_40.pt": b"a run",
        "checkpoints/noa/epoch_2.pt": b"a run",
        "checkpoints/noa/best_model.pt": b"a run",
        "checkpoints/noa/latest.json": b'{"path": "step_40.pt"}',
        "checkpoints/noa/metrics.jsonl": b'{"step": 40}\n',
        "checkpoints/production/quickstart_vqvae/weights.pt": b"a tokenizer",
        "checkpoints/production/quickstart_vqvae/metrics.json": b"{}",
        "datasets/quickstart.h5": b"a dataset",
        "notes.md": b"mine",
    }
    for name, data in planted.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    monkeypatch.setattr(quickstart, "generate", lambda *a, **k: pytest.fail("a stage started"))
    for flags in (["--overwrite"], []):
        assert main(["quickstart", "--out", str(root), "--device", "cpu", *flags]) == 2
        err = capsys.readouterr().err
        assert "not a quickstart's" in err and "choose a new or empty --out" in err
        assert "--overwrite" not in err
    after = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == planted  # nothing removed, nothing added (not even the marker)


SIGTERM_IN_STAGE_2 = """
import os, signal, sys, time
from noa import quickstart
import noa.tokenizer.job

quickstart.generate = lambda *a, **k: None  # stage 1 done, as far as this test goes
quickstart.describe = lambda path: "a dataset"


def terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # a closed terminal, a scheduler's stop
    time.sleep(30)


noa.tokenizer.job.train_tokenizer_on_dataset = terminated
from noa.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_outside_training_says_what_was_kept_and_exits_143(tmp_path: Path) -> None:
    """The guide promises the interrupted quickstart's message for a closed terminal's SIGTERM
    in any stage, not only in training (which handles signals itself)."""
    import subprocess
    import sys

    script = tmp_path / "sigterm_quickstart.py"
    script.write_text(SIGTERM_IN_STAGE_2)
    cmd = [sys.executable, str(script), "quickstart", "--out", str(tmp_path / "qs"), "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "quickstart interrupted during stage 2/5" in done.stderr and "run the same command again" in done.stderr
    assert "Traceback" not in done.stderr
