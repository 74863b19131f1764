"""Sample source, seeded split and the resumable, shardable epoch sampler."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import h5py

from noa.data.generate import GenerateConfig, generate
from noa.data.h5 import read_rows
from noa.data.loader import EpochBatches, EpochBatchSampler, SampleSource, batch_loader, split_rows, usable_rows
from noa.errors import NoaError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "d.h5"
    cfg = GenerateConfig(n_samples=12, grid=16, timesteps=3, seed=1, store_trajectories=True, features=False)
    generate(cfg, path, batch_size=6, progress=False, log=lambda _: None)
    return path


def test_split_is_seeded_disjoint_and_complete() -> None:
    rows = np.arange(100)
    a, b = split_rows(rows, 0.2, seed=7), split_rows(rows, 0.2, seed=7)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert len(a.val) == 20 and not set(a.train) & set(a.val)
    assert sorted([*a.train, *a.val]) == rows.tolist()
    assert not np.array_equal(split_rows(rows, 0.2, seed=8).val, a.val)
    with pytest.raises(NoaError, match="--val-split"):
        split_rows(rows, 1.0, seed=0)


@pytest.mark.parametrize(
    "rows", [[], [4], [0, 1, 2], [0, 2, 3, 4, 9, 11], [1, 5, 6, 7], list(range(12))], ids=lambda r: str(len(r))
)
def test_read_rows_equals_list_indexing_run_by_run(dataset: Path, rows: list[int]) -> None:
    picks = np.asarray(rows, dtype=np.int64)
    with h5py.File(dataset, "r") as f:
        for name in ("trajectories", "parameters/params", "metadata/noise_seed"):
            expected = f[name][picks]
            got = read_rows(f[name], picks)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), name


def test_sample_source_returns_rows_in_the_order_asked(dataset: Path) -> None:
    rows = usable_rows(dataset, None)
    src = SampleSource(dataset, rows, with_trajectories=True)
    batch = src.get_batch([5, 1, 5, 0])
    assert batch["index"].tolist() == [5, 1, 5, 0]
    assert batch["ic"].shape == (4, 3, 16, 16) and batch["params"].shape[0] == 4
    assert torch.equal(batch["ic"][0], batch["ic"][2])
    assert torch.equal(batch["trajectory"][:, 0, 0], batch["ic"])
    single = src[1]
    assert torch.equal(single["ic"], batch["ic"][1]) and int(single["seed"]) == int(batch["seed"][1])
    src.close()


def test_epoch_order_is_a_function_of_seed_and_epoch() -> None:
    s = EpochBatchSampler(20, 4, seed=3)
    assert list(s.batches(0)) == list(EpochBatchSampler(20, 4, seed=3).batches(0))
    assert list(s.batches(0)) != list(s.batches(1))
    assert list(s.batches(0)) != list(EpochBatchSampler(20, 4, seed=4).batches(0))
    flat = sorted(i for b in s.batches(2) for i in b)
    assert flat == list(range(20)) and len(s) == 5


def test_mid_epoch_start_yields_exactly_the_remaining_batches() -> None:
    s = EpochBatchSampler(23, 4, seed=0)
    full = list(s.batches(4))
    assert len(full) == 5  # drop_last: 23 // 4
    for k in range(6):
        assert list(s.batches(4, start_batch=k)) == full[k:]


def test_rank_sharding_partitions_each_global_batch() -> None:
    world = 3
    shards = [list(EpochBatchSampler(30, 2, seed=5, rank=r, world_size=world).batches(1)) for r in range(world)]
    assert all(len(s) == 5 for s in shards)
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)) == 30
    single = EpochBatchSampler(30, 2, seed=5).order(1)
    assert shards[1][0] == single[2:4].tolist()  # global batch 0, rank 1


def test_batch_larger_than_train_split_is_refused() -> None:
    with pytest.raises(NoaError, match="larger than the 3 training samples"):
        EpochBatchSampler(3, 4, seed=0)


def test_validation_order_is_fixed_and_keeps_the_tail() -> None:
    s = EpochBatchSampler(7, 3, seed=0, shuffle=False, drop_last=False)
    assert list(s.batches(0)) == [[0, 1, 2], [3, 4, 5], [6]] == list(s.batches(9))


class _SourceThatSaysWhichProcessRead(SampleSource):
    def get_batch(self, positions):  # noqa: ANN001, ANN201
        return {**super().get_batch(positions), "pid": torch.tensor([os.getpid()])}


def test_loader_workers_start_once_and_serve_every_epoch(dataset: Path) -> None:
    """`--num-workers N`: the worker processes (each with its HDF5 handle) start with the first
    epoch and read every later one; no epoch pays for starting a process and reopening the file."""
    source = _SourceThatSaysWhichProcessRead(dataset, usable_rows(dataset, None))
    batches = EpochBatches(EpochBatchSampler(len(source), 4, seed=0))
    loader = batch_loader(source, batches, num_workers=1, pin_memory=False)
    readers = []
    for epoch in range(3):
        batches.set_epoch(epoch, start_batch=1 if epoch == 2 else 0)  # a resumed epoch too
        readers += [int(batch["pid"]) for batch in loader]
    assert len(readers) == 3 + 3 + 2 and len(set(readers)) == 1 and readers[0] != os.getpid()
