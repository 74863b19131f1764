"""A run that has done all its epochs, met again by ``--resume auto``.

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
from noa.train.checkpoint import BEST_NAME, load_checkpoint, save_atomic
from noa.train.settle import StartingPoint


def plan_done(start: StartingPoint, epochs: int) -> bool:
    """Whether ``--resume auto`` found a checkpoint that has ended exactly ``epochs`` epochs
    (more epochs than asked is another plan, refused by the resume itself)."""
    return start.auto and start.kind == "resume" and rundir.position(start.saved, start.file)[1] == epochs


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
    step = rundir.position(start.saved, start.file)[0]
    return (
        f"--resume auto: the run in {start.file.parent} is already complete ({start.file.name}: all {epochs} epochs, "
        f"step {step}); nothing to train. Raise --epochs to train on."
    )
