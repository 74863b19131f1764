"""Training configuration: the guide's flags, typed, with one rule of precedence.

``TrainConfig`` is what a run is: the training settings plus the model's architecture nested as
a :class:`~noa.model.UAFNOConfig` (one source of truth; the flags ``--base-channels`` and
friends are views of it). Values come, lowest precedence first, from the defaults, a
``--preset`` (:mod:`noa.presets`; never applied to a resume), the checkpoint's ``args`` (a resume inherits the run's settings so the guide's short resume
commands work; a fine-tune inherits the objective, not the data or budget), a ``--config`` file
(YAML or JSON whose keys are flag names) and the command line. :func:`resolve_flags` is the
only place that order is decided.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from noa.errors import NoaError
from noa.model import UAFNOConfig
from noa.model.uafno import BACKBONES
from noa.presets import TRAIN_PRESETS
from noa.presets import help_text as preset_help
from noa.train.execution import PRECISIONS

# Flags that are views of the nested model config.
GENERATED_SIZES = ("generated_channels", "generated_layers", "generated_kernel", "generated_banks")
ARCHITECTURE = ("base_channels", "encoder_levels", "modes", "afno_blocks", "backbone", *GENERATED_SIZES)
# Flags about this invocation, never inherited from a checkpoint.
# How fast the step runs is about this machine, not the run (precision is inherited: a resume
# is exact within one precision).
PER_RUN = (
    "resume",
    "init_from",
    "device",
    "max_steps",
    "overwrite",
    "new_ok",
    "compile",
    "cuda_graphs",
    "activation_checkpointing",
    # The tokenizer's class is imported only when the user names it, never from a checkpoint:
    # a resume or fine-tune that keeps a tokenizer of another class is told which to pass.
    "vqvae_class",
)
# Flags a resume must not change: they define the data split, the batches, the target and the
# learning-rate schedule. A different dataset makes the resume a fine-tune instead.
# (``--batch-size`` is per rank: a resume keeps the global batch instead, see settle.py.)
RESUME_LOCKED = (
    "n_samples",
    "val_split",
    "seed",
    "timesteps",
    "bptt_window",
    "n_realizations",
    "lr",
    "warmup_steps",
    "lr_schedule",
    "teacher_forcing_steps",
    "one_step_steps",
    "one_step_states",
)
# What a checkpoint written before a flag existed ran with (a resume of such a run keeps it).
LEGACY_ARGS = {"one_step_steps": 0, "rule_head": False}
# Flags a fine-tune does not inherit from the pretrained run: they describe that run's data,
# budget and output, not the model or its objective. (T follows the new data: see settle.py.)
NOT_INHERITED_BY_FINETUNE = (
    "preset",
    "dataset",
    "n_samples",
    "timesteps",
    "checkpoint_dir",
    "epochs",
    "lr",
    "early_stop_patience",
    "val_every",
    "one_step_steps",
    "warmup_steps",
)
# What a fine-tune starts with unless a flag says otherwise: it starts from a model that has
# already learned the one-step map, so no one-step phase (--one-step-steps N asks for one).
FINETUNE_DEFAULTS = {"one_step_steps": 0}
# The objective a fine-tune keeps from the pretrained run unless flags change it (with the
# architecture, ARCHITECTURE): the losses, their tokenizer and weights, the projector, the target.
OBJECTIVE = (
    "vqvae_path",
    "lambda_commit",
    "enable_latent_loss",
    "lambda_latent",
    "latent_sample_steps",
    "projector_hidden",
    "n_realizations",
)
# Defaults that follow the data when a flag is neither given nor inherited: --help says so.
DATA_DEFAULTS = {
    "timesteps": "the tokenizer's T with --vqvae-path, else the dataset's",
    "bptt_window": "32, or T when T is shorter",
    "one_step_steps": "half of the run's batches; none for a fine-tune",
    "warmup_steps": "500, or a tenth of the run's batches when that is fewer",
}
# The guide's warmup: a run of fewer than ten times as many batches warms up for a tenth of them.
GUIDE_WARMUP = 500


@dataclass
class TrainConfig:
    """Everything that defines a training run (``model`` holds the architecture)."""

    dataset: str = "datasets/100k_full_features.h5"
    n_samples: int | None = None
    epochs: int = 10
    batch_size: int = 4
    lr: float = 3e-4
    bptt_window: int = 32
    teacher_forcing_steps: int = 0
    one_step_steps: int | None = None  # settle.py resolves None to half of the run's batches
    one_step_states: int | None = None  # states per realization in a one-step batch (None: all T)
    rule_head: bool = True
    timesteps: int = 256
    vqvae_path: str | None = None
    vqvae_class: str | None = None  # MODULE_OR_FILE:CLASS of a tokenizer not noa's own
    lambda_commit: float = 0.5
    enable_latent_loss: bool = False
    lambda_latent: float = 0.5
    latent_sample_steps: int = 3
    lr_schedule: str = "cosine"
    warmup_steps: int = GUIDE_WARMUP  # settle.py lowers it for a short run unless given
    checkpoint_dir: str = "checkpoints/noa"
    save_every: int = 200
    early_stop_patience: int | None = None
    val_every: int = 1
    keep_last: int | None = None
    projector_hidden: int = 512
    val_split: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False
    activation_checkpointing: bool = False
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    n_realizations: int = 1
    max_nan_skips: int = 10
    log_every: int = 1
    num_workers: int = 0
    tensorboard: bool = False
    resume: str | None = None
    init_from: str | None = None
    max_steps: int | None = None
    overwrite: bool = False
    new_ok: bool = False
    preset: str | None = None  # the --preset the run started from (noa.presets), recorded for the record
    model: UAFNOConfig = field(default_factory=UAFNOConfig)

    def flags(self) -> dict[str, Any]:
        """The flat flag view (flag name -> value), as stored in a checkpoint's ``args``."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        flat.update({name: getattr(self.model, name) for name in ARCHITECTURE})
        return flat

    @classmethod
    def from_flags(cls, values: dict[str, Any], model: UAFNOConfig | None = None) -> TrainConfig:
        """A config from flag values; the architecture flags go into ``model`` (one left at
        None keeps ``model``'s value: the generated stack's sizes follow the dataset's family)."""
        own = {k: v for k, v in values.items() if k not in ARCHITECTURE}
        base = model or UAFNOConfig()
        arch = {k: values[k] for k in ARCHITECTURE if values.get(k) is not None}
        return cls(**own, model=replace(base, **arch))


