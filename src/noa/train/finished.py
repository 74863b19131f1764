"""A run that has done all its epochs, or ended by early stopping, met again by ``--resume auto``.

torchrun restarts the whole group when one rank dies, even after the last epoch's checkpoint
was written (a kill at teardown), and a scheduler may requeue a job that had finished: both
run the same ``--resume auto`` command again. That command then has nothing to train, which is
success, not a refusal (an explicit ``--resume FILE`` of a finished run is still refused: it
names one file, and continuing it needs a larger ``--epochs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from noa import outputs
from noa.train import rundir
from noa.train.bundle import stop_story, stopped_early
from noa.train.checkpoint import BEST_NAME, load_checkpoint, save_atomic
from noa.train.settle import StartingPoint


def plan_done(start: StartingPoint, epochs: int, patience: int | None) -> bool:
    """Whether ``--resume auto`` found a checkpoint that has ended exactly ``epochs`` epochs
    (more epochs than asked is another plan, refused by the resume itself), or one that ended
    the run by early stopping, which ``patience`` would stop again at once."""
    if not (start.auto and start.kind == "resume"):
        return False
    return rundir.position(start.saved, start.file)[1] == epochs or _stops_again(start.saved, patience)


def _stops_again(ckpt: dict[str, Any], patience: int | None) -> bool:
    waited = int(ckpt.get("parts", {}).get("early_stopping", {}).get("epochs_without_improvement", 0))
    return stopped_early(ckpt) and patience is not None and waited >= patience


def settle_the_ending(directory: Path, start: StartingPoint) -> list[str]:
    """Write what a kill between the last epoch's files left out (``best_model.pt`` of an epoch
    that improved, ``latest.json``), as the uninterrupted run left them; the names written."""
    ckpt = start.saved
    parts: dict[str, Any] = ckpt.get("parts", {})
    improved = parts.get("early_stopping", {}).get("epochs_without_improvement") == 0
    written = []
    best = directory / BEST_NAME
    if improved and start.file != best and not _same_step(best, ckpt):
        save_atomic(ckpt, best)  # the same state the run would have saved under this name
        written.append(BEST_NAME)
    pointer = {"path": BEST_NAME if improved else start.file.name, "global_step": int(ckpt["global_step"])}
    latest = directory / "latest.json"
    if not latest.is_file() or json.loads(latest.read_text()) != pointer:
        outputs.write_text_atomic(latest, json.dumps(pointer))
        written.append(latest.name)
    return written


def _same_step(path: Path, ckpt: dict[str, Any]) -> bool:
    return path.is_file() and load_checkpoint(path).get("global_step") == ckpt.get("global_step")


def message(start: StartingPoint, epochs: int) -> str:
    step, completed = rundir.position(start.saved, start.file)
    if completed != epochs:  # ended by early stopping
        return (
            f"--resume auto: the run in {start.file.parent} is already complete: {start.file.name} (step {step}) "
            f"{stop_story(start.saved)}; nothing to train. Raise --early-stop-patience to train on."
        )
    return (
        f"--resume auto: the run in {start.file.parent} is already complete ({start.file.name}: all {epochs} epochs, "
        f"step {step}); nothing to train. Raise --epochs to train on."
    )
