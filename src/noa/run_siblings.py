"""Run directories and their siblings: what holds a run, and the ``NAME-N`` directories a fresh
run moves to when ``NAME`` is taken.

Both ``noa train`` (which directory to write) and ``noa diagnose`` (is there a newer run beside
the checkpoint asked for?) ask these questions, so they live outside :mod:`noa.train`.
"""

from __future__ import annotations

import difflib
import glob
import re
from collections.abc import Callable
from pathlib import Path

from noa import outputs
from noa.train.checkpoint import run_checkpoints

# Files that mark a directory as holding a run (the lock file alone does not).
RUN_FILES = ("latest.json", "metrics.jsonl")


def checkpoints_in(directory: Path) -> list[str]:
    """Names of the checkpoint files in ``directory``, sorted."""
    return [p.name for p in run_checkpoints(directory)]


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds any run's checkpoints or logs."""
    return bool(checkpoints_in(directory)) or any((directory / name).exists() for name in RUN_FILES)


def free_sibling(directory: Path) -> Path:
    """The first ``<directory>-N`` (N >= 2) that holds no run."""
    directory = outputs.named(directory)
    n = 2
    while holds_run(directory.with_name(f"{directory.name}-{n}")):
        n += 1
    return directory.with_name(f"{directory.name}-{n}")


SIBLING_NAME = re.compile(r"^(?P<base>.+)-(?P<n>\d+)$")


def sibling_runs(directory: Path) -> list[Path]:
    """``directory``'s siblings: ``NAME`` and ``NAME-N`` beside it (``NAME`` being
    ``directory``'s name without a ``-N`` suffix), those that hold a run, ``directory`` left out."""
    base = _sibling_base(directory.name)
    named = [directory.with_name(base), *directory.parent.glob(f"{glob.escape(base)}-*")]
    return sorted(
        p
        for p in named
        if _sibling_base(p.name) == base and p.is_dir() and p.resolve() != directory.resolve() and holds_run(p)
    )


def _sibling_base(name: str) -> str:
    """``NAME`` of a run directory named ``NAME`` or ``NAME-N`` (N >= 2, as :func:`free_sibling` names them)."""
    match = SIBLING_NAME.match(name)
    return match["base"] if match and int(match["n"]) >= 2 else name


def newer_sibling_checkpoint(checkpoint: Path, same_run: Callable[[Path], bool]) -> Path | None:
    """The newest checkpoint file in a sibling run directory (:func:`sibling_runs`) written after
    ``checkpoint`` by a run of the same identity (``same_run`` of that directory's newest file:
    a fine-tune on other data beside it is another experiment, not a newer checkpoint); None when
    there is none. A fresh ``noa train`` without ``--checkpoint-dir`` writes to the first free
    sibling, so the checkpoint at the usual path may be an older run's."""
    mtime = checkpoint.stat().st_mtime
    newer = []
    for run in sibling_runs(checkpoint.parent):
        files = [p for name in checkpoints_in(run) if (p := run / name).stat().st_mtime > mtime]
        if files and same_run(max(files, key=lambda p: p.stat().st_mtime)):
            newer += files
    if not newer:
        return None
    newest = max(newer, key=lambda p: p.stat().st_mtime)
    same_name = newest.parent / checkpoint.name
    return same_name if same_name in newer else newest


def close_run(directory: Path) -> Path | None:
    """A directory beside ``directory`` that holds a run and whose name is close to its name
    (``checkpoints/run1`` for a typo'd ``checkpoints/rn1``), else None. ``NAME-N`` siblings
    are ``directory``'s own siblings, not typos of it."""
    parent = directory.parent
    if not parent.is_dir():
        return None
    runs = {
        p.name: p
        for p in parent.iterdir()
        if p.is_dir() and _sibling_base(p.name) != _sibling_base(directory.name) and holds_run(p)
    }
    close = difflib.get_close_matches(directory.name, sorted(runs), n=1, cutoff=0.8)
    return runs[close[0]] if close else None
