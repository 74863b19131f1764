"""`noa vqvae train`: fit the tokenizer on a dataset's stored features and save it.

The split is the dataset's valid samples cut by a seeded permutation, so the tokenizer's
validation metrics are on rollouts it never saw; normalization statistics come from the
training part only (inside :func:`train_tokenizer`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from noa.data import h5
from noa.data.loader import split_rows, usable_rows
from noa.errors import NoaError
from noa.tokenizer.io import save_tokenizer
from noa.tokenizer.model import FAMILIES, TokenizerConfig
from noa.tokenizer.train import evaluate_tokenizer, train_tokenizer


def train_tokenizer_on_dataset(
    dataset: str | Path,
    out: str | Path,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 3e-3,
    levels: int = 12,
    codebook_size: int = 64,
    latent_dim: int = 16,
    hidden: int = 256,
    seed: int = 0,
    device: str = "cpu",
    val_split: float = 0.1,
    n_samples: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Train, evaluate on the held-out split and write the tokenizer directory; returns metrics."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise NoaError(f"{out} is not empty; choose a new --out or pass --overwrite to replace it")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise NoaError("--epochs and --batch-size must be >= 1 and --lr positive")
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
        feature_dims={fam: len(names[fam]) for fam in FAMILIES},
        feature_names=names,
        timesteps=info.timesteps,
        channels=info.channels,
        grid=info.grid,
        latent_dim=latent_dim,
        levels=levels,
        codebook_size=codebook_size,
        hidden=hidden,
    )
    log(f"Training tokenizer on {len(split.train)} samples (validation {len(split.val)}) of {dataset}")
    start = time.perf_counter()
    model, history = train_tokenizer(
        train, val, config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, log=log, progress=progress
    )
    metrics = evaluate_tokenizer(model, val)
    metrics["train_seconds"] = time.perf_counter() - start
    metrics["dataset"] = str(dataset)
    metrics["dataset_fingerprint"] = h5.fingerprint(dataset)
    save_tokenizer(model, out, history, metrics, overwrite=overwrite)
    return metrics