_DEFAULTS = TrainConfig().flags()
# (parser type, may be None, help)
_FLAGS: dict[str, tuple[type, bool, str]] = {
    "dataset": (str, False, "HDF5 dataset made by `noa data generate`"),
    "n_samples": (int, True, "use the first N valid samples (train + validation)"),
    "epochs": (int, False, "training epochs (total, also when resuming; a change re-plans the LR decay)"),
    "batch_size": (
        int,
        False,
        "samples per batch on each rank (the global batch is this times the number of torchrun ranks)",
    ),
    "lr": (float, False, "peak learning rate"),
    "bptt_window": (
        int,
        False,
        "truncated-BPTT window in steps; the state is detached between windows; a window longer than T is refused",
    ),
    "teacher_forcing_steps": (
        int,
        False,
        "for the first N batches of the rollout phase (counted after --one-step-steps) every BPTT window starts from "
        "the CNO's state instead of the NOA's own (teacher forcing; validation always scores free rollouts)",
    ),
    "one_step_steps": (
        int,
        True,
        "for the first N batches the NOA learns the one-step map: every state of every CNO realization is advanced one "
        "step and scored against the CNO's noise-free step from it, the error divided by the rule's scale (dt or 1-α, "
        "with --rule-head) so every operator counts at unit scale, --batch-size states per forward pass (a rollout "
        "step's memory); then rollouts under L_total (validation always scores free rollouts)",
    ),
    "one_step_states": (
        int,
        True,
        "in the one-step phase, advance K of each realization's T states instead of all of them, drawn afresh for "
        "every epoch and sample from the run's --seed (so a batch costs K/T as much and the phase sees T/K times "
        "more operators for the same compute: the states of one rollout are alike)",
    ),
    "rule_head": (
        bool,
        False,
        "the model's head applies the dataset family's update rule, x + dt·f or α·x + (1-α)·f, so f learns the "
        "operator at unit scale; --no-rule-head: x + f. A resume or fine-tune keeps its checkpoint's head",
    ),
    "timesteps": (int, False, "rollout length T (at most the dataset's)"),
    "vqvae_path": (str, True, "frozen tokenizer directory (enables L_commit)"),
    "vqvae_class": (
        str,
        True,
        "the class that loads --vqvae-path when another program wrote it, as MODULE_OR_FILE:CLASS (e.g. "
        "examples/custom_tokenizer.py:PCATokenizer); it must meet noa.TokenizerProtocol (docs/api.md). Never taken "
        "from a checkpoint: a resume names it again",
    ),
    "lambda_commit": (float, False, "weight of L_commit"),
    "enable_latent_loss": (
        bool,
        False,
        "enable L_latent (needs --vqvae-path); --no-enable-latent-loss turns it off, e.g. at a resume",
    ),
    "lambda_latent": (float, False, "weight of L_latent"),
    "latent_sample_steps": (
        int,
        False,
        "timesteps sampled for L_latent: K evenly spaced (3 = first, middle, last), -1 = all",
    ),
    "lr_schedule": (str, False, "cosine (linear warmup from 0.1·lr, then cosine to 0) or constant (warmup, then lr)"),
    "warmup_steps": (int, False, "warmup batches"),
    "checkpoint_dir": (
        str,
        False,
        "where checkpoints, metrics.jsonl and TensorBoard events go; left out, a new run that finds "
        "the default taken writes to its first free sibling (noa-2, …) and a resume writes beside its checkpoint",
    ),
    "save_every": (int, False, "write step_N.pt every N batches (0 = never)"),
    "early_stop_patience": (int, True, "stop after N validations without improvement"),
    "val_every": (
        int,
        False,
        "validate every N epochs and after the last (a validation rolls out every held-out sample: "
        "on a CPU it can cost a quarter of a short epoch); best_model.pt and early stopping see only validated epochs",
    ),
    "keep_last": (int, True, "keep only the newest K step_N.pt files (epoch and best files stay)"),
    "base_channels": (int, False, "U-AFNO base channels"),
    "encoder_levels": (int, False, "U-Net encoder levels"),
    "modes": (int, False, "Fourier modes kept in the AFNO blocks"),
    "afno_blocks": (int, False, "AFNO blocks at the bottleneck"),
    "backbone": (
        str,
        False,
        "what computes the NOA's f: uafno (the θ-conditioned U-AFNO), hybrid (a θ-generated full-resolution conv "
        "stack, weights mixed per θ from learned banks, added to the U-AFNO's f) or generated (that stack alone: no "
        "bottleneck, so no L_latent)",
    ),
    "generated_channels": (int, True, "hidden channels of the generated stack (hybrid, generated)"),
    "generated_layers": (int, True, "conv layers of the generated stack (hybrid, generated)"),
    "generated_kernel": (int, True, "depthwise kernel width of the generated stack, odd (hybrid, generated)"),
    "generated_banks": (int, False, "weight banks the generated stack mixes per θ (hybrid, generated)"),
    "projector_hidden": (int, False, "hidden width of the latent projector"),
    "val_split": (float, False, "fraction of samples held out for validation"),
    "seed": (int, False, "seed of the split, data order and initialisation"),
    "device": (str, False, "cpu, cuda, cuda:N or auto"),
    "precision": (
        str,
        False,
        "auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16 (autocast; the state, FFTs and losses stay float32)",
    ),
    "compile": (bool, False, "torch.compile the NOA step (one graph; compiling takes minutes at the guide's widths)"),
    "cuda_graphs": (bool, False, "replay the compiled step as CUDA graphs (needs --compile and CUDA; one process)"),
    "activation_checkpointing": (
        bool,
        False,
        "recompute each step's activations in the backward pass: less memory per rollout window, about one more "
        "forward pass (the one-step phase back-propagates one step at a time and runs without it)",
    ),
    "weight_decay": (float, False, "AdamW weight decay"),
    "grad_clip": (float, False, "clip the global gradient norm to this (0 = off)"),
    "n_realizations": (
        int,
        False,
        "CNO realizations per sample; the rollouts' target is their mean, the one-step phase takes each as a sample",
    ),
    "max_nan_skips": (int, False, "stop after this many consecutive non-finite updates"),
    "log_every": (int, False, "print a batch line every N batches"),
    "num_workers": (
        int,
        False,
        "DataLoader worker processes reading the dataset (each opens the HDF5 file itself); 0 = read in the training process",
    ),
    "tensorboard": (
        bool,
        False,
        "also write TensorBoard events to --checkpoint-dir/tensorboard (needs the tensorboard package)",
    ),
    "resume": (str, True, "checkpoint to resume from, or 'auto' for the newest intact one in --checkpoint-dir"),
    "init_from": (
        str,
        True,
        "fine-tune from a checkpoint: its model and projector weights, architecture and objective (tokenizer, losses, "
        "λs; flags change them), with a fresh optimizer, LR schedule and epoch count",
    ),
    "max_steps": (int, True, "stop after this many batches in this invocation (for tests and smoke runs)"),
    "overwrite": (bool, False, "start a fresh run in a --checkpoint-dir that already holds checkpoints, deleting them"),
    "new_ok": (
        bool,
        False,
        "with --resume auto: start a new run in a --checkpoint-dir that does not exist even when a run of a close "
        "name is beside it (without it, that is refused as a likely typo: 'did you mean …?')",
    ),
    "preset": (
        str,
        True,
        preset_help(
            TRAIN_PRESETS,
            "Flags given and a --config file override its values, and what a resume or a fine-tune inherits from "
            "its checkpoint wins over it. The run records its name",
        ),
    ),
}
assert set(_FLAGS) == set(_DEFAULTS), "every TrainConfig field needs a flag declaration"


