"""`noa train` end to end on a tiny real dataset: flags, logs, checkpoints, NaN handling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers import run_args
from noa.cli import main
from noa.errors import NoaError
from noa.train import loop as loop_module
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train
from noa.train.settle import settle


def test_training_logs_checkpoints_and_history(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path, train_log: list[str]
) -> None:
    lines = train_log
    lines.clear()  # only what follows
    args = run_args(
        tiny_dataset, tmp_path / "ck", vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, lambda_latent=0.5
    )
    result = train(args)
    text = "\n".join(lines)
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "  [1/3] loss=" in text and " commit=" in text and " latent=" in text and "s/b" in text
    assert "  Train: total=" in text and "  Val:   total=" in text
    names = sorted(p.name for p in (tmp_path / "ck").glob("*.pt"))
    assert {"epoch_1.pt", "epoch_2.pt", "best_model.pt", "step_2.pt", "step_4.pt", "step_6.pt"} <= set(names)
    ckpt = load_checkpoint(tmp_path / "ck" / "epoch_2.pt")
    for key in (
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "epoch",
        "global_step",
        "history",
        "best_val_loss",
        "alignment_state",
        "config",
        "args",
        "format_version",
        "fingerprints",
    ):
        assert key in ckpt, key
    assert ckpt["global_step"] == 6 == result.global_step
    assert {k: ckpt["config"][k] for k in ("base_channels", "encoder_levels", "modes", "afno_blocks")} == {
        "base_channels": 8,
        "encoder_levels": 2,
        "modes": 4,
        "afno_blocks": 1,
    }
    assert len(ckpt["history"]["train_loss"]) == 2 and len(ckpt["history"]["val_loss"]) == 2
    assert ckpt["alignment_state"]["latent_dim"] == 24
    records = [json.loads(l) for l in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train_batch" for r in records) == 6 and sum(r["kind"] == "epoch" for r in records) == 2


def test_config_file_and_command_line_precedence(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: {tiny_dataset}\nepochs: 5\nbatch-size: 4\nmax_steps: 1\n")
    ck = tmp_path / "ck"
    code = main(
        [
            "train",
            "--config",
            str(cfg_file),
            "--epochs",
            "1",
            "--timesteps",
            "4",
            "--bptt-window",
            "2",
            "--n-samples",
            "16",
            "--checkpoint-dir",
            str(ck),
            "--base-channels",
            "8",
            "--encoder-levels",
            "2",
            "--modes",
            "4",
            "--afno-blocks",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    args = load_checkpoint(ck / "step_1.pt")["args"]
    assert args["epochs"] == 1 and args["batch_size"] == 4 and args["timesteps"] == 4


def test_val_every_validates_every_nth_and_the_last_epoch_and_changes_no_weight(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str]
) -> None:
    every = train(run_args(tiny_dataset, tmp_path / "every", epochs=4, save_every=0))
    train_log.clear()
    sparse = train(run_args(tiny_dataset, tmp_path / "sparse", epochs=4, save_every=0, val_every=3))
    text = "\n".join(train_log)
    header = next(line for line in train_log if line.startswith("noa train: fresh run"))
    assert header.endswith("; validation every 3 epochs and after the last")
    assert text.count("  Val:   total=") == 2 and text.count("  Val:   not this epoch (--val-every 3)") == 2
    records = [json.loads(l) for l in (tmp_path / "sparse" / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in records if r["kind"] == "epoch" and r["val_total"] is not None]
    assert validated == [3, 4]  # the third, then the last
    assert sparse.history["val_loss"][:2] == [None, None]
    assert sparse.history["val_loss"][2:] == every.history["val_loss"][2:]  # validation leaves training alone
    best = load_checkpoint(tmp_path / "sparse" / "best_model.pt")
    assert best["best_val_loss"] == min(every.history["val_loss"][2:])
    last = [load_checkpoint(tmp_path / run / "epoch_4.pt")["model_state_dict"] for run in ("every", "sparse")]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])


def test_early_stopping_counts_validations_under_val_every(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    constant = {"total": 1.0, "traj": 1.0, "commit": None, "latent": None}
    monkeypatch.setattr(loop_module.Trainer, "validate", lambda self: dict(constant))
    train(run_args(tiny_dataset, tmp_path / "ck", epochs=6, save_every=0, val_every=2, early_stop_patience=1))
    # epoch 2 validates (a first best), epochs 1 and 3 do not count, epoch 4 does not improve: stop
    assert sorted(p.name for p in (tmp_path / "ck").glob("epoch_*.pt")) == [f"epoch_{n}.pt" for n in range(1, 5)]
    assert "Early stopping: no validation improvement for 1 validation" in train_log


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bptt_window": 16}, "--bptt-window 16 is larger than --timesteps 8"),
        ({"latent_sample_steps": 0}, "--latent-sample-steps"),
        ({"enable_latent_loss": True}, "--enable-latent-loss needs --vqvae-path"),
        ({"lr": -1.0}, "--lr must be positive"),
        ({"batch_size": 64}, "larger than the 14 training samples"),
        ({"timesteps": 9, "bptt_window": 3}, r"T: --timesteps gives T=9, more than dataset .*'s T=8"),
        ({"n_samples": 500}, "more than the 40 valid samples"),
        ({"base_channels": 8, "encoder_levels": 5}, "the model's 5 encoder levels need a multiple of 32"),
        ({"val_every": 0}, "--val-every must be >= 1"),
        ({"backbone": "hypernet"}, "hypernet"),
        ({"backbone": "hybrid", "generated_channels": 0}, "generated_channels must be an integer >= 1, got 0"),
        ({"backbone": "hybrid", "generated_kernel": 4}, "generated_kernel must be odd"),
        ({"backbone": "hybrid", "generated_banks": -2}, "generated_banks must be an integer >= 1, got -2"),
        ({"preset": "quikstart"}, r"unknown --preset 'quikstart' \(did you mean quickstart\?\)"),
    ],
)
def test_bad_flags_fail_before_any_work(tiny_dataset: Path, tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        train(run_args(tiny_dataset, tmp_path / "ck", **overrides))
    assert not (tmp_path / "ck").exists()


def test_tokenizer_trained_on_another_horizon_is_refused(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    with pytest.raises(NoaError, match=r"T: tokenizer .* was trained on T=8, --timesteps gives T=4"):
        train(run_args(tiny_dataset, tmp_path / "ck", vqvae_path=str(tiny_tokenizer), timesteps=4))


def test_nan_gradients_skip_the_update_then_stop(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_log: list[str]
) -> None:
    real = loop_module.train_batch
    calls = {"n": 0}

    def poisoned(obj, ic, params, target, teacher_forced):
        calls["n"] += 1
        losses = real(obj, ic, params, target, teacher_forced)
        if calls["n"] >= 2:
            next(obj.model.parameters()).grad.fill_(float("nan"))
        return losses

    monkeypatch.setattr(loop_module, "train_batch", poisoned)
    lines = train_log
    lines.clear()  # only what follows
    trainer = loop_module.Trainer(
        settle(run_args(tiny_dataset, tmp_path / "ck", max_nan_skips=3, epochs=3, one_step_steps=0))
    )
    weights: list[dict] = []
    real_update = trainer._update

    def spy(losses):
        applied = real_update(losses)
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return applied

    trainer._update = spy
    with pytest.raises(NoaError, match="3 consecutive batches with NaN/Inf gradients"):
        trainer.fit()
    assert "Warning: NaN/Inf gradients at batch 2, skipping update" in lines
    assert sum("skipping update" in l for l in lines) == 3
    assert all(torch.equal(weights[0][k], weights[-1][k]) for k in weights[0])  # no update after batch 1
    assert trainer.state.progress.nan_skips_total == 3


def _open_handles(trainer: loop_module.Trainer) -> list[str]:
    handles = {"train HDF5": trainer.train_source._file, "val HDF5": trainer.val_source._file}
    still = [name for name, f in handles.items() if f is not None]
    if trainer._metrics is not None and not trainer._metrics.closed:
        still.append("metrics.jsonl")
    if trainer._tb is not None and trainer._tb.all_writers is not None:
        still.append("TensorBoard")
    return still


@pytest.mark.parametrize("ending", ["finished", "bug", "nan_stop", "max_steps"])
def test_fit_closes_every_handle_on_every_exit(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    real = loop_module.train_batch
    calls = {"n": 0}

    def faulty(obj, ic, params, target, teacher_forced):
        calls["n"] += 1
        losses = real(obj, ic, params, target, teacher_forced)
        if calls["n"] == 2 and ending == "bug":
            raise RuntimeError("a bug in the step")
        if ending == "nan_stop":
            next(obj.model.parameters()).grad.fill_(float("nan"))
        return losses

    monkeypatch.setattr(loop_module, "train_batch", faulty)
    extra = {"max_steps": 2} if ending == "max_steps" else {"max_nan_skips": 2} if ending == "nan_stop" else {}
    trainer = loop_module.Trainer(settle(run_args(tiny_dataset, tmp_path / "ck", tensorboard=True, **extra)))
    if ending in ("bug", "nan_stop"):
        with pytest.raises(RuntimeError if ending == "bug" else NoaError):
            trainer.fit()
    else:
        trainer.fit()
    assert trainer._metrics is not None and trainer._tb is not None  # they were opened ...
    assert _open_handles(trainer) == []  # ... and closed


def test_tensorboard_only_when_asked(tiny_dataset: Path, tmp_path: Path) -> None:
    train(run_args(tiny_dataset, tmp_path / "plain", max_steps=1))
    assert not (tmp_path / "plain" / "tensorboard").exists()
    train(run_args(tiny_dataset, tmp_path / "tb", max_steps=1, tensorboard=True))
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_settle_gives_a_typed_config_with_the_model_nested(tiny_dataset: Path, tmp_path: Path) -> None:
    run = settle(run_args(tiny_dataset, tmp_path / "ck", base_channels=16))
    cfg = run.config
    assert cfg.model.base_channels == 16 and cfg.model.channels == run.data.info.channels
    assert cfg.model.param_dim == run.data.info.space.size
    assert cfg.flags()["base_channels"] == 16 and "model" not in cfg.flags()
    assert run.start.kind == "fresh" and len(run.data.split.train) == 14 and not (tmp_path / "ck").exists()


def test_t_and_the_window_follow_the_data_unless_given(
    tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    bare = {k: v for k, v in run_args(tiny_dataset, tmp_path / "ck").items() if k not in ("timesteps", "bptt_window")}
    cfg = settle(bare).config
    assert (cfg.timesteps, cfg.bptt_window) == (8, 8)  # the dataset's T; the default window 32 cut to it
    cfg = settle({**bare, "vqvae_path": str(tiny_tokenizer), "enable_latent_loss": True}).config
    assert (cfg.timesteps, cfg.bptt_window) == (8, 8)  # the tokenizer's T
    assert (
        settle({**bare, "timesteps": 4}).config.bptt_window,
        settle({**bare, "bptt_window": 3}).config.timesteps,
    ) == (4, 8)


def test_train_help_says_which_defaults_follow_the_data(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the tokenizer's T with --vqvae-path, else the dataset's)" in text
    assert "(default: 32, or T when T is shorter)" in text
    assert "(default: never)" in text and "(default: None)" not in text


def test_every_default_that_follows_the_data_is_set_in_one_place() -> None:
    """config.DATA_DEFAULTS are all decided by settle's _follow_the_data (not one here, one there)."""
    from types import SimpleNamespace

    from noa.train import config as flags_module
    from noa.train.settle import _follow_the_data

    values = flags_module.resolve_flags({"epochs": 3}, None)
    _follow_the_data(values, {"epochs": 3}, {}, SimpleNamespace(timesteps=8), lambda v: 7, None)  # type: ignore[arg-type]
    assert {key: values[key] for key in flags_module.DATA_DEFAULTS} == {
        "timesteps": 8,
        "bptt_window": 8,
        "one_step_steps": 3 * 7 // 2,
        "warmup_steps": 3 * 7 // 10,
    }


