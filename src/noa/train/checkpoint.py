"""NOA checkpoints: atomic writes, safe loading, retention, and rebuilding the model.

A checkpoint is a plain dict of tensors and Python containers (no pickled objects), so it
loads with ``torch.load(weights_only=True)``: opening a checkpoint never runs code. Writes go
to a temporary file in the same directory, are fsynced, then renamed over the final name, so
a crash mid-write leaves either the previous file or none, never a torn one.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from noa import outputs
from noa.errors import NoaError
from noa.model import UAFNO, LatentProjector, UAFNOConfig
from noa.torchfile import load_pt

log = logging.getLogger("noa.train")

# 1 = the guide's "old format" (no global_step / scheduler / projector); 2 = one optimizer group,
# schedule step only; 3 = named optimizer groups, stateful parts under "parts".
FORMAT_VERSION = 3
BEST_NAME = "best_model.pt"
STEP_NAME = re.compile(r"^step_(\d+)\.pt$")
# Paths a checkpoint's args record, with the flag that supplies each when it cannot be found.
RECORDED_PATHS = {"dataset": "--dataset", "vqvae_path": "--vqvae-path"}
EPOCH_NAME = re.compile(r"^epoch_(\d+)\.pt$")


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """torch.save to ``path`` through a fsynced temporary file and a rename (the directory
    synced too, so the new name survives a power loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_atomic(path, lambda fh: torch.save(obj, fh))
    outputs.fsync_dir(path.parent)


# What to do about an unreadable checkpoint, said in the caller's terms (a command's flags, or Python).
CLI_FIX = "use another checkpoint (--resume auto picks the newest intact one)"
API_FIX = "pass a checkpoint file that noa train wrote (best_model.pt, epoch_N.pt or step_N.pt)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", fix: str = CLI_FIX) -> dict[str, Any]:
    """Load a checkpoint safely; NoaError naming the file if it is missing, torn or unsafe."""
    path = Path(path)
    if path.is_dir() and _is_tokenizer_dir(path):
        where = (
            f"load it with noa.load_tokenizer({str(path)!r}), and a NOA with noa.load(CHECKPOINT_FILE)"
            if fix == API_FIX
            else "pass it as --vqvae-path, and a NOA checkpoint file (e.g. checkpoints/noa/best_model.pt) as the checkpoint"
        )
        raise NoaError(f"{path} is a tokenizer directory (noa vqvae train wrote it), not a NOA checkpoint; {where}")
    if path.is_dir():
        found = sorted(p.name for p in run_checkpoints(path))
        inside = (
            f"it holds {', '.join(found[:4])}{', …' if len(found) > 4 else ''}" if found else "it holds no checkpoint"
        )
        raise NoaError(
            f"checkpoint {path} is a directory, not a checkpoint file ({inside}); name the file, e.g. {path / 'best_model.pt'}"
        )
    if not path.is_file():
        raise NoaError(f"checkpoint {path} does not exist")
    obj = load_pt(path, "checkpoint", fix, map_location)
    if not isinstance(obj, dict):
        raise NoaError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict")
    if "model_state_dict" not in obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = {"model_state_dict": obj}  # a bare state_dict: the oldest format of all
    if "model_state_dict" not in obj:
        raise NoaError(f"checkpoint {path} has no model_state_dict")
    return obj


def _is_tokenizer_dir(path: Path) -> bool:
    """Whether ``path`` is a tokenizer directory (its config.json carries the tokenizer's format marker)."""
    config = path / "config.json"
    return config.is_file() and '"noa-tokenizer"' in config.read_text(errors="replace")


def recorded_args(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags as a checkpoint records them: the dataset and tokenizer paths made absolute,
    so a run's checkpoints can be read from any working directory."""
    return {k: (os.path.abspath(v) if k in RECORDED_PATHS and v else v) for k, v in flags.items()}


def recorded_path(ckpt: dict[str, Any], checkpoint: str | Path, key: str) -> Path | None:
    """The path ``args[key]`` of a checkpoint, absolute; None when it records none.

    Checkpoints from before paths were stored absolute hold them relative to the directory
    the run was launched from: that directory when recorded (``launch_dir``), else the
    checkpoint's own directory (a run started inside its checkpoint directory).
    """
    value = (ckpt.get("args") or {}).get(key)
    if not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return path
    base = ckpt.get("launch_dir") or os.path.abspath(Path(checkpoint).parent)
    return Path(os.path.normpath(Path(base) / path))


def build_model(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> tuple[UAFNO, LatentProjector | None]:
    """The NOA (and its latent projector, when the checkpoint has one) with trained weights."""
    if "config" not in ckpt:
        raise NoaError("the checkpoint has no model config; it cannot be rebuilt")
    model = UAFNO(UAFNOConfig.from_dict(ckpt["config"]))
    _load_state(model, ckpt["model_state_dict"], "model")
    projector = None
    align = ckpt.get("alignment_state")
    if align:
        projector = LatentProjector(int(align["in_channels"]), int(align["latent_dim"]), int(align["hidden"]))
        _load_state(projector, align["state_dict"], "latent projector")
    model.to(device).eval()
    if projector is not None:
        projector.to(device).eval()
    return model, projector


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise NoaError(f"the checkpoint's {what} weights do not fit its config: {str(err).splitlines()[0]}") from err


def step_from_name(path: str | Path) -> tuple[str, int] | None:
    """('step', N) or ('epoch', N) from a ``step_N.pt`` / ``epoch_N.pt`` file name."""
    name = Path(path).name
    for kind, pattern in (("step", STEP_NAME), ("epoch", EPOCH_NAME)):
        match = pattern.match(name)
        if match:
            return kind, int(match.group(1))
    return None


def run_checkpoints(directory: str | Path) -> list[Path]:
    """The files a run writes as checkpoints (``step_N.pt``, ``epoch_N.pt``, ``best_model.pt``),
    by exact name: a user's ``step_notes.pt`` or ``step_1_keep.pt`` is never taken for one,
    so it is neither resumed, nor pruned, nor deleted by ``--overwrite``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and (p.name == BEST_NAME or step_from_name(p) is not None)),
        key=lambda p: p.name,
    )


def step_checkpoints(directory: str | Path) -> list[Path]:
    """The ``step_N.pt`` files of ``directory``, oldest step first (what ``--keep-last`` prunes)."""
    steps = [
        (parsed[1], p) for p in run_checkpoints(directory) if (parsed := step_from_name(p)) and parsed[0] == "step"
    ]
    return [p for _, p in sorted(steps)]


def find_latest(checkpoint_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint in the directory that loads; torn ones are reported and passed over."""
    directory = Path(checkpoint_dir)
    candidates = sorted(
        run_checkpoints(directory),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
        reverse=True,
    )
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except NoaError as err:
            log.warning(f"  ⚠ Skipping {path.name}: {err}")
    raise NoaError(f"--resume auto found no intact checkpoint in {directory}; start without --resume")
