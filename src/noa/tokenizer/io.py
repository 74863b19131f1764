"""The tokenizer's checkpoint directory, and the checks that it fits a dataset.

A directory holds ``config.json`` (format marker + :class:`TokenizerConfig`), ``weights.pt``
(the state dict, normalization buffers included; loads with ``weights_only=True``),
``history.json`` and ``metrics.json`` (the layout: :mod:`noa.tokenizer.directory`; the model
reads its own directory, :meth:`CategoricalVQVAE.load`). The directory is written under a
temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from noa import outputs
from noa.errors import NoaError
from noa.tokenizer.directory import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    HISTORY_FILE,
    METRICS_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    existing_dir,
    read_json,
)
from noa.tokenizer.model import FEATURE_CATEGORIES, CategoricalVQVAE, load_config
from noa.tokenizer.protocol import Fits


def check_output_dir(out_dir: str | Path, *, overwrite: bool) -> None:
    """NoaError unless ``out_dir`` can take a new tokenizer: absent, empty, or (with
    ``overwrite``) a tokenizer directory holding nothing but the files noa writes there."""
    out_dir = Path(out_dir)
    outputs.check_writable(out_dir, "tokenizer directory", directory=True)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise NoaError(
            f"{out_dir} is not empty; choose a new directory or pass --overwrite to replace the tokenizer in it"
        )
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in TOKENIZER_FILES)
    if foreign:
        raise NoaError(
            f"--overwrite replaces a tokenizer directory, but {out_dir} also holds files noa did not write there "
            f"({', '.join(foreign[:4])}{', …' if len(foreign) > 4 else ''}); move them away or choose another --out"
        )


def save_tokenizer(
    model: CategoricalVQVAE, out_dir: Path, history: dict, metrics: dict, *, overwrite: bool = False
) -> None:
    """Write a tokenizer directory whole: into a temporary sibling, then renamed into place, so
    a reader never sees half a directory (nor new weights beside an old config). Refuses a
    non-empty directory unless ``overwrite`` (see :func:`check_output_dir`)."""
    out_dir = outputs.named(out_dir)
    check_output_dir(out_dir, overwrite=overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # left by a killed writer
        shutil.rmtree(stale)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _write_synced(tmp / WEIGHTS_FILE, lambda f: torch.save(state, f))
    _write_synced(tmp / HISTORY_FILE, lambda f: f.write(_json_bytes(history)))
    _write_synced(tmp / METRICS_FILE, lambda f: f.write(_json_bytes(metrics)))
    _write_synced(tmp / CONFIG_FILE, lambda f: f.write(_json_bytes(config)))
    outputs.replace_dir(tmp, out_dir)


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> CategoricalVQVAE:
    """A frozen tokenizer ready to use: eval mode, no parameter requires grad, on ``device``."""
    return CategoricalVQVAE.load(Path(path)).to(device)


def tokenizer_fingerprint(path: str | Path) -> str:
    """A hash of a tokenizer directory's config and weights: what L_commit/L_latent are measured by."""
    digest = hashlib.blake2b(digest_size=12)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update((Path(path) / name).read_bytes())
    return digest.hexdigest()


def directory_fingerprint(path: str | Path) -> str:
    """A hash of every file in a tokenizer directory of another class (noa does not know which
    of them hold its weights): names and contents, in name order."""
    digest = hashlib.blake2b(digest_size=12)
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        name = file.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        content = file.read_bytes()
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()


def check_compatible(tokenizer: Fits, *, timesteps: int, channels: int, grid: int, source: str) -> None:
    """Raise one NoaError listing every way ``source``'s rollouts differ from what the tokenizer fits."""
    problems = compatibility_problems(tokenizer, timesteps=timesteps, channels=channels, grid=grid, source=source)
    if problems:
        raise NoaError(
            f"the tokenizer does not fit {source}:\n  - "
            + "\n  - ".join(problems)
            + "\nUse a tokenizer trained on features of this data (noa vqvae train)."
        )


def compatibility_problems(
    tokenizer: Fits, *, timesteps: int | None, channels: int, grid: int, source: str
) -> list[str]:
    """Every way ``source``'s rollouts differ from what the tokenizer fits, one line each, both
    values named (``timesteps`` None: the caller says where its T came from itself). The
    feature columns it reads are checked when it is loaded: they are the registry's for its
    channels, which this compares with the data's."""
    return [
        f"{name}: tokenizer has {getattr(tokenizer, name)}, {source} has {size}"
        for name, size in (("timesteps", timesteps), ("channels", channels), ("grid", grid))
        if size is not None and getattr(tokenizer, name) != size
    ]


def tokenizer_info(path: str | Path) -> str:
    """A human summary of a tokenizer directory: config, validation metrics, last history values."""
    path = existing_dir(path)
    cfg = load_config(path)
    weights = path / WEIGHTS_FILE
    n_entries = len(FEATURE_CATEGORIES) * cfg.levels
    lines = [
        f"tokenizer {path}",
        f"  weights: {'present' if weights.is_file() else 'MISSING'} ({WEIGHTS_FILE})",
        "  features: "
        + ", ".join(f"{f} {cfg.feature_dims[f]}" for f in FEATURE_CATEGORIES)
        + f" (temporal over {cfg.timesteps + 1} frames)",
        f"  rollouts: timesteps {cfg.timesteps}, channels {cfg.channels}, grid {cfg.grid}",
        f"  codebooks: {len(FEATURE_CATEGORIES)} categories x {cfg.levels} levels x {cfg.codebook_size} codes, "
        f"latent {cfg.latent_dim} per level (total latent_dim {n_entries * cfg.latent_dim}), hidden {cfg.hidden}",
        f"  quantizer: commitment {cfg.commitment_weight}, EMA decay {cfg.ema_decay}, "
        f"dead-code threshold {cfg.dead_code_threshold}, k-means iters {cfg.kmeans_iters}",
    ]
    metrics = read_json(path / METRICS_FILE, required=False)
    if isinstance(metrics, dict) and isinstance(metrics.get("recon_mse"), dict):
        mse = metrics["recon_mse"]
        lines.append(f"validation metrics ({metrics.get('n_samples', '?')} samples):")
        lines.append(
            f"  recon MSE (normalized): total {mse.get('total', float('nan')):.4f}  "
            + "  ".join(f"{f} {mse.get(f, float('nan')):.4f}" for f in FEATURE_CATEGORIES)
        )
        for cb in metrics.get("codebooks", []):
            lines.append(
                f"  {cb.get('category')!s:<9} L{cb.get('level')}: used {cb.get('used')}/{cb.get('size')} "
                f"({100 * cb.get('utilization', float('nan')):.1f}%), perplexity {cb.get('perplexity', float('nan')):.1f}"
            )
    else:
        lines.append(f"validation metrics: none ({METRICS_FILE} missing or unreadable)")
    history = read_json(path / HISTORY_FILE, required=False)
    if isinstance(history, dict) and history.get("train_loss"):
        last = "  ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if isinstance(v, list) and v)
        lines.append(f"history ({len(history['train_loss'])} epochs), last: {last}")
    else:
        lines.append(f"history: none ({HISTORY_FILE} missing or empty)")
    return "\n".join(lines)
