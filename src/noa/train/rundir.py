"""Which directory a run writes to, chosen so no run ever overwrites another run's files.

One directory holds one run's history. A fresh run or fine-tune that was not given
``--checkpoint-dir`` and finds the default directory taken moves to the first free sibling
(``checkpoints/noa-2``, ``-3`` …), so the guide's blocks run one after another in one place. A
resume from an earlier point of a run whose directory already holds later checkpoints branches
the same way, since continuing there would overwrite them. An explicit ``--checkpoint-dir``
is never changed: a clash is refused with the command that branches instead.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from noa import outputs
from noa.errors import NoaError
from noa.run_siblings import checkpoints_in, free_sibling, holds_run
from noa.train.checkpoint import step_from_name

log = logging.getLogger("noa.train")


def position(ckpt: dict[str, Any], path: Path) -> tuple[int, int]:
    """(global step, epochs completed) of a checkpoint: where a resume from it starts."""
    cursor = ckpt.get("parts", {}).get("cursor", {})
    step = cursor.get("global_step", ckpt.get("global_step"))
    parsed = step_from_name(path)
    if step is None and parsed is not None and parsed[0] == "step":
        step = parsed[1]
    if "epoch" in cursor:
        completed = int(cursor["epoch"]) + (1 if cursor.get("epoch_ended") else 0)
    elif parsed is not None and parsed[0] == "epoch":
        completed = parsed[1]
    else:
        completed = int(ckpt.get("epoch", 0))
    return int(step or 0), completed


def later_progress(directory: Path, step: int, completed: int) -> list[str]:
    """The files in ``directory`` that record training beyond (``step``, ``completed`` epochs)."""
    later = []
    for name in checkpoints_in(directory):
        parsed = step_from_name(name)
        if parsed is not None and parsed[1] > (step if parsed[0] == "step" else completed):
            later.append(name)
    latest = directory / "latest.json"
    if latest.is_file() and int(json.loads(latest.read_text()).get("global_step", 0)) > step:
        later.append(f"latest.json (step {json.loads(latest.read_text())['global_step']})")
    return later


def trim_metrics(directory: Path, step: int, completed: int) -> int:
    """Drop the lines of ``directory/metrics.jsonl`` beyond (``step``, ``completed`` epochs), and a
    torn last line: what a killed attempt logged after its last checkpoint, which the run now
    trains again. Returns how many lines went; the file is replaced whole."""
    path = directory / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _before(line, step, completed)]
    if len(kept) < len(lines):
        outputs.write_text_atomic(path, "".join(kept))
    return len(lines) - len(kept)


def _before(line: str, step: int, completed: int) -> bool:
    """Whether a metrics line is whole and records progress up to the starting point."""
    if not line.endswith("\n"):
        return False
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    if record.get("kind") == "epoch":
        return int(record.get("epoch", 0)) <= completed
    if record.get("kind") == "train_batch":
        return int(record.get("global_step", 0)) <= step
    return True


def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", …" if len(names) > 4 else "")


def choose(
    checkpoint_dir: str,
    *,
    kind: str,
    explicit: bool,
    overwrite: bool,
    resume_from: Path | None = None,
    resume_ckpt: dict[str, Any] | None = None,
    auto: bool = False,
) -> str:
    """The directory this run writes to (``checkpoint_dir`` or a free sibling), or NoaError.

    ``kind`` is the starting point (fresh, resume, finetune); ``explicit`` says whether the user
    named ``--checkpoint-dir`` (on the command line or in a config file). ``--resume auto`` picked
    the newest intact checkpoint, so anything later is torn and may be replaced; with no
    checkpoint there, it starts this directory's run.
    """
    directory = Path(checkpoint_dir)
    if auto and kind == "fresh":  # --resume auto found no checkpoint: this directory's run starts
        return checkpoint_dir
    if kind == "resume":
        assert resume_from is not None
        # A resume continues beside the file it resumes (where the run was, even if moved since).
        directory = directory if explicit else resume_from.parent
        return str(directory) if auto else _for_resume(directory, explicit, resume_from, resume_ckpt or {})
    if overwrite and resume_from is not None and directory.resolve() == resume_from.parent.resolve():
        raise NoaError(
            f"--overwrite would delete the run in {directory}, whose {resume_from.name} this fine-tune starts from "
            f"(with its best model and metrics); give the fine-tune its own directory, e.g. "
            f"--checkpoint-dir {shlex.quote(str(free_sibling(directory)))}{'' if explicit else ' (or drop --overwrite: it then writes there by itself)'}"
        )
    # The default is passed over even when it holds only an earlier run's logs (a run stopped before
    # its first checkpoint); a named directory is refused only for checkpoints, as it always was.
    taken = checkpoints_in(directory) if explicit else holds_run(directory)
    if overwrite or not taken:
        return checkpoint_dir
    if explicit:
        raise NoaError(
            f"--checkpoint-dir {directory} already holds checkpoints ({_listing(checkpoints_in(directory))}); continue that "
            f"run with --resume auto, choose another --checkpoint-dir (e.g. {free_sibling(directory)}), or pass --overwrite to delete them"
        )
    sibling = free_sibling(directory)
    log.info(
        f"{directory} holds another run (kept as it is); this {'fine-tune' if kind == 'finetune' else 'run'} writes to {sibling}"
    )
    return str(sibling)


def _for_resume(directory: Path, explicit: bool, path: Path, ckpt: dict[str, Any]) -> str:
    """A resume continues in its directory unless that would overwrite later checkpoints."""
    own = directory.resolve() == path.parent.resolve()
    step, completed = position(ckpt, path)
    if not own and checkpoints_in(directory):
        blocking = checkpoints_in(directory)
    else:
        blocking = later_progress(directory, step, completed)
    if not blocking:
        return str(directory)
    sibling = free_sibling(directory)
    if explicit and not own:
        raise NoaError(
            f"--checkpoint-dir {directory} holds another run's checkpoints ({_listing(blocking)}), which a resume from "
            f"{path} would mix with its own; resume into a new directory: "
            f"noa train --resume {shlex.quote(str(path))} --checkpoint-dir {shlex.quote(str(sibling))}"
        )
    if explicit:
        raise NoaError(
            f"--checkpoint-dir {directory} already holds checkpoints beyond {path.name} (step {step}): {_listing(blocking)}; "
            f"resuming there would overwrite them. To branch from {path.name}, resume into a new directory: "
            f"noa train --resume {shlex.quote(str(path))} --checkpoint-dir {shlex.quote(str(sibling))}"
        )
    log.info(
        f"{directory} already holds checkpoints beyond {path.name} (step {step}): {_listing(blocking)} (kept as they are); "
        f"this resume branches into {sibling}"
    )
    return str(sibling)
