"""What the `noa` command prints: --version, every default in --help, a quiet broken pipe."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

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
            if action.help == argparse.SUPPRESS:  # a former flag name, hidden from --help
                continue
            if "default" not in _help_of(parser, action):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_every_argument_says_what_it_is_not_only_its_default() -> None:
    bare = []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest in ("help", "version"):
                continue
            if action.help == argparse.SUPPRESS:  # a former flag name, hidden from --help
                continue
            text = (action.help or "").strip()
            if not text or text.startswith("(default") or _help_of(parser, action).count("(default") > 1:
                bare.append(f"{name} {(action.option_strings or [action.dest])[0]}")
    assert not bare, bare


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "noa.cli", "--version"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("noa 0.") and not done.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tiny_dataset: Path) -> None:
    """`noa data info X | head -1`: the reader is gone before the summary is written."""
    child = subprocess.Popen(
        [sys.executable, "-m", "noa.cli", "data", "info", str(tiny_dataset)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.close()  # the reader went away (noa is still importing torch)
    stderr = child.stderr.read().decode()
    assert child.wait() == 141
    assert stderr == "", stderr


def test_the_vq_librarys_messages_are_silenced_only_while_noa_initialises_codebooks() -> None:
    """A warning the VQ library logs outside the k-means pass (a deprecation, say) reaches the user."""
    from loguru import logger

    from noa.tokenizer.model import VQ_NOISE_MODULE, quiet_kmeans_init

    heard: list[str] = []
    sink = logger.add(lambda message: heard.append(message.record["message"]), level="WARNING")
    try:
        as_the_library = {"__name__": VQ_NOISE_MODULE, "logger": logger}
        with quiet_kmeans_init():
            exec("logger.warning('k-means init received 3 vectors')", as_the_library)
        exec("logger.warning('some later warning')", as_the_library)
    finally:
        logger.remove(sink)
    assert heard == ["some later warning"]


class _VectorQuantizeBefore134:
    def __init__(self, dim: int, threshold_ema_dead_code: float = 2) -> None: ...


class _VectorQuantizeFrom134:
    def __init__(
        self, dim: int, dead_code_threshold_ratio: float = 0.1, threshold_ema_dead_code: None = None
    ) -> None: ...


def test_the_dead_code_threshold_goes_to_the_keyword_the_installed_library_knows(monkeypatch) -> None:
    """1.34 deprecated the absolute count for a ratio (logging a warning for each codebook): noa
    passes the ratio where it exists, converted the way the library converts an old value, and
    the count to older versions."""
    import noa.tokenizer.model as model

    monkeypatch.setattr(model, "VectorQuantize", _VectorQuantizeBefore134)
    assert model.dead_code_arguments(0.5, 64) == {"threshold_ema_dead_code": 0.5}
    monkeypatch.setattr(model, "VectorQuantize", _VectorQuantizeFrom134)
    assert model.dead_code_arguments(0.5, 64) == {"dead_code_threshold_ratio": 0.5}
    assert model.dead_code_arguments(2, 64) == {"dead_code_threshold_ratio": 2 / 64}


def test_training_a_tokenizer_prints_no_kmeans_warning(tiny_dataset: Path, tmp_path: Path) -> None:
    # 36 training samples and codebooks of 64 codes: every codebook's k-means init is short of vectors (6 lines before).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "noa.cli",
            "vqvae",
            "train",
            "--dataset",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "vq"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--codebook-size",
            "64",
            "--levels",
            "2",
            "--latent-dim",
            "4",
            "--hidden",
            "16",
            "--no-progress",
            "--device",
            "cpu",
        ],
        env={**ENV, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "k-means init received" not in done.stderr + done.stdout and "WARNING" not in done.stderr


# Flag tables of docs/user-guide.md: the section they sit in -> the command they describe.
TABLE_SECTIONS = {"## Datasets": ("data", "generate"), "## Tokenizer": ("vqvae", "train"), "## Training": ("train",)}
NO_VALUE = ("", "none", "all", "all valid", "all five", "never", "(required)")


def _doc_rows() -> list[tuple[tuple[str, ...], str, str]]:
    """(command, flag, documented default) for every row of the guide's flag tables."""
    import re

    rows, command, in_flag_table = [], None, False
    for line in (REPO / "docs" / "user-guide.md").read_text().splitlines():
        if line.startswith("## "):
            command = TABLE_SECTIONS.get(line.strip())
        if line.startswith("|"):  # a table's header row says whether it lists flags and defaults
            in_flag_table = in_flag_table or line.startswith("| flag | default |")
        else:
            in_flag_table = False
        if command is None or not in_flag_table or not line.startswith("| `--"):
            continue
        flags_cell, default_cell = line.split("|")[1:3]
        flags = list(dict.fromkeys(f for f in re.findall(r"`(--[\w-]+)", flags_cell) if not f.startswith("--no-")))
        defaults = (
            [d.strip().strip("`") for d in default_cell.split(",")]
            if len(flags) > 1
            else [default_cell.strip().strip("`")]
        )
        defaults = defaults * len(flags) if len(defaults) == 1 else defaults  # "`--a`, `--b` | off"
        assert len(defaults) == len(flags), line
        rows += [(command, flag, default) for flag, default in zip(flags, defaults)]
    return rows


def _code_default(command: tuple[str, ...], flag: str) -> object:
    """The default the code uses: the parser's, or for `noa train` the TrainConfig's and for `noa vqvae train`'s
    settings a --preset sets the tokenizer job's (those flags default to None)."""
    key = flag[2:].replace("-", "_")
    if command == ("vqvae", "train"):
        from noa.tokenizer.job import DEFAULTS

        if key in DEFAULTS:
            return DEFAULTS[key]
    if command == ("train",):
        from noa.train.config import DATA_DEFAULTS, TrainConfig

        if key in DATA_DEFAULTS or key in TrainConfig().flags():
            return DATA_DEFAULTS.get(key) or TrainConfig().flags()[key]
    parser = build_parser()
    for word in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    action = next(a for a in parser._actions if flag in a.option_strings)
    return None if action.required else action.default


def _same(doc: str, code: object) -> bool:
    if code is None or code is False:
        return doc.lower() in NO_VALUE or (code is False and doc == "off")
    if code is True:
        return doc == "on"
    if isinstance(code, (int, float)) and not isinstance(code, bool):
        return doc.replace(".", "", 1).replace("e-", "", 1).isdigit() and float(doc) == float(code)
    return doc == str(code)


def test_the_user_guides_flag_tables_state_the_codes_defaults() -> None:
    rows = _doc_rows()
    assert len(rows) > 60  # the three tables were found
    drift = {
        (" ".join(cmd), flag, doc, _code_default(cmd, flag))
        for cmd, flag, doc in rows
        if not _same(doc, _code_default(cmd, flag))
    }
    assert not drift, sorted(drift, key=str)
