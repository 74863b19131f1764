"""`noa data features`: features added to an existing dataset, resumably, and refused input."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from noa.data import generate as generate_module
from noa.data.generate import GenerateConfig, add_features, generate
from noa.errors import NoaError
from noa.tokenizer.job import train_tokenizer_on_dataset

CFG = dict(n_samples=8, grid=16, timesteps=4, seed=2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("feat")
    with_features, bare = root / "with.h5", root / "bare.h5"
    generate(GenerateConfig(**CFG), with_features, batch_size=4, progress=False, log=lambda _: None)
    generate(GenerateConfig(**CFG, features=False), bare, batch_size=4, progress=False, log=lambda _: None)
    return with_features, bare


def test_features_of_generate_and_of_the_features_command_agree(pair, tmp_path: Path) -> None:
    with_features, bare = pair
    target = tmp_path / "added.h5"
    shutil.copy(bare, target)
    add_features(target, batch_size=3, progress=False, log=lambda _: None)
    with h5py.File(with_features) as a, h5py.File(target) as b:
        for fam in ("initial", "summary", "temporal"):
            assert np.array_equal(a["features"][fam][:], b["features"][fam][:]), fam  # batch 4 and 3: the same bytes
            assert a["features"][fam].attrs["names"] == b["features"][fam].attrs["names"]
        assert b["features/done"][:].all()


def test_interrupted_feature_computation_resumes(pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, bare = pair
    target = tmp_path / "resumed.h5"
    shutil.copy(bare, target)
    real = generate_module._write
    calls: list[int] = []

    def flaky(f, result):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(result.rows))
        real(f, result)

    monkeypatch.setattr(generate_module, "_write", flaky)
    with pytest.raises(generate_module.GenerationInterrupted, match=f"noa data features {target}") as stopped:
        add_features(target, batch_size=3, progress=False, log=lambda _: None)
    assert stopped.value.exit_code == 130
    done_rows: list[int] = []
    monkeypatch.setattr(
        generate_module, "_write", lambda f, result: done_rows.extend(result.rows.tolist()) or real(f, result)
    )
    add_features(target, batch_size=3, progress=False, log=lambda _: None)
    assert sorted(done_rows) == [3, 4, 5, 6, 7]
    with h5py.File(target) as f:
        assert f["features/done"][:].all()


def test_tokenizer_on_a_dataset_without_features_says_how_to_compute_them(pair, tmp_path: Path) -> None:
    _, bare = pair
    with pytest.raises(NoaError, match="noa data features"):
        train_tokenizer_on_dataset(bare, tmp_path / "tok", epochs=1, log=lambda _: None, progress=False)
    assert not (tmp_path / "tok").exists()


def test_nan_features_are_refused(pair, tmp_path: Path) -> None:
    with_features, _ = pair
    bad = tmp_path / "nan.h5"
    shutil.copy(with_features, bad)
    with h5py.File(bad, "r+") as f:
        f["features/summary"][2, 0] = np.nan
    with pytest.raises(NoaError, match="NaN or inf at sample 2"):
        train_tokenizer_on_dataset(bad, tmp_path / "tok", epochs=1, val_split=0.25, log=lambda _: None, progress=False)
