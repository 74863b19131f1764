"""`noa vqvae train`: fit the tokenizer on a dataset's stored features and save it.

The split is the dataset's valid samples cut by a seeded permutation, so the tokenizer's
validation metrics are on rollouts it never saw; normalization statistics come from the
training part only (inside :func:`train_tokenizer`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from noa import outputs
from noa.data import h5
from noa.data.loader import MIN_VAL_SAMPLES, split_rows, usable_rows
from noa.errors import NoaError
from noa.presets import tokenizer_preset
from noa.tokenizer.io import check_output_dir, save_tokenizer
from noa.tokenizer.model import FEATURE_CATEGORIES, TokenizerConfig
from noa.tokenizer.train import evaluate_tokenizer, train_tokenizer

# What `noa vqvae train` trains with where neither a flag nor a --preset says otherwise: the
# production tokenizer's sizes (the "guide" preset names the same values).
DEFAULTS: dict[str, Any] = dict(
    epochs=100, batch_size=128, lr=3e-3, levels=12, codebook_size=64, latent_dim=16, hidden=256, val_split=0.1
)


def tokenizer_settings(preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The training settings of `noa vqvae train`: the defaults < the ``preset``'s values < the
    flags ``given`` (None = not given)."""
    values = {**DEFAULTS, **(tokenizer_preset(preset).values if preset else {})}
    values.update({key: value for key, value in given.items() if value is not None})
    return values


def train_tokenizer_on_dataset(
    dataset: str | Path,
    out: str | Path,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    levels: int | None = None,
    codebook_size: int | None = None,
    latent_dim: int | None = None,
    hidden: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    val_split: float | None = None,
    n_samples: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    preset: str | None = None,
) -> dict:
    """Train, evaluate on the held-out split and write the tokenizer directory; returns metrics
    (which record the ``preset`` the settings came from, if any). A setting left None takes the
    ``preset``'s value, else :data:`DEFAULTS`' (:func:`tokenizer_settings`)."""
    out = Path(out)
    given = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        levels=levels,
        codebook_size=codebook_size,
        latent_dim=latent_dim,
        hidden=hidden,
        val_split=val_split,
    )
    settings = tokenizer_settings(preset, given)
    epochs, batch_size, lr, val_split = (settings[k] for k in ("epochs", "batch_size", "lr", "val_split"))
    if epochs < 1 or batch_size < 1 or not (math.isfinite(lr) and lr > 0):
        raise NoaError(
            f"--epochs and --batch-size must be >= 1 and --lr a finite positive number; got {epochs}, {batch_size}, {lr}"
        )
    if not math.isfinite(val_split):
        raise NoaError(f"--val-split must be a finite number in [0, 1); got {val_split}")
    check_output_dir(out, overwrite=overwrite)
    with outputs.exclusive(out, "tokenizer directory"):
        return _train_and_save(
            dataset,
            out,
            **settings,
            seed=seed,
            device=device,
            n_samples=n_samples,
            overwrite=overwrite,
            log=log,
            progress=progress,
            preset=preset,
        )