_CHOICES = {"lr_schedule": ("cosine", "constant"), "precision": PRECISIONS, "backbone": BACKBONES}


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training flag, with no argparse defaults: absence must be detectable for merging."""
    parser.add_argument(
        "--config",
        default=None,
        help="YAML or JSON file whose keys are flag names; the command line overrides it (default: none)",
    )
    for key, (kind, _, help_text) in _FLAGS.items():
        text = f"{help_text} (default: {_default_text(key)})"
        if kind is bool:
            action: Any = "store_true" if key in ("overwrite", "new_ok") else argparse.BooleanOptionalAction
            parser.add_argument(flag_name(key), action=action, default=None, help=text)
            continue
        extra: dict[str, Any] = {"choices": list(_CHOICES[key])} if key in _CHOICES else {}
        parser.add_argument(flag_name(key), type=kind, default=None, help=text, **extra)


# How --help writes the defaults that are not plain values.
_NONE_MEANS = {
    "n_samples": "all valid",
    "early_stop_patience": "never",
    "keep_last": "all",
    "vqvae_path": "none",
    "vqvae_class": "noa's own tokenizer",
    "resume": "none: a fresh run",
    "init_from": "none",
    "max_steps": "no limit",
    "one_step_states": "all T",
    "preset": "none",
    "generated_channels": "the dataset family's largest",
    "generated_layers": "the dataset family's largest",
    "generated_kernel": "the dataset family's largest",
}


def _default_text(key: str) -> str:
    if key in DATA_DEFAULTS:
        return DATA_DEFAULTS[key]
    if _DEFAULTS[key] is None:
        return _NONE_MEANS[key]
    value = _DEFAULTS[key]
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def coerce(key: str, value: Any, source: str) -> Any:
    """A config-file value checked against its flag's type (ints are accepted for floats)."""
    kind, optional, _ = _FLAGS[key]
    if value is None and optional:
        return None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise NoaError(
            f"{source}: {key} must be {'a number' if kind is float else 'an integer' if kind is int else 'true or false' if kind is bool else 'a string'}; got {value!r}"
        )
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Keys of a YAML/JSON config file, normalised to field names and type-checked."""
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
    out = {str(k).lstrip("-").replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - set(_FLAGS))
    if unknown:
        raise NoaError(f"--config {p} has unknown keys: {', '.join(_with_guess(k) for k in unknown)}")
    return {k: coerce(k, v, f"--config {p}") for k, v in out.items()}


def _with_guess(key: str) -> str:
    """An unknown config key, with the flag name it is closest to (as the command line does for flags)."""
    close = difflib.get_close_matches(key, list(_FLAGS), n=1, cutoff=0.75)
    return f"{key} (did you mean {close[0]}?)" if close else key


def requested_flags(cli: dict[str, Any], file_values: dict[str, Any]) -> dict[str, Any]:
    """What the user asked for in this invocation: the config file, overridden by the command line."""
    return {**file_values, **{k: v for k, v in cli.items() if v is not None and k in _FLAGS}}


def resolve_flags(
    explicit: dict[str, Any], inherited: dict[str, Any] | None, preset: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults < a ``preset``'s values < checkpoint ``inherited`` args (less per-run flags) < ``explicit`` flags."""
    values = dict(_DEFAULTS)
    values.update(preset or {})
    if inherited:
        values.update({k: v for k, v in inherited.items() if k in _FLAGS and k not in PER_RUN})
    values.update(explicit)
    return values


