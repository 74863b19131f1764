"""Reading samples for training: a validated sample source, a seeded split, a resumable sampler.

The epoch order is a pure function of (seed, epoch), so a run that stops after batch k of an
epoch can restart at batch k+1 and see exactly the batches it had not seen, without reading
the skipped ones. Ranks take interleaved slices of the same order, so sharding never changes
which samples an epoch covers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from noa.data import h5
from noa.errors import NoaError
from noa.seeding import generator

# Fewer held-out samples than this make validation metrics (and best_model.pt) follow noise.
MIN_VAL_SAMPLES = 8


@dataclass(frozen=True)
class Split:
    """File row indices of the train and validation samples."""

    train: np.ndarray
    val: np.ndarray


def usable_rows(path: str | Path, n_samples: int | None) -> np.ndarray:
    """The first ``n_samples`` valid rows of the dataset (all valid rows when None)."""
    with h5.open_dataset(path) as f:
        return usable_rows_of(f, h5.read_info(f), n_samples)


def usable_rows_of(f: h5py.File, info: h5.DatasetInfo, n_samples: int | None) -> np.ndarray:
    """:func:`usable_rows` of an open, validated dataset."""
    path = f.filename
    if not info.complete:
        raise NoaError(
            f"dataset {path} is incomplete; finish it with `noa data generate --out {path} --resume` and the original flags"
        )
    ok = np.flatnonzero(f["metadata/replayed"][:] & f["metadata/valid"][:])
    if n_samples is not None:
        if n_samples < 2:
            raise NoaError(f"--n-samples must be at least 2 (one to train, one to validate); got {n_samples}")
        if n_samples > len(ok):
            raise NoaError(
                f"--n-samples {n_samples} is more than the {len(ok)} valid samples in {path} "
                f"({info.n_samples} in all); lower it or generate a larger dataset"
            )
        ok = ok[:n_samples]
    h5.check_inputs(f, ok)
    return ok


def split_rows(rows: np.ndarray, val_fraction: float, seed: int) -> Split:
    """A seeded permutation of ``rows`` cut into train and validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise NoaError(f"--val-split must be in [0, 1); got {val_fraction}")
    perm = torch.randperm(len(rows), generator=generator(seed, "split")).numpy()
    n_val = int(round(len(rows) * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    return Split(train=np.sort(rows[perm[n_val:]]), val=np.sort(rows[perm[:n_val]]))


def run_split(dataset: str | Path, args: dict) -> Split:
    """The train/validation split a run made of ``dataset``, rebuilt from its recorded flags
    (``n_samples``, ``val_split``, ``seed``): the one rule ``noa train`` splits by."""
    return split_rows(
        usable_rows(dataset, args.get("n_samples")), float(args.get("val_split", 0.0)), int(args.get("seed", 0))
    )


class SampleSource(torch.utils.data.Dataset):
    """(ic, params, noise seed, index) for a fixed list of dataset rows, read lazily.

    ``seed`` is the sample's noise seed: with θ and the IC it fixes the CNO rollout.

    The file opens at the first read and stays open until :meth:`close`; pass ``info`` when
    the caller has already validated the file, so constructing a source does not open it.

    ``trajectory`` is added when the file caches trajectories and ``with_trajectories``.
    """

    def __init__(
        self, path: str | Path, rows: np.ndarray, with_trajectories: bool = False, info: h5.DatasetInfo | None = None
    ):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._file: h5py.File | None = None
        if info is None:
            with h5.open_dataset(self.path) as f:
                info = h5.read_info(f)
        self.info = info
        self.with_trajectories = with_trajectories and self.info.has_trajectories

    def __len__(self) -> int:
        return len(self.rows)

    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        batch = self.get_batch([position])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one read (the DataLoader calls this with a batch sampler's batch)."""
        return self.get_batch(positions)

    def __getstate__(self) -> dict:
        """A copy sent to a DataLoader worker opens the file itself (HDF5 handles do not travel)."""
        return {**self.__dict__, "_file": None}

    def get_batch(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """Stacked samples at ``positions`` (indices into ``rows``), in the order given."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing rows
        f = self._h5()

        def read(name: str) -> np.ndarray:
            return h5.read_rows(f[name], unique)[inverse]

        out = {
            "ic": torch.from_numpy(read("inputs/fields")),
            "params": torch.from_numpy(read("parameters/params")),
            "seed": torch.from_numpy(read("metadata/noise_seed")),
            "index": torch.from_numpy(rows.copy()),
        }
        if self.with_trajectories:
            out["trajectory"] = torch.from_numpy(read("trajectories"))
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EpochBatchSampler:
    """Batches of positions whose order depends only on (seed, epoch), startable mid-epoch."""

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise NoaError(f"--batch-size must be >= 1; got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if drop_last and n_items < batch_size * world_size:
            raise NoaError(
                f"--batch-size {batch_size} (x {world_size} ranks) is larger than the {n_items} training samples; "
                "lower the batch size or use more samples"
            )
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        return self.n_items // per_step if self.drop_last else -(-self.n_items // per_step)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_items)
        return torch.randperm(self.n_items, generator=generator(self.seed, "epoch-order", epoch)).numpy()

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[list[int]]:
        """This rank's batches of ``epoch`` from batch ``start_batch`` on (0-based)."""
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            start = (b * self.world_size + self.rank) * self.batch_size
            chunk = order[start : start + self.batch_size]
            if len(chunk):
                yield chunk.tolist()


class EpochBatches(torch.utils.data.Sampler):
    """The batch sampler a DataLoader iterates: this rank's batches of one epoch, from a start
    batch on. Set the epoch (and start) before each pass; the order is the sampler's, so a
    DataLoader with or without workers yields the same batches in the same order."""

    def __init__(self, sampler: EpochBatchSampler) -> None:
        self.sampler = sampler
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        return self.sampler.batches(self.epoch, self.start)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


def _batch_as_read(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def batch_loader(
    source: SampleSource, batches: EpochBatches, num_workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``source`` whose batches come from ``batches``; with workers, each
    opens the HDF5 file itself and they persist across epochs."""
    return torch.utils.data.DataLoader(
        source,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_batch_as_read,  # type: ignore[arg-type]  # the source reads whole batches (__getitems__)
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
