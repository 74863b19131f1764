"""A rank SIGKILLed at a random moment under torchrun's restarts: does every trial end whole?

    python benchmarks/restart_trials.py --trials 10      # CPU, Gloo, 2 ranks, ~1 min a trial

Each trial runs one command line, as a cluster job would:

    torchrun --standalone --nproc_per_node 2 --max-restarts 2 -m noa train --resume auto ...

on a tiny dataset and model (3 epochs of 3 batches, a checkpoint every batch, one thread per
rank) and SIGKILLs one rank at one of three moments in turn (rank 0, the writer, for the first
three trials, rank 1 for the next three, and so on):

* ``mid-run``: up to 0.1 s after a random batch line (2 to 8 of 9);
* ``last checkpoint``: within a few ms of ``epoch_3.pt`` appearing (before or while
  ``best_model.pt`` and ``latest.json`` follow);
* ``teardown``: within a few ms of rank 0's ``Training finished`` line (the ranks are leaving
  the process group and exiting).

torchrun then restarts the group with the same line. A trial passes when torchrun exits 0 and
the run is complete: ``epoch_3.pt`` ends epoch 3, ``metrics.jsonl`` holds each batch and epoch
once, ``best_model.pt`` is the epoch with the lowest validation loss and ``latest.json`` points
at the newest file. The table says where each kill landed (the newest checkpoint then, or that
the rank had already exited), the exit status, what the restart said and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import WORK

from noa.data.generate import GenerateConfig, generate
from noa.train.checkpoint import load_checkpoint

MOMENTS = ("mid-run", "last checkpoint", "teardown")
EPOCHS, BATCHES = 3, 3  # 14 training samples, global batch 4 (2 per rank)
TRAIN_FLAGS = [
    "--n-samples", "16", "--epochs", str(EPOCHS), "--batch-size", "2", "--lr", "1e-3", "--bptt-window", "2",
    "--timesteps", "8", "--warmup-steps", "2", "--save-every", "1", "--base-channels", "8", "--encoder-levels", "2",
    "--modes", "4", "--afno-blocks", "1", "--device", "cpu", "--threads", "1", "--resume", "auto",
]  # fmt: skip


class Watched:
    """torchrun with its output read line by line on a thread, so the kill can wait for a line."""

    def __init__(self, cmd: list[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, after: int = 0) -> int | None:
        """The index of the first line from ``after`` on holding ``text``; None if the run ended first."""
        while True:
            for i in range(after, len(self.lines)):
                if text in self.lines[i]:
                    return i
            after = len(self.lines)
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.002)

    def ranks(self) -> dict[int, int]:
        """rank -> pid of torchrun's current worker processes."""
        found = {}
        for child in Path("/proc").glob("[0-9]*"):
            try:
                if int((child / "stat").read_text().split()[3]) != self.proc.pid:
                    continue
                env = (child / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            for item in env:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(child.name)
        return found

    def finish(self) -> str:
        self.proc.wait()
        self._reader.join()
        return "".join(self.lines)


def _arm(run: Watched, moment: str, rng: random.Random, ck: Path) -> bool:
    """Wait for the trial's moment; False when the run ended before it came."""
    if moment == "mid-run":
        batch = rng.randrange(1, EPOCHS * BATCHES - 1)  # after batch line 2 to 8 of the run's 9
        epoch, k = divmod(batch, BATCHES)
        start = run.wait_for(f"Epoch {epoch + 1}/{EPOCHS}")
        if start is None or run.wait_for(f"[{k + 1}/{BATCHES}]", start) is None:
            return False
        time.sleep(rng.uniform(0.0, 0.1))  # a batch takes about 0.2 s here
        return True
    if moment == "last checkpoint":
        last = ck / f"epoch_{EPOCHS}.pt"
        while not last.exists():
            if run.proc.poll() is not None:
                return False
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
        return True
    if run.wait_for("Training finished") is None:
        return False
    time.sleep(rng.uniform(0.0, 0.01))
    return True


def _landed(ck: Path) -> str:
    """What the run had written when the kill came: its newest checkpoint and latest.json's pointer."""
    files = sorted(ck.glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    newest = files[-1].name if files else "none"
    latest = ck / "latest.json"
    pointer = json.loads(latest.read_text())["path"] if latest.is_file() else "none"
    return f"{newest}, latest→{pointer}"


def _complete(ck: Path) -> str:
    """'yes', or what is missing from a whole run."""
    final = ck / f"epoch_{EPOCHS}.pt"
    if not final.is_file():
        return f"no {final.name}"
    last = load_checkpoint(final)
    cursor = last["parts"]["cursor"]
    if (cursor["epoch"], cursor["epoch_ended"]) != (EPOCHS - 1, True):
        return f"{final.name} stands at epoch {cursor['epoch'] + 1}"
    rows = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in rows if r["kind"] == "train_batch"]
    epochs = [r["epoch"] for r in rows if r["kind"] == "epoch"]
    if steps != list(range(1, EPOCHS * BATCHES + 1)) or epochs != list(range(1, EPOCHS + 1)):
        return f"metrics.jsonl steps {steps} epochs {epochs}"
    val = last["history"]["val_loss"]
    best_epoch = min(range(len(val)), key=lambda i: val[i]) + 1
    best = load_checkpoint(ck / "best_model.pt")
    if best["global_step"] != best_epoch * BATCHES:
        return f"best_model.pt at step {best['global_step']}, best epoch {best_epoch}"
    newest = max(ck.glob("*.pt"), key=lambda p: p.stat().st_mtime_ns).name
    pointer = json.loads((ck / "latest.json").read_text())
    if pointer != {"path": newest, "global_step": EPOCHS * BATCHES}:
        return f"latest.json {pointer}, newest {newest}"
    return "yes"


def trial(n: int, moment: str, rng: random.Random, dataset: Path, work: Path) -> dict[str, object]:
    ck = work / f"trial_{n}"
    shutil.rmtree(ck, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["--max-restarts", "2", "-m", "noa", "train", "--dataset", str(dataset), "--checkpoint-dir", str(ck)]
    started = time.perf_counter()
    run = Watched(cmd + TRAIN_FLAGS)
    rank = (n - 1) // len(MOMENTS) % 2  # each moment on rank 0 (the writer) and on rank 1 in turn
    landed = "run ended first"
    if _arm(run, moment, rng, ck):
        at = time.perf_counter() - started
        pid = run.ranks().get(rank)
        try:
            if pid is None:
                raise ProcessLookupError
            landed = f"{_landed(ck)} ({at:.1f}s)"  # read before the kill: the files it meets
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            landed = f"rank {rank} had exited ({at:.1f}s)"
    out = run.finish()
    seconds = time.perf_counter() - started
    restarted = "already complete" if "already complete" in out else "resumed" if "Resuming from" in out else "-"
    if "which a kill after the last epoch's checkpoint had left out" in out:
        restarted += ", wrote " + out.split("(wrote ", 1)[1].split(",", 1)[0]
    return {
        "trial": n,
        "moment": moment,
        "rank": rank,
        "landed": landed,
        "exit": run.proc.returncode,
        "restart": restarted,
        "complete": _complete(ck),
        "seconds": round(seconds, 1),
        "tail": out[-1500:],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seeds the ranks and moments of the kills")
    args = p.parse_args()
    work = WORK / "restart_trials"
    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "tiny.h5"
    if not dataset.exists():
        cfg = GenerateConfig(n_samples=16, grid=16, timesteps=8, seed=11, store_trajectories=True)
        generate(cfg, dataset, batch_size=16, progress=False, log=lambda _: None)
    rng = random.Random(args.seed)
    rows = []
    header = f"{'#':>2}  {'moment':<15} {'rank':>4}  {'landed (newest file then, s after start)':<44} exit  {'restart':<52} {'complete':<8} {'s':>6}"
    print(header, flush=True)
    for n in range(1, args.trials + 1):
        row = trial(n, MOMENTS[(n - 1) % len(MOMENTS)], rng, dataset, work)
        rows.append(row)
        print(
            f"{row['trial']:>2}  {row['moment']:<15} {row['rank']:>4}  {row['landed']:<44} {row['exit']:>4}  "
            f"{row['restart']:<52} {row['complete']:<8} {row['seconds']:>6}",
            flush=True,
        )
        if row["exit"] != 0 or row["complete"] != "yes":
            print("      " + str(row["tail"]).replace("\n", "\n      "), flush=True)
    whole = sum(r["exit"] == 0 and r["complete"] == "yes" for r in rows)
    print(f"\n{whole} of {len(rows)} trials ended with exit 0 and a complete run")
    return 0 if whole == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