def validate(cfg: TrainConfig) -> None:
    """Flag errors that need no file access; one message, before any work."""
    finite = [
        k
        for k in ("lr", "lambda_commit", "lambda_latent", "val_split", "weight_decay", "grad_clip")
        if not math.isfinite(getattr(cfg, k))
    ]
    if finite:
        raise NoaError(f"{', '.join(flag_name(k) for k in finite)} must be finite numbers")
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
        (
            cfg.latent_sample_steps == -1 or 1 <= cfg.latent_sample_steps <= cfg.timesteps,
            f"--latent-sample-steps must be -1 (all) or between 1 and --timesteps {cfg.timesteps}; got {cfg.latent_sample_steps}",
        ),
        (
            not cfg.enable_latent_loss or cfg.vqvae_path is not None,
            "--enable-latent-loss needs --vqvae-path (L_latent aligns with the tokenizer's latents)",
        ),
        (
            not cfg.enable_latent_loss or cfg.model.uses_uafno,
            "--enable-latent-loss reads the U-AFNO's bottleneck, which --backbone generated does not have; "
            "use --backbone hybrid (the generated stack beside the U-AFNO) or --no-enable-latent-loss",
        ),
        (cfg.lambda_commit >= 0 and cfg.lambda_latent >= 0, "--lambda-commit and --lambda-latent must be >= 0"),
        (cfg.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {cfg.warmup_steps}"),
        (cfg.teacher_forcing_steps >= 0, f"--teacher-forcing-steps must be >= 0; got {cfg.teacher_forcing_steps}"),
        (
            cfg.one_step_steps is None or cfg.one_step_steps >= 0,
            f"--one-step-steps must be >= 0; got {cfg.one_step_steps}",
        ),
        (
            cfg.one_step_states is None or 1 <= cfg.one_step_states <= cfg.timesteps,
            f"--one-step-states must be between 1 and --timesteps {cfg.timesteps} (the states a rollout has); got {cfg.one_step_states}",
        ),
        (cfg.save_every >= 0, f"--save-every must be >= 0; got {cfg.save_every}"),
        (cfg.weight_decay >= 0 and cfg.grad_clip >= 0, "--weight-decay and --grad-clip must be >= 0"),
        (cfg.n_realizations >= 1, f"--n-realizations must be >= 1; got {cfg.n_realizations}"),
        (cfg.early_stop_patience is None or cfg.early_stop_patience >= 1, "--early-stop-patience must be >= 1"),
        (cfg.val_every >= 1, f"--val-every must be >= 1 (1 validates every epoch); got {cfg.val_every}"),
        (cfg.keep_last is None or cfg.keep_last >= 1, "--keep-last must be >= 1"),
        (cfg.max_nan_skips >= 1 and cfg.log_every >= 1, "--max-nan-skips and --log-every must be >= 1"),
        (cfg.max_steps is None or cfg.max_steps >= 0, f"--max-steps must be >= 0; got {cfg.max_steps}"),
        (cfg.num_workers >= 0, f"--num-workers must be >= 0; got {cfg.num_workers}"),
        (cfg.projector_hidden >= 1, f"--projector-hidden must be >= 1; got {cfg.projector_hidden}"),
        (cfg.lr_schedule in ("cosine", "constant"), f"--lr-schedule must be cosine or constant; got {cfg.lr_schedule}"),
        (cfg.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}; got {cfg.precision}"),
    ]
    for ok, message in checks:
        if not ok:
            raise NoaError(message)
