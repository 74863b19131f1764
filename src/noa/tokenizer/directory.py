"""The layout of a tokenizer directory and the reading of its JSON files.

A directory holds ``config.json`` (format marker + the tokenizer config), ``weights.pt``,
``history.json`` and ``metrics.json``. This module knows those names and reads the JSON, and
imports nothing else of the tokenizer: the model reads its own directory through it (for
``CategoricalVQVAE.load``) and :mod:`noa.tokenizer.io`, which writes directories, builds on both.
"""

from __future__ import annotations

import json
from pathlib import Path

from noa.errors import NoaError

FORMAT = "noa-tokenizer"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "weights.pt", "history.json", "metrics.json"
TOKENIZER_FILES = (CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE)

# A directory that is not noa's own tokenizer may be another class's: say how to load one.
ANOTHER_CLASS = (
    "a tokenizer of another class is loaded by that class: pass --vqvae-class MODULE_OR_FILE:CLASS "
    "(noa never imports a class a directory names)"
)


def existing_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoaError(f"{path} is a file, not a tokenizer directory; pass the directory `noa vqvae train --out` wrote")
    if not path.is_dir():
        raise NoaError(f"tokenizer directory {path} does not exist; train one with `noa vqvae train` or fix the path")
    return path


def read_json(path: Path, *, required: bool) -> object:
    """The JSON in ``path``; None for a missing file unless ``required``."""
    if not path.is_file():
        if required:
            raise NoaError(f"{path} is missing; {path.parent} is not a complete tokenizer directory")
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NoaError(f"{path} is not valid JSON ({err}); retrain the tokenizer or restore the file") from err


def config_data(path: str | Path) -> dict:
    """The tokenizer config of directory ``path`` as recorded (a dict), after checking that
    ``noa vqvae train`` wrote it in the format this noa reads (no weights are read)."""
    directory = existing_dir(path)
    if not any((directory / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE)) and any(directory.iterdir()):
        raise NoaError(
            f"{directory} holds neither {CONFIG_FILE} nor {WEIGHTS_FILE}, so `noa vqvae train` did not write it; "
            + ANOTHER_CLASS
        )
    data = read_json(directory / CONFIG_FILE, required=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("config"), dict):
        raise NoaError(
            f"{Path(path) / CONFIG_FILE} is not a noa tokenizer config (no '{FORMAT}' format marker); {ANOTHER_CLASS}"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise NoaError(
            f"{Path(path) / CONFIG_FILE} has tokenizer format version {data.get('format_version')!r}, "
            f"this noa reads version {FORMAT_VERSION}; retrain the tokenizer with this version"
        )
    return data["config"]
