"""Shared tiny, real artefacts: a toolkit-made dataset and a tokenizer trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = dict(grid=16, timesteps=8)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from noa.data.generate import GenerateConfig, generate

    path = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    cfg = GenerateConfig(n_samples=40, seed=11, store_trajectories=True, **TINY)
    generate(cfg, path, batch_size=20, progress=False, log=lambda _: None)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from noa.tokenizer.job import train_tokenizer_on_dataset

    out = tmp_path_factory.mktemp("tok") / "vqvae"
    train_tokenizer_on_dataset(
        tiny_dataset,
        out,
        epochs=3,
        batch_size=16,
        lr=2e-3,
        levels=2,
        codebook_size=8,
        latent_dim=4,
        hidden=32,
        seed=0,
        device="cpu",
        val_split=0.2,
        log=lambda _: None,
        progress=False,
    )
    return out


@pytest.fixture
def train_log():
    """The lines noa logs (loggers "noa.*": training, quickstart) during a test."""
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("noa"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
