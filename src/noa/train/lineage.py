"""Which run a run was fine-tuned from: recorded when it starts, kept by its resumes, followed back.

A fine-tune (``--init-from``, or ``--resume`` on other data) starts from another run's weights,
so the rows that run trained on are training rows of the fine-tune too: the diagnostics leave
them out of its held-out rows. Every checkpoint records its run's source under
:data:`SOURCE_KEY` (None for a run that started fresh), and a resume keeps it. Checkpoints written
before that was recorded tell it by their flags: ``--init-from``, or a ``--resume`` of a file
that another directory's run wrote on other data (a fine-tune never writes beside its source).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noa.errors import NoaError
from noa.train.checkpoint import load_checkpoint, recorded_path

SOURCE_KEY = "fine_tuned_from"


@dataclass(frozen=True)
class Source:
    """The checkpoint a run was fine-tuned from (None: it started fresh), or why that is unknown."""

    path: Path | None = None
    unknown: str | None = None


def source_at_start(kind: str, path: Path | None, ckpt: dict[str, Any] | None) -> str | None:
    """What a run starting from (``kind``, ``path``, ``ckpt``) records as its source: the file a
    fine-tune starts from, the resumed run's own source, nothing for a fresh run."""
    if kind == "finetune" and path is not None:
        return os.path.abspath(path)
    if kind == "resume" and path is not None and ckpt is not None:
        source = source_of(ckpt, path).path
        return None if source is None else str(source)
    return None


def source_of(ckpt: dict[str, Any], path: str | Path) -> Source:
    """The source of the run that wrote ``ckpt`` (read from ``path``)."""
    if SOURCE_KEY in ckpt:
        recorded = ckpt[SOURCE_KEY]
        return Source(Path(recorded) if recorded else None)
    init_from = recorded_path(ckpt, path, "init_from")
    if init_from is not None:
        return Source(init_from)
    return _legacy_resume_source(ckpt, path)


def _legacy_resume_source(ckpt: dict[str, Any], path: str | Path) -> Source:
    """An older checkpoint started by ``--resume FILE``: a fine-tune when FILE was written by a
    run in another directory on other data (a plain resume continues beside its file)."""
    if (ckpt.get("args") or {}).get("resume") in (None, "", "auto"):
        return Source()
    resumed, wrote_to = recorded_path(ckpt, path, "resume"), recorded_path(ckpt, path, "checkpoint_dir")
    assert resumed is not None
    if wrote_to is not None and resumed.parent == wrote_to:
        return Source()
    try:
        before = load_checkpoint(resumed)
    except NoaError as err:
        return Source(
            unknown=f"its run was started with --resume {resumed}, which cannot be read any more ({err}); "
            "if that start was a fine-tune (a resume on other data), the rows its source trained on are not known"
        )
    data = lambda c: (c.get("fingerprints") or {}).get("dataset")  # noqa: E731
    return Source(resumed if data(before) != data(ckpt) else None)


@dataclass(frozen=True)
class Ancestry:
    """The runs a run descends from, nearest first (path, checkpoint), and why the chain ends
    short of a fresh start (None: it reached one)."""

    runs: list[tuple[Path, dict[str, Any]]]
    unknown: str | None = None


def ancestry(ckpt: dict[str, Any], path: str | Path) -> Ancestry:
    """Every run the run that wrote ``ckpt`` was fine-tuned from, followed through each source."""
    runs: list[tuple[Path, dict[str, Any]]] = []
    seen = {Path(path).resolve()}
    while True:
        source = source_of(ckpt, path)
        if source.unknown is not None:
            return Ancestry(runs, f"{Path(path).name}: {source.unknown}")
        if source.path is None or source.path.resolve() in seen:
            return Ancestry(runs)
        try:
            ckpt, path = load_checkpoint(source.path), source.path
        except NoaError as err:
            return Ancestry(
                runs,
                f"{Path(path).name} was fine-tuned from {source.path}, which cannot be read any more ({err}); "
                "the rows that run (and any run before it) trained on are not known",
            )
        seen.add(source.path.resolve())
        runs.append((source.path, ckpt))
