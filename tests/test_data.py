"""Dataset generation, the HDF5 layout and its validating reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from noa.data import generate as generate_module
from noa.data import workers as workers_module
from noa.data.generate import GenerateConfig, generate
from noa.data.h5 import open_dataset, read_info
from noa.data.info import describe
from noa.data.loader import usable_rows
from noa.data.partial import resume_command
from noa.errors import NoaError
from noa.operators.replay import replay


def _cfg(**kw) -> GenerateConfig:
    base = dict(n_samples=10, grid=16, timesteps=4, seed=3, store_trajectories=True, features=False)
    base.update(kw)
    return GenerateConfig(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d.h5"
    generate(_cfg(), path, batch_size=4, progress=False, log=lambda _: None)
    return path


def test_layout_and_attributes(dataset: Path) -> None:
    with open_dataset(dataset) as f:
        info = read_info(f)
        assert info.complete and info.has_trajectories
        assert (info.n_samples, info.grid, info.channels, info.timesteps, info.realizations) == (10, 16, 3, 4, 1)
        assert f["trajectories"].shape == (10, 1, 5, 3, 16, 16)
        assert json.loads(f["parameters/params"].attrs["names"]) == info.space.names
        assert f["metadata/valid"][:].all() and f["metadata/replayed"][:].all()
        params = f["parameters/params"][:]
        assert params.min() >= 0 and params.max() < 1
        assert len(set(f["metadata/noise_seed"][:].tolist())) == 10


def test_stored_trajectories_equal_a_fresh_replay(dataset: Path) -> None:
    with open_dataset(dataset) as f:
        rows = [1, 4, 7]
        params = torch.from_numpy(f["parameters/params"][rows])
        ics = torch.from_numpy(f["inputs/fields"][rows])
        seeds = f["metadata/noise_seed"][rows].tolist()
        stored = torch.from_numpy(f["trajectories"][rows])
    assert torch.equal(replay(params, ics, seeds, 4), stored)


def test_generation_is_deterministic(tmp_path: Path, dataset: Path) -> None:
    again = tmp_path / "again.h5"
    generate(_cfg(), again, batch_size=3, progress=False, log=lambda _: None)
    with h5py.File(dataset) as a, h5py.File(again) as b:
        for name in ("parameters/params", "inputs/fields", "trajectories", "metadata/noise_seed"):
            assert np.array_equal(a[name][:], b[name][:]), name


def test_interrupted_generation_resumes_without_recomputing(
    tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.h5"
    real_replay = workers_module.replay
    calls: list[int] = []

    def failing_replay(params, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(params))
        return real_replay(params, *args, **kwargs)

    monkeypatch.setattr(workers_module, "replay", failing_replay)
    with pytest.raises(generate_module.GenerationInterrupted, match="--resume") as stopped:
        generate(_cfg(), out, batch_size=4, progress=False, log=lambda _: None)
    assert stopped.value.exit_code == 130
    assert not out.exists() and (tmp_path / "r.h5.partial").exists()
    with pytest.raises(NoaError, match="--resume"):
        generate(_cfg(), out, batch_size=4, progress=False, log=lambda _: None)

    replayed: list[int] = []
    monkeypatch.setattr(workers_module, "replay", lambda p, *a, **k: replayed.append(len(p)) or real_replay(p, *a, **k))
    generate(_cfg(), out, batch_size=4, resume=True, progress=False, log=lambda _: None)
    assert sum(replayed) == 6  # the 4 finished samples were not replayed again
    with h5py.File(dataset) as a, h5py.File(out) as b:
        assert np.array_equal(a["trajectories"][:], b["trajectories"][:])
        assert bool(b.attrs["complete"])


def test_resume_with_other_flags_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    generate_module._create(out.with_name("x.h5.partial"), _cfg(), None, chunk=8)
    with pytest.raises(NoaError, match="configuration differs"):
        generate(_cfg(seed=4), out, resume=True, progress=False, log=lambda _: None)


def test_ic_kinds_are_recorded_under_the_names_files_were_written_with(tmp_path: Path) -> None:
    """IC kinds were "IC families" when the format was fixed: files record them as such (the
    root attribute, the config key in its old place, the per-sample index), so a dataset or an
    interrupted generation written before reads back, and resumes, unchanged."""
    from noa.api.samples import read_sample
    from noa.families import FULL

    cfg = _cfg(n_samples=4, ic_kinds=["sinusoid", "localized"], store_trajectories=False)
    written_before = (
        '{"n_samples": 4, "grid": 16, "channels": 3, "timesteps": 4, "realizations": 1, "seed": 3, '
        '"ic_families": ["sinusoid", "localized"], "store_trajectories": false, "features": false, '
        f'"family": {json.dumps(FULL.as_dict())}}}'
    )
    out = tmp_path / "kinds.h5"
    partial = out.with_name("kinds.h5.partial")
    generate_module._create(partial, cfg, None, chunk=8)
    with h5py.File(partial, "r") as f:
        assert f.attrs["config"] == written_before  # byte for byte: the dataset fingerprint hashes it
        assert json.loads(f.attrs["ic_families"]) == ["sinusoid", "localized"]
        assert f["metadata/ic_family"][:].tolist() == [0, 1, 0, 1]
    assert "--ic-kinds sinusoid localized" in (resume_command(out) or "")
    generate(cfg, out, resume=True, progress=False, log=lambda _: None)  # the old record matches the config
    with open_dataset(out) as f:
        assert read_info(f).ic_kinds == ("sinusoid", "localized")
    assert "IC kinds:      sinusoid 2, localized 2" in describe(out)
    assert [read_sample(out, row).ic_kind for row in range(4)] == ["sinusoid", "localized"] * 2


def test_existing_output_is_never_overwritten_without_consent(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "keep.h5"
    shutil.copy(dataset, out)
    before = out.read_bytes()
    with pytest.raises(NoaError, match="already exists"):
        generate(_cfg(), out, progress=False, log=lambda _: None)
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"grid": 4}, "--grid"),
        ({"n_samples": 0}, "--n-samples"),
        ({"ic_kinds": ["gaussian_random_field", "plasma"]}, "plasma"),
        ({"timesteps": 0}, "--timesteps"),
    ],
)
def test_bad_generation_flags(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(NoaError, match=message):
        generate(_cfg(**kw), tmp_path / "bad.h5", progress=False, log=lambda _: None)
    assert not (tmp_path / "bad.h5").exists()


def test_reader_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(NoaError, match="does not exist"):
        open_dataset(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(NoaError, match="not a readable HDF5"):
        open_dataset(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(NoaError, match="not a noa dataset"):
        open_dataset(foreign)


def test_reader_names_a_missing_group(tmp_path: Path, dataset: Path) -> None:
    broken = tmp_path / "broken.h5"
    shutil.copy(dataset, broken)
    with h5py.File(broken, "r+") as f:
        del f["inputs"]
    with pytest.raises(NoaError, match="/inputs/fields"):
        with open_dataset(broken) as f:
            read_info(f)


def test_nan_inputs_are_refused(tmp_path: Path, dataset: Path) -> None:
    bad = tmp_path / "nan.h5"
    shutil.copy(dataset, bad)
    with h5py.File(bad, "r+") as f:
        f["inputs/fields"][3, 0, 0, 0] = np.nan
    with pytest.raises(NoaError, match="NaN or inf at sample 3"):
        usable_rows(bad, None)


def test_invalid_samples_are_skipped_and_too_many_samples_refused(tmp_path: Path, dataset: Path) -> None:
    flagged = tmp_path / "flagged.h5"
    shutil.copy(dataset, flagged)
    with h5py.File(flagged, "r+") as f:
        f["metadata/valid"][2] = False
    assert usable_rows(flagged, 5).tolist() == [0, 1, 3, 4, 5]
    with pytest.raises(NoaError, match="more than the 9 valid samples"):
        usable_rows(flagged, 10)


def test_describe_reports_units_and_families(dataset: Path) -> None:
    text = describe(dataset)
    assert "samples:       10" in text and "valid 10" in text
    assert "gaussian_random_field 2" in text
    assert "noise_scale" in text and "log-float" in text
    assert "kernel_size" in text


def test_a_version_1_file_is_refused_with_how_to_regenerate(tmp_path: Path, dataset: Path) -> None:
    old = tmp_path / "v1.h5"
    shutil.copy(dataset, old)
    with h5py.File(old, "r+") as f:  # what version 1 wrote: no family, per-sample operator seeds
        f.attrs["format_version"] = 1
        del f.attrs["cno_family"]
        f["metadata/operator_seed"] = f["metadata/noise_seed"][:]
        del f["metadata/noise_seed"]
    with pytest.raises(NoaError, match="version-1 noa dataset.*operator seeds.*regenerate it with `noa data generate`"):
        usable_rows(old, None)
    with pytest.raises(NoaError, match="version-1"):
        describe(old)


def test_a_file_of_another_family_is_refused(tmp_path: Path, dataset: Path) -> None:
    other = tmp_path / "other.h5"
    shutil.copy(dataset, other)
    with h5py.File(other, "r+") as f:
        family = json.loads(f.attrs["cno_family"])
        f.attrs["cno_family"] = json.dumps({**family, "seed": family["seed"] + 1})
    with pytest.raises(NoaError, match="made with CNO weight banks"):
        usable_rows(other, None)


def test_the_file_records_the_family_it_was_made_with(dataset: Path) -> None:
    from noa.operators.weights import BANKS

    with open_dataset(dataset) as f:
        family = json.loads(f.attrs["cno_family"])
    assert family == json.loads(BANKS.to_json())
    assert {"name", "version", "seed"} <= set(family)
    assert str(family["seed"]) in describe(dataset)


def test_same_theta_ic_and_noise_seed_replay_identically_whatever_the_index_or_dataset(
    tmp_path: Path, dataset: Path
) -> None:
    other = tmp_path / "other_seed.h5"
    generate(_cfg(seed=9), other, batch_size=5, progress=False, log=lambda _: None)
    with h5py.File(dataset) as a, h5py.File(other) as b:
        params = torch.from_numpy(b["parameters/params"][:6])
        ics = torch.from_numpy(b["inputs/fields"][:6])
        seeds = b["metadata/noise_seed"][:6].tolist()
        # Row 2 of dataset A placed at position 4 of a batch of dataset B's rows.
        params[4], ics[4], seeds[4] = (
            torch.from_numpy(a["parameters/params"][2]),
            torch.from_numpy(a["inputs/fields"][2]),
            int(a["metadata/noise_seed"][2]),
        )
        stored = torch.from_numpy(a["trajectories"][2])
    assert torch.equal(replay(params, ics, seeds, 4)[4], stored)
