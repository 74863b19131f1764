"""Does θ-conditioning help? The same NOA trained twice, once seeing θ and once seeing zeros.

    python benchmarks/theta_conditioning.py            # ~400 samples, grid 16, T 16, 6 epochs

Both runs go through `noa train`'s own :class:`noa.train.loop.Trainer` with identical flags
and seed (so identical initialisation, split and batch order). In the blind run the model is
wrapped so that every call sees θ = 0, while the CNO target is untouched: the loop builds the
target from ``batch["params"]`` (``Trainer._target`` replays it from θ unless the dataset
caches trajectories), so zeroing θ in the batches themselves would also change the ground
truth. Wrapping ``trainer.objective.model`` blinds exactly the model, in training
(``train_batch``) and in validation (``eval_batch``) alike, and leaves the data, the target
and the checkpointed weights as they are.

θ = 0 is a valid, constant input (unit coordinates live in [0, 1]), so the blind model has
the same parameters and capacity but no information about the operator.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import torch
from common import WORK, cell, ensure_dataset, epoch_summaries, training_parser

from noa.data import h5
from noa.data.loader import split_rows, usable_rows
from noa.model.candidates import ThetaBlind
from noa.train.loop import Trainer
from noa.train.settle import settle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = training_parser(__doc__.split("\n\n")[0])
    return p.parse_args(argv)


def persistence_loss(args: argparse.Namespace, dataset: Path) -> float:
    """Validation L_traj of the do-nothing rollout x_t = x_0 (the untrained NOA starts near it)."""
    val = split_rows(usable_rows(dataset, None), args.val_split, args.seed).val
    with h5.open_dataset(dataset) as f:
        traj = torch.from_numpy(f["trajectories"][val][:, :, : args.timesteps + 1]).mean(dim=1)
    return float((traj[:, 1:] - traj[:, :1]).pow(2).mean())


def run(args: argparse.Namespace, dataset: Path, blind: bool) -> dict[str, list[float]]:
    name = "blind" if blind else "theta"
    values = {
        "dataset": str(dataset),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "bptt_window": args.bptt_window,
        "timesteps": args.timesteps,
        "warmup_steps": args.warmup_steps,
        "base_channels": args.base_channels,
        "encoder_levels": args.encoder_levels,
        "modes": args.modes,
        "afno_blocks": args.afno_blocks,
        "val_split": args.val_split,
        "seed": args.seed,
        "device": args.device,
        "checkpoint_dir": str(WORK / f"theta_run_{name}"),
        "save_every": 0,
        "log_every": 10**9,
    }
    shutil.rmtree(values["checkpoint_dir"], ignore_errors=True)  # a fresh run, fresh metrics.jsonl
    with epoch_summaries(f"{name} "):
        trainer = Trainer(settle(values))
        if blind:
            trainer.objective = dataclasses.replace(trainer.objective, model=ThetaBlind(trainer.model))
        start = time.perf_counter()
        history = trainer.fit().history
    print(f"  {name}: {time.perf_counter() - start:.0f} s, {trainer.batches_per_epoch} batches/epoch", flush=True)
    return history


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    dataset = ensure_dataset(args)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}: {args.n_samples} samples (val {args.val_split:.0%}), grid {args.grid}, T {args.timesteps}, "
        f"window {args.bptt_window}, batch {args.batch_size}, lr {args.lr}, widths base={args.base_channels} "
        f"levels={args.encoder_levels} modes={args.modes} afno={args.afno_blocks}, seed {args.seed}, {torch.get_num_threads()} threads",
        flush=True,
    )
    seen = run(args, dataset, blind=False)
    blind = run(args, dataset, blind=True)
    print("| epoch | train L_traj (θ) | train L_traj (θ=0) | val L_traj (θ) | val L_traj (θ=0) | val ratio θ/θ=0 |")
    print("|---|---|---|---|---|---|")
    for e, (ts, tb, vs, vb) in enumerate(
        zip(seen["train_traj"], blind["train_traj"], seen["val_traj"], blind["val_traj"]), 1
    ):
        print(f"| {e} | {cell(ts, '.5f')} | {cell(tb, '.5f')} | {vs:.5f} | {vb:.5f} | {vs / vb:.3f} |")
    print(
        f"\nPersistence baseline (x_t = x_0) on the same validation split: val L_traj {persistence_loss(args, dataset):.5f}"
    )
    final = seen["val_traj"][-1] / blind["val_traj"][-1]
    verdict = "beats" if final < 1 else "does NOT beat"
    print(f"Final val L_traj ratio (θ / θ=0): {final:.3f} -> the θ-conditioned NOA {verdict} the blind one.")


if __name__ == "__main__":
    main()
