"""`noa train` end to end on a tiny real dataset: flags, logs, checkpoints, NaN handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from noa.cli import main
from noa.errors import NoaError
from noa.train import loop as loop_module
from noa.train.checkpoint import load_checkpoint
from noa.train.loop import train

TINY_MODEL = dict(base_channels=8, encoder_levels=2, modes=4, afno_blocks=1, projector_hidden=16)


def run_args(dataset: Path, ckdir: Path, **kw) -> dict:
    values = dict(
        dataset=str(dataset), n_samples=16, epochs=2, batch_size=4, lr=1e-3, bptt_window=2, timesteps=8,
        warmup_steps=2, checkpoint_dir=str(ckdir), save_every=2, device="cpu", **TINY_MODEL,
    )
    values.update(kw)
    return values


def test_training_logs_checkpoints_and_history(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    args = run_args(tiny_dataset, tmp_path / "ck", vqvae_path=str(tiny_tokenizer), enable_latent_loss=True, lambda_latent=0.5)
    result = train(args, log=lines.append)
    text = "\n".join(lines)
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "  [1/3] loss=" in text and " commit=" in text and " latent=" in text and "s/b" in text
    assert "  Train: total=" in text and "  Val:   total=" in text
    names = sorted(p.name for p in (tmp_path / "ck").glob("*.pt"))
    assert {"epoch_1.pt", "epoch_2.pt", "best_model.pt", "step_2.pt", "step_4.pt", "step_6.pt"} <= set(names)
    ckpt = load_checkpoint(tmp_path / "ck" / "epoch_2.pt")
    for key in ("model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "epoch", "global_step", "history",
                "best_val_loss", "alignment_state", "config", "args", "format_version", "fingerprints"):
        assert key in ckpt, key
    assert ckpt["global_step"] == 6 == result.global_step
    assert {k: ckpt["config"][k] for k in ("base_channels", "encoder_levels", "modes", "afno_blocks")} == {
        "base_channels": 8, "encoder_levels": 2, "modes": 4, "afno_blocks": 1}
    assert len(ckpt["history"]["train_loss"]) == 2 and len(ckpt["history"]["val_loss"]) == 2
    assert ckpt["alignment_state"]["latent_dim"] == 24
    records = [json.loads(l) for l in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train_batch" for r in records) == 6 and sum(r["kind"] == "epoch" for r in records) == 2


def test_config_file_and_command_line_precedence(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: {tiny_dataset}\nepochs: 5\nbatch-size: 4\nmax_steps: 1\n")
    ck = tmp_path / "ck"
    code = main(["train", "--config", str(cfg_file), "--epochs", "1", "--timesteps", "4", "--bptt-window", "2",
                 "--n-samples", "16", "--checkpoint-dir", str(ck), "--base-channels", "8", "--encoder-levels", "2",
                 "--modes", "4", "--afno-blocks", "1", "--device", "cpu"])
    assert code == 0
    args = load_checkpoint(ck / "step_1.pt")["args"]
    assert args["epochs"] == 1 and args["batch_size"] == 4 and args["timesteps"] == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bptt_window": 16}, "--bptt-window 16 is larger than --timesteps 8"),
        ({"latent_sample_steps": 0}, "--latent-sample-steps"),
        ({"enable_latent_loss": True}, "--enable-latent-loss needs --vqvae-path"),
        ({"lr": -1.0}, "--lr must be positive"),
        ({"batch_size": 64}, "larger than the 14 training samples"),
        ({"timesteps": 9, "bptt_window": 3}, "more than the dataset's T=8"),
        ({"n_samples": 500}, "more than the 40 valid samples"),
        ({"base_channels": 8, "encoder_levels": 5}, "divisible"),
    ],
)
def test_bad_flags_fail_before_any_work(tiny_dataset: Path, tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        train(run_args(tiny_dataset, tmp_path / "ck", **overrides), log=lambda _: None)
    assert not (tmp_path / "ck").exists()


def test_tokenizer_trained_on_another_horizon_is_refused(tiny_dataset: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(NoaError, match=r"tokenizer has 8.*has 4"):
        train(run_args(tiny_dataset, tmp_path / "ck", vqvae_path=str(tiny_tokenizer), timesteps=4), log=lambda _: None)


def test_nan_gradients_skip_the_update_then_stop(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop_module.train_batch
    calls = {"n": 0}

    def poisoned(obj, ic, params, target):
        calls["n"] += 1
        losses = real(obj, ic, params, target)
        if calls["n"] >= 2:
            next(obj.model.parameters()).grad.fill_(float("nan"))
        return losses

    monkeypatch.setattr(loop_module, "train_batch", poisoned)
    lines: list[str] = []
    trainer = loop_module.Trainer(run_args(tiny_dataset, tmp_path / "ck", max_nan_skips=3, epochs=3), log=lines.append)
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
    assert trainer.progress.nan_skips_total == 3
