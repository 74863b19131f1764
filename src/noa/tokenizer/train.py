"""Training and evaluation of the tokenizer.

Everything random is a function of ``seed``: model initialisation and the library's global
RNG draws (k-means init, dead-code restarts) run under :func:`isolated_global_rng` with
derived seeds, and each epoch's data order comes from a generator seeded by (seed, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from noa.errors import NoaError
from noa.seeding import derive_seed, generator
from noa.tokenizer.model import (
    FEATURE_CATEGORIES,
    CategoricalVQVAE,
    TokenizerConfig,
    batches,
    evaluating,
    isolated_global_rng,
    model_device,
    quiet_kmeans_init,
    reconstruction_mse,
)

# k-means initialisation sees at most this many training samples (all of them when fewer).
KMEANS_INIT_SAMPLES = 8192
GRAD_CLIP_NORM = 1.0
WEIGHT_DECAY = 1e-4


def train_tokenizer(
    train: Mapping[str, Tensor],
    val: Mapping[str, Tensor],
    config: TokenizerConfig,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> tuple[CategoricalVQVAE, dict]:
    """Fit a tokenizer on raw ``train`` features; returns (model in eval mode, history).

    Loss per batch = sum over categories of the normalized reconstruction MSE + the
    quantizers' weighted commitment losses. AdamW with a cosine learning-rate decay.
    History holds per-epoch train loss, val loss and val reconstruction MSE ("total").
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise NoaError(f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    _check_finite(train, "training")
    _check_finite(val, "validation")
    n_train = train[FEATURE_CATEGORIES[0]].shape[0]
    if n_train == 0 or val[FEATURE_CATEGORIES[0]].shape[0] == 0:
        raise NoaError("the training and validation splits both need at least one sample")

    with isolated_global_rng(derive_seed(seed, "tokenizer/init"), "cpu"):
        model = CategoricalVQVAE(config)
    model.set_normalization(train)
    model.to(device)
    train = {f: train[f].to(device) for f in FEATURE_CATEGORIES}
    val = {f: val[f].to(device) for f in FEATURE_CATEGORIES}

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(n_train / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch, eta_min=0.1 * lr)

    _init_codebooks(model, train, seed, device)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_recon": []}
    for epoch in tqdm(range(epochs), desc="vqvae", disable=not progress):
        order = torch.randperm(n_train, generator=generator(seed, "tokenizer/order", epoch)).to(device)
        model.train()
        total = 0.0
        with isolated_global_rng(derive_seed(seed, "tokenizer/vq-library", epoch), device):
            for start in range(0, n_train, batch_size):
                idx = order[start : start + batch_size]
                loss = _loss(model, {f: train[f][idx] for f in FEATURE_CATEGORIES})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
                optimizer.step()
                scheduler.step()
                total += loss.item() * idx.numel()
        model.eval()
        history["train_loss"].append(total / n_train)
        history["val_loss"].append(_mean_loss(model, val, batch_size))
        history["val_recon"].append(reconstruction_mse(model, val, batch_size=batch_size)["total"])
        log(
            f"epoch {epoch + 1}/{epochs}  train_loss {history['train_loss'][-1]:.4f}  "
            f"val_loss {history['val_loss'][-1]:.4f}  val_recon {history['val_recon'][-1]:.4f}"
        )
    return model.eval(), history


def _check_finite(features: Mapping[str, Tensor], split: str) -> None:
    missing = [f for f in FEATURE_CATEGORIES if f not in features]
    if missing:
        raise NoaError(f"the {split} features lack the categories {missing}")
    for category in FEATURE_CATEGORIES:
        bad = int((~torch.isfinite(features[category])).sum())
        if bad:
            raise NoaError(
                f"the {split} {category} features contain {bad} NaN/inf values; "
                "drop or fix the invalid samples before training the tokenizer"
            )


def _loss(model: CategoricalVQVAE, batch: Mapping[str, Tensor]) -> Tensor:
    recon, _, commitment = model(batch)
    normed = model.normalize(batch)
    return sum(F.mse_loss(recon[f], normed[f]) for f in FEATURE_CATEGORIES) + commitment


@torch.no_grad()
def _init_codebooks(model: CategoricalVQVAE, train: Mapping[str, Tensor], seed: int, device: str) -> None:
    """k-means-initialise every codebook on (a seeded subset of) the whole training split.

    The library would otherwise initialise on the first batch only. One train-mode pass
    initialises level 0, then each deeper level on the residuals left by the levels above.
    """
    n = train[FEATURE_CATEGORIES[0]].shape[0]
    subset = torch.randperm(n, generator=generator(seed, "tokenizer/kmeans-subset"))[:KMEANS_INIT_SAMPLES]
    model.train()
    with isolated_global_rng(derive_seed(seed, "tokenizer/kmeans"), device), quiet_kmeans_init():
        model({f: train[f][subset.to(device)] for f in FEATURE_CATEGORIES})


def _mean_loss(model: CategoricalVQVAE, features: Mapping[str, Tensor], batch_size: int) -> float:
    """The training loss formula in eval mode, averaged over samples."""
    total, n = 0.0, 0
    with evaluating(model):
        for batch in batches(features, batch_size, model_device(model)):
            size = batch[FEATURE_CATEGORIES[0]].shape[0]
            total += _loss(model, batch).item() * size
            n += size
    return total / n


def codebook_stats(model: CategoricalVQVAE, features: Mapping[str, Tensor], batch_size: int = 1024) -> list[dict]:
    """Per codebook (category-major, level-minor): codes used on ``features``, utilization, perplexity."""
    counts = [torch.zeros(size, dtype=torch.long) for size in model.codebook_sizes]
    with evaluating(model):
        for batch in batches(features, batch_size, model_device(model)):
            _, indices = model.quantize(model.encode(batch))
            for c, idx in zip(counts, indices):
                c += torch.bincount(idx.cpu(), minlength=c.numel())
    stats = []
    for (category, level), c in zip(model.entries, counts):
        used = int((c > 0).sum())
        stats.append(
            {
                "category": category,
                "level": level,
                "size": c.numel(),
                "used": used,
                "utilization": used / c.numel(),
                "perplexity": perplexity(c),
            }
        )
    return stats


def evaluate_tokenizer(model: CategoricalVQVAE, features: Mapping[str, Tensor], batch_size: int = 1024) -> dict:
    """The metrics saved beside a tokenizer: reconstruction MSE and codebook statistics."""
    _check_finite(features, "evaluation")
    return {
        "n_samples": int(features[FEATURE_CATEGORIES[0]].shape[0]),
        "recon_mse": reconstruction_mse(model, features, batch_size),
        "codebooks": codebook_stats(model, features, batch_size),
    }


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a code-usage histogram: the effective number of codes in use."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))