def test_settle_opens_the_dataset_once(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from noa.data import h5

    opened: list[str] = []
    real_file = h5.h5py.File

    def counting(path, *a, **k):
        opened.append(str(path))
        return real_file(path, *a, **k)

    monkeypatch.setattr(h5.h5py, "File", counting)
    loop_module.Trainer(settle(run_args(tiny_dataset, tmp_path / "ck")))
    assert opened == [str(tiny_dataset)]


@pytest.mark.parametrize(
    "line, message",
    [
        ("epochs: ten", "epochs must be an integer"),
        ("lr: [1]", "lr must be a number"),
        ("enable_latent_loss: 1", "enable_latent_loss must be true or false"),
    ],
)
def test_a_config_file_value_of_the_wrong_type_is_refused(tmp_path: Path, line: str, message: str) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(line + "\n")
    with pytest.raises(NoaError, match=message):
        settle({"config": str(cfg_file)})


@pytest.mark.parametrize("flag", ["--lr", "--lambda-commit"])
def test_non_finite_flags_are_refused(
    tiny_dataset: Path, tmp_path: Path, flag: str, capsys: pytest.CaptureFixture
) -> None:
    code = main(["train", "--dataset", str(tiny_dataset), flag, "inf", "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 2 and "must be finite" in capsys.readouterr().err


def test_python_dash_m_noa_is_the_noa_command() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "noa", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--no-enable-latent-loss" in out and "--tensorboard" in out


@pytest.mark.parametrize("terminal", ["stdout", "stderr"])
def test_the_progress_bar_follows_stderr_where_it_is_drawn(
    tiny_dataset: Path, tmp_path: Path, train_log: list[str], monkeypatch: pytest.MonkeyPatch, terminal: str
) -> None:
    """`noa train 2>log` on a terminal: the bar (drawn on stderr) would fill the log with carriage
    returns and drop the per-batch lines; only a terminal on stderr gets the bar."""
    import sys

    for name in ("stdout", "stderr"):
        monkeypatch.setattr(getattr(sys, name), "isatty", lambda on=(name == terminal): on)
    train(run_args(tiny_dataset, tmp_path / "ck", max_steps=2))
    lines = [line for line in train_log if re.search(r"\] (one-step )?loss=", line)]
    assert (len(lines) == 2) == (terminal == "stdout"), lines
