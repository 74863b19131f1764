"""Reading a dataset's samples and a run's split without knowing the HDF5 layout.

A user who wants to look at one operator of a dataset, or at the samples a NOA never trained
on, should not need h5py, the metadata's index conventions or the split's seed: these are the
same readers ``noa train`` and ``noa diagnose`` use, in the user's terms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noa.data import h5
from noa.data.ics import IC_KIND_KEY
from noa.data.loader import run_split, usable_rows
from noa.errors import NoaError
from noa.train.checkpoint import load_checkpoint, recorded_path


@dataclass(frozen=True)
class Sample:
    """One dataset row: what defines its CNO rollout, in unit and physical terms."""

    row: int
    theta: torch.Tensor  # [P] unit coordinates, as the NOA is conditioned on them
    physical: dict[str, Any]  # θ decoded with the dataset's own parameter space
    ic: torch.Tensor  # [C, H, W] the initial condition
    ic_kind: str  # one of the dataset's IC kinds (noa.IC_KINDS for files noa makes)
    noise_seed: int  # keys the CNO's noise stream (replay_cno(..., noise_seed=...))
    valid: bool  # the rollout was replayed and stayed finite and bounded

    @property
    def ic_family(self) -> str:
        """Deprecated name of :attr:`ic_kind` (IC kinds were called IC families)."""
        warnings.warn("Sample.ic_family is deprecated; use Sample.ic_kind", DeprecationWarning, stacklevel=2)
        return self.ic_kind


def read_sample(dataset: str | Path, row: int) -> Sample:
    """Row ``row`` of ``dataset`` (0-based, as ``noa data info`` counts them)."""
    with h5.open_dataset(dataset) as f:
        info = h5.read_info(f)
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= int(row) < info.n_samples:
            raise NoaError(f"row must be an integer in [0, {info.n_samples - 1}] for {dataset}, got {row!r}")
        i = int(row)
        theta = torch.from_numpy(np.asarray(f["parameters/params"][i], dtype=np.float32))
        meta = f["metadata"]
        return Sample(
            row=i,
            theta=theta,
            physical=info.space.decode(theta),
            ic=torch.from_numpy(np.asarray(f["inputs/fields"][i], dtype=np.float32)),
            ic_kind=info.ic_kinds[int(meta[IC_KIND_KEY][i])],
            noise_seed=int(meta["noise_seed"][i]),
            valid=bool(meta["replayed"][i] and meta["valid"][i]),
        )


@dataclass(frozen=True)
class TrainingSplit:
    """The rows of its dataset a run trained and validated on, the valid rows it never used, and
    the rows its weights never trained on."""

    dataset: Path
    train: np.ndarray
    validation: np.ndarray
    unused: np.ndarray  # valid rows beyond the run's --n-samples
    # Validation and unused rows, sorted, less any row a run it was fine-tuned from trained on
    # (the rows `noa diagnose` scores; noa.train.lineage follows the chain).
    held_out: np.ndarray


def training_split(checkpoint: str | Path, dataset: str | Path | None = None) -> TrainingSplit:
    """The split a run made of its dataset, rebuilt from the checkpoint's recorded flags.

    ``dataset`` defaults to the path the checkpoint records; give it when the file moved.
    """
    ckpt = load_checkpoint(checkpoint)
    path = Path(dataset) if dataset is not None else recorded_path(ckpt, checkpoint, "dataset")
    if path is None:
        raise NoaError(f"checkpoint {checkpoint} records no dataset; pass dataset= the file it was trained on")
    split = run_split(path, ckpt.get("args") or {})
    unused = np.setdiff1d(usable_rows(path, None), np.union1d(split.train, split.val))
    from noa.diagnostics.evaluate import lineage_pool  # here: reading a sample needs no plotting library

    held_out, _ = lineage_pool(path, ckpt, checkpoint, same_data=True, empty_ok=True)
    return TrainingSplit(dataset=path, train=split.train, validation=split.val, unused=unused, held_out=held_out)
