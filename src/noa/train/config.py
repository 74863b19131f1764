"""Training configuration: the guide's flags as plain data, their precedence and validation.

Values come, highest precedence first, from the command line, a ``--config`` file (YAML or
JSON whose keys are the flag names), the resumed checkpoint's ``args`` (so the guide's short
resume commands keep the original run's settings), and the defaults below.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from noa.errors import NoaError


@dataclass
class TrainConfig:
    dataset: str = "datasets/100k_full_features.h5"
    n_samples: int | None = None
    epochs: int = 10
    batch_size: int = 4
    lr: float = 3e-4
    bptt_window: int = 32
    timesteps: int = 256
    vqvae_path: str | None = None
    lambda_commit: float = 0.5
    enable_latent_loss: bool = False
    lambda_latent: float = 0.5
    latent_sample_steps: int = 3
    lr_schedule: str = "cosine"
    warmup_steps: int = 500
    checkpoint_dir: str = "checkpoints/noa"
    save_every: int = 200
    early_stop_patience: int | None = None
    keep_last: int | None = None
    base_channels: int = 32
    encoder_levels: int = 3
    modes: int = 16
    afno_blocks: int = 4
    projector_hidden: int = 512
    val_split: float = 0.1
    seed: int = 0
    device: str = "auto"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    n_realizations: int = 1
    max_nan_skips: int = 10
    log_every: int = 1
    resume: str | None = None
    init_from: str | None = None
    max_steps: int | None = None
    overwrite: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Flags that define the optimisation trajectory: a resume must not change them (a different
# dataset makes the resume a fine-tune instead).
RESUME_LOCKED = ("batch_size", "timesteps", "bptt_window")
# Flags that are about this invocation, never inherited from a checkpoint.
PER_RUN = ("resume", "init_from", "device", "max_steps", "overwrite")
# Flags a fine-tune does not inherit from the pretrained run: they describe that run's data,
# budget and output, not the model or its objective.
NOT_INHERITED_BY_FINETUNE = ("dataset", "n_samples", "checkpoint_dir", "epochs", "lr", "early_stop_patience")

_HELP = {
    "dataset": "HDF5 dataset made by `noa data generate`",
    "n_samples": "use the first N valid samples (train + validation); default all",
    "epochs": "training epochs (total, also when resuming)",
    "batch_size": "samples per batch",
    "lr": "peak learning rate",
    "bptt_window": "truncated-BPTT window in steps; the state is detached between windows",
    "timesteps": "rollout length T (at most the dataset's)",
    "vqvae_path": "frozen tokenizer directory (enables L_commit)",
    "lambda_commit": "weight of L_commit",
    "enable_latent_loss": "enable L_latent (needs --vqvae-path)",
    "lambda_latent": "weight of L_latent",
    "latent_sample_steps": "timesteps sampled for L_latent: K evenly spaced (3 = first, middle, last), -1 = all",
    "lr_schedule": "cosine (linear warmup from 0.1·lr, then cosine to 0) or constant (warmup, then lr)",
    "warmup_steps": "warmup batches",
    "checkpoint_dir": "where checkpoints, metrics.jsonl and TensorBoard events go",
    "save_every": "write step_N.pt every N batches (0 = never)",
    "early_stop_patience": "stop after N epochs without validation improvement (default: never)",
    "keep_last": "keep only the newest K step_N.pt files (epoch and best files stay)",
    "base_channels": "U-AFNO base channels",
    "encoder_levels": "U-Net encoder levels",
    "modes": "Fourier modes kept in the AFNO blocks",
    "afno_blocks": "AFNO blocks at the bottleneck",
    "projector_hidden": "hidden width of the latent projector",
    "val_split": "fraction of samples held out for validation",
    "seed": "seed of the split, data order and initialisation",
    "device": "cpu, cuda, cuda:N or auto",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "clip the global gradient norm to this (0 = off)",
    "n_realizations": "CNO realizations per sample; the target is their mean",
    "max_nan_skips": "stop after this many consecutive non-finite updates",
    "log_every": "print a batch line every N batches",
    "resume": "checkpoint to resume from, or 'auto' for the newest intact one in --checkpoint-dir",
    "init_from": "initialise model and projector weights from a checkpoint, then train afresh (fine-tuning)",
    "max_steps": "stop after this many batches in this invocation (for tests and smoke runs)",
    "overwrite": "start a fresh run in a --checkpoint-dir that already holds checkpoints, deleting them",
    "config": "YAML or JSON file whose keys are flag names; the command line overrides it",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training flag, with no argparse defaults: absence must be detectable for merging."""
    defaults = TrainConfig()
    parser.add_argument("--config", default=None, help=_HELP["config"])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP[f.name]} (default: {default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        extra: dict[str, Any] = {"choices": ["cosine", "constant"]} if f.name == "lr_schedule" else {}
        parser.add_argument(flag, type=kind, default=None, help=help_text, **extra)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Keys of a YAML/JSON config file, normalised to field names; unknown keys are an error."""
    p = Path(path)
    if not p.is_file():
        raise NoaError(f"--config {p} does not exist")
    text = p.read_text()
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise NoaError(f"--config {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first_line}") from err
    if not isinstance(data, dict):
        raise NoaError(f"--config {p} must hold a mapping of flag names to values")
    known = {f.name for f in fields(TrainConfig)}
    out = {str(k).lstrip("-").replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - known)
    if unknown:
        raise NoaError(f"--config {p} has unknown keys: {', '.join(unknown)}")
    return out


def merge(cli: dict[str, Any], file_values: dict[str, Any], checkpoint_args: dict[str, Any] | None) -> tuple[TrainConfig, set[str]]:
    """The effective config and the set of keys the user gave explicitly (CLI or file)."""
    explicit = {k: v for k, v in file_values.items()}
    explicit.update({k: v for k, v in cli.items() if v is not None and k != "config"})
    values = TrainConfig().to_dict()
    known = set(values)
    if checkpoint_args:
        values.update({k: v for k, v in checkpoint_args.items() if k in known and k not in PER_RUN})
    values.update(explicit)
    return TrainConfig(**values), set(explicit)


def validate(cfg: TrainConfig) -> None:
    """Flag errors that need no file access; one message, before any work."""
    checks = [
        (cfg.epochs >= 1, f"--epochs must be >= 1; got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1; got {cfg.batch_size}"),
        (cfg.lr > 0, f"--lr must be positive; got {cfg.lr}"),
        (cfg.timesteps >= 1, f"--timesteps must be >= 1; got {cfg.timesteps}"),
        (cfg.bptt_window >= 1, f"--bptt-window must be >= 1; got {cfg.bptt_window}"),
        (
            cfg.bptt_window <= cfg.timesteps,
            f"--bptt-window {cfg.bptt_window} is larger than --timesteps {cfg.timesteps}; use a window of at most {cfg.timesteps}",
        ),
        (cfg.latent_sample_steps == -1 or 1 <= cfg.latent_sample_steps <= cfg.timesteps,
         f"--latent-sample-steps must be -1 (all) or between 1 and --timesteps {cfg.timesteps}; got {cfg.latent_sample_steps}"),
        (not cfg.enable_latent_loss or cfg.vqvae_path is not None, "--enable-latent-loss needs --vqvae-path (L_latent aligns with the tokenizer's latents)"),
        (cfg.lambda_commit >= 0 and cfg.lambda_latent >= 0, "--lambda-commit and --lambda-latent must be >= 0"),
        (cfg.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {cfg.warmup_steps}"),
        (cfg.save_every >= 0, f"--save-every must be >= 0; got {cfg.save_every}"),
        (cfg.weight_decay >= 0 and cfg.grad_clip >= 0, "--weight-decay and --grad-clip must be >= 0"),
        (cfg.n_realizations >= 1, f"--n-realizations must be >= 1; got {cfg.n_realizations}"),
        (cfg.early_stop_patience is None or cfg.early_stop_patience >= 1, "--early-stop-patience must be >= 1"),
        (cfg.keep_last is None or cfg.keep_last >= 1, "--keep-last must be >= 1"),
        (cfg.max_nan_skips >= 1 and cfg.log_every >= 1, "--max-nan-skips and --log-every must be >= 1"),
        (cfg.lr_schedule in ("cosine", "constant"), f"--lr-schedule must be cosine or constant; got {cfg.lr_schedule}"),
    ]
    for ok, message in checks:
        if not ok:
            raise NoaError(message)
