"""`noa quickstart` end to end, with its embedded sizes shrunk so the test stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from noa import quickstart
from noa.errors import NoaError


@pytest.fixture
def tiny_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quickstart, "DATA", {**quickstart.DATA, "n_samples": 40, "grid": 16, "timesteps": 4})
    monkeypatch.setattr(quickstart, "TOKENIZER", {**quickstart.TOKENIZER, "epochs": 2, "hidden": 32})
    monkeypatch.setattr(quickstart, "NOA", {**quickstart.NOA, "n_samples": 40, "timesteps": 4, "bptt_window": 2, "epochs": 3,
                                            "base_channels": 8, "modes": 4, "afno_blocks": 1, "projector_hidden": 16})


def test_quickstart_runs_every_stage_with_a_stop_and_resume(tiny_defaults: None, tmp_path: Path, train_log: list[str]) -> None:
    paths = quickstart.run_quickstart(tmp_path / "qs", device="cpu")
    text = "\n".join(train_log)
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert stage in text
    assert "Stopped after 13 batches as asked (--max-steps)" in text  # 9 batches per epoch, 1.5 epochs
    assert "Resuming from checkpoint:" in text and "(Will skip first 4 batches of epoch 2)" in text
    assert "Epoch 3/3" in text and "➜ Final Verdict:" in text
    assert (paths["report"] / "report.md").exists() and (paths["report"] / "summary.json").exists()
    assert (paths["checkpoints"] / "epoch_3.pt").exists()
    with pytest.raises(NoaError, match="already holds a quickstart"):
        quickstart.run_quickstart(tmp_path / "qs", device="cpu")


def test_quickstart_overwrite_replaces_only_what_it_wrote(tiny_defaults: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
