"""What the `noa` command prints: --version, every default in --help, a quiet broken pipe."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noa.cli import _DefaultsHelp, build_parser

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _parsers(parser: argparse.ArgumentParser, name: str = "noa") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, sub-commands at every depth included."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    assert isinstance(formatter, _DefaultsHelp) or parser.prog == "noa"
    return " ".join(formatter._format_action(action).split())


def test_every_option_that_takes_a_value_shows_its_default_in_help() -> None:
    missing = []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.required or action.dest in ("help", "version"):
                continue
            if "default" not in _help_of(parser, action):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "noa.cli", "--version"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("noa 0.") and not done.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tiny_dataset: Path) -> None:
    """`noa data info X | head -1`: the reader is gone before the summary is written."""
    child = subprocess.Popen([sys.executable, "-m", "noa.cli", "data", "info", str(tiny_dataset)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader went away (noa is still importing torch)
    stderr = child.stderr.read().decode()
    assert child.wait() == 141
    assert stderr == "", stderr


def test_the_vq_librarys_only_log_line_is_the_silenced_kmeans_warning() -> None:
    """noa silences vector_quantize_pytorch's loguru messages by module; that is precise only
    while the module logs the k-means warning and nothing else."""
    import importlib
    import re

    from noa.tokenizer.model import VQ_NOISE_MODULE

    source = Path(importlib.import_module(VQ_NOISE_MODULE).__file__).read_text()
    calls = re.findall(r"logger\.\w+\(.*", source)
    assert len(calls) == 1 and "k-means init received" in calls[0], calls


def test_training_a_tokenizer_prints_no_kmeans_warning(tiny_dataset: Path, tmp_path: Path) -> None:
    # 36 training samples and codebooks of 64 codes: every codebook's k-means init is short of vectors (6 lines before).
    done = subprocess.run([sys.executable, "-m", "noa.cli", "vqvae", "train", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "vq"),
                           "--epochs", "1", "--batch-size", "16", "--codebook-size", "64", "--levels", "2", "--latent-dim", "4",
                           "--hidden", "16", "--no-progress", "--device", "cpu"], env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "k-means init received" not in done.stderr + done.stdout and "WARNING" not in done.stderr