def _train_and_save(
    dataset: str | Path,
    out: Path,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    levels: int,
    codebook_size: int,
    latent_dim: int,
    hidden: int,
    seed: int,
    device: str,
    val_split: float,
    n_samples: int | None,
    overwrite: bool,
    log: Callable[[str], None],
    progress: bool,
    preset: str | None,
) -> dict:
    rows = usable_rows(dataset, n_samples)
    split = split_rows(rows, val_split, seed)
    if len(split.val) == 0:
        raise NoaError("the validation split is empty; raise --val-split or use more samples")
    with h5.open_dataset(dataset) as f:
        info = h5.read_info(f)
        names = h5.feature_names(f)
        train = h5.read_features(f, split.train)
        val = h5.read_features(f, split.val)
    config = TokenizerConfig(
        feature_dims={category: len(names[category]) for category in FEATURE_CATEGORIES},
        feature_names=names,
        timesteps=info.timesteps,
        channels=info.channels,
        grid=info.grid,
        latent_dim=latent_dim,
        levels=levels,
        codebook_size=codebook_size,
        hidden=hidden,
    )
    _check_memory(config, len(split.train) + len(split.val), batch_size)
    with_preset = f" (preset {preset})" if preset else ""
    log(f"Training tokenizer{with_preset} on {len(split.train)} samples (validation {len(split.val)}) of {dataset}")
    for line in _start_warnings(len(split.train), len(split.val), codebook_size):
        log(line)
    start = time.perf_counter()
    model, history = train_tokenizer(
        train,
        val,
        config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        log=log,
        progress=progress,
    )
    metrics = evaluate_tokenizer(model, val)
    low = _low_utilization(metrics, len(split.val), codebook_size)
    if low:
        log(low)
    metrics["train_seconds"] = time.perf_counter() - start
    metrics["dataset"] = str(dataset)
    metrics["dataset_fingerprint"] = h5.fingerprint(dataset)
    metrics["preset"] = preset
    save_tokenizer(model, out, history, metrics, overwrite=overwrite)
    return metrics


# Below this mean held-out utilization most codes go unused: the codebooks are too large for the data.
LOW_UTILIZATION = 0.25


def _start_warnings(n_train: int, n_val: int, codebook_size: int) -> list[str]:
    """Sizes that leave the tokenizer's codebooks or its held-out metrics meaningless, said before training."""
    lines = []
    if n_val < MIN_VAL_SAMPLES:
        lines.append(
            f"Warning: only {n_val} validation sample{'s' if n_val != 1 else ''}: the held-out metrics (metrics.json) follow "
            f"noise; raise --val-split or --n-samples for at least {MIN_VAL_SAMPLES}"
        )
    if n_train < codebook_size:
        fits = max(2, 2 ** int(math.log2(max(1, n_train // 4))))
        lines.append(
            f"Warning: {n_train} training samples for codebooks of {codebook_size} codes: each codebook can use at most "
            f"{n_train / codebook_size:.0%} of its codes; use more samples or a smaller --codebook-size (e.g. {fits})"
        )
    return lines


def _low_utilization(metrics: dict, n_val: int, codebook_size: int) -> str | None:
    """A warning when the trained codebooks use few of their codes on held-out data, else None."""
    codebooks = metrics["codebooks"]
    mean = sum(c["utilization"] for c in codebooks) / len(codebooks)
    if mean >= LOW_UTILIZATION:
        return None
    cap = f" ({n_val} held-out samples can show at most {n_val / codebook_size:.0%})" if n_val < codebook_size else ""
    return (
        f"Warning: held-out codebook utilization averages {mean:.0%}{cap}: most codes go unused; a smaller --codebook-size "
        f"or fewer --levels, or more samples, make the tokens more informative"
    )


def _check_memory(config: TokenizerConfig, n_samples: int, batch_size: int) -> None:
    """Refuse up front a tokenizer too large for this machine (a rough estimate: weights, their
    gradients and two Adam moments, the codebooks, and a batch's activations)."""
    widths = [config.feature_dims[category] for category in FEATURE_CATEGORIES]
    per_category = [
        2 * (d * config.hidden + 2 * config.hidden * config.hidden + config.hidden * config.latent_dim * config.levels)
        for d in widths
    ]
    params = sum(per_category) + len(FEATURE_CATEGORIES) * config.levels * config.codebook_size * config.latent_dim
    activations = (
        8
        * min(batch_size, n_samples)
        * (
            sum(widths)
            + len(FEATURE_CATEGORIES) * (config.hidden + config.levels * (config.latent_dim + config.codebook_size))
        )
    )
    outputs.check_memory(
        4 * (4 * params + activations),
        f"a tokenizer with --hidden {config.hidden}, --latent-dim {config.latent_dim}, --levels {config.levels} and --codebook-size {config.codebook_size}",
        "lower them (or --batch-size)",
    )
