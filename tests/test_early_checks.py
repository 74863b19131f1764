"""Problems said at the stage that causes them: a grid no NOA can train on at `noa data
generate`, codebooks too large for the data at `noa vqvae train`."""

from __future__ import annotations

from pathlib import Path

import pytest

from noa.cli import main
from noa.data.generate import GenerateConfig, generate
from noa.tokenizer.job import train_tokenizer_on_dataset


def test_an_odd_grid_is_refused_by_generate_not_first_by_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "data",
            "generate",
            "--out",
            str(tmp_path / "g.h5"),
            "--n-samples",
            "2",
            "--grid",
            "33",
            "--timesteps",
            "2",
            "--no-features",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--grid 33 is odd" in err and "e.g. 32" in err
    assert not (tmp_path / "g.h5").exists()


def test_a_grid_the_default_encoder_cannot_halve_three_times_gets_a_note(tmp_path: Path) -> None:
    lines: list[str] = []
    generate(
        GenerateConfig(n_samples=2, grid=12, timesteps=1, features=False),
        tmp_path / "g.h5",
        progress=False,
        log=lines.append,
    )
    assert "Note: --grid 12 is not a multiple of 8: noa train on it needs --encoder-levels 2 or fewer" in lines[0]
    lines.clear()
    generate(
        GenerateConfig(n_samples=2, grid=16, timesteps=1, features=False),
        tmp_path / "h.h5",
        progress=False,
        log=lines.append,
    )
    assert not any(line.startswith("Note: --grid") for line in lines)


def test_codebooks_too_large_for_the_data_are_warned_about(tiny_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train_tokenizer_on_dataset(
        tiny_dataset,
        tmp_path / "vq",
        epochs=1,
        batch_size=8,
        levels=2,
        codebook_size=64,
        latent_dim=2,
        hidden=8,
        device="cpu",
        val_split=0.2,
        n_samples=20,
        log=lines.append,
        progress=False,
    )
    text = "\n".join(lines)
    assert "Warning: only 4 validation samples: the held-out metrics (metrics.json) follow noise" in text
    assert (
        "Warning: 16 training samples for codebooks of 64 codes: each codebook can use at most 25% of its codes" in text
    )
    assert "--codebook-size (e.g. 4)" in text
    assert (
        "Warning: held-out codebook utilization averages" in text and "(4 held-out samples can show at most 6%)" in text
    )


def test_a_tokenizer_that_fits_its_data_trains_without_warnings(tiny_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train_tokenizer_on_dataset(
        tiny_dataset,
        tmp_path / "vq",
        epochs=1,
        batch_size=8,
        levels=1,
        codebook_size=2,
        latent_dim=2,
        hidden=8,
        device="cpu",
        val_split=0.25,
        log=lines.append,
        progress=False,
    )
    assert not [line for line in lines if line.startswith("Warning")]
