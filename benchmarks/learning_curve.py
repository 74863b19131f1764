"""A small end-to-end learning curve: dataset → tokenizer → `noa train` with all three losses.

    python benchmarks/learning_curve.py                       # L_traj + L_commit + L_latent
    python benchmarks/learning_curve.py --no-latent-loss      # L_traj + L_commit

Every stage is the toolkit's own: `noa data generate` (with features, the default, and the
trajectories cached so training skips the replay), `noa vqvae train`
(:func:`noa.tokenizer.job.train_tokenizer_on_dataset`) on the same dataset, then
:class:`noa.train.loop.Trainer` with ``--vqvae-path`` (and ``--enable-latent-loss``). It prints
the per-epoch train and validation L_traj, L_commit and L_latent, which should show L_traj
falling steadily and, with the latent loss on, L_latent falling too.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from noa.tokenizer.job import train_tokenizer_on_dataset
from noa.train.loop import Trainer
from noa.train.settle import settle

from common import WORK, cell, ensure_dataset, epoch_summaries, training_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = training_parser(__doc__.split("\n\n")[0])
    p.add_argument("--lambda-commit", type=float, default=0.5)
    p.add_argument("--lambda-latent", type=float, default=0.5)
    p.add_argument("--latent-sample-steps", type=int, default=3)
    p.add_argument("--no-latent-loss", action="store_true", help="train with L_traj + L_commit only")
    p.add_argument("--tokenizer-epochs", type=int, default=30)
    return p.parse_args(argv)


def ensure_tokenizer(args: argparse.Namespace, dataset: Path) -> Path:
    out = WORK / f"tokenizer_{dataset.stem}_e{args.tokenizer_epochs}"
    if not (out / "weights.pt").exists():
        metrics = train_tokenizer_on_dataset(
            dataset,
            out,
            epochs=args.tokenizer_epochs,
            seed=args.seed,
            val_split=args.val_split,
            overwrite=True,
            log=lambda _: None,
            progress=False,
        )
        print(f"  tokenizer: {metrics['train_seconds']:.0f} s, held-out {_brief(metrics)}", flush=True)
    return out


def _brief(metrics: dict) -> str:
    used = sum(c["utilization"] for c in metrics["codebooks"]) / len(metrics["codebooks"])
    return f"recon MSE {metrics['recon_mse']['total']:.3f}, mean codebook utilization {used:.0%}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dataset = ensure_dataset(args)
    tokenizer = ensure_tokenizer(args, dataset)
    latent = not args.no_latent_loss
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}: {args.n_samples} samples (val {args.val_split:.0%}), grid {args.grid}, T {args.timesteps}, "
        f"window {args.bptt_window}, batch {args.batch_size}, lr {args.lr} (warmup {args.warmup_steps}, cosine), widths base={args.base_channels} "
        f"levels={args.encoder_levels} modes={args.modes} afno={args.afno_blocks}, λ_commit {args.lambda_commit}"
        + (f", λ_latent {args.lambda_latent}, K={args.latent_sample_steps}" if latent else ", no L_latent")
        + f", {torch.get_num_threads()} threads; data+tokenizer {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    run_dir = WORK / f"curve_run_{'latent' if latent else 'commit'}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, fresh metrics.jsonl
    values = {
        "dataset": str(dataset),
        "vqvae_path": str(tokenizer),
        "enable_latent_loss": latent or None,
        "lambda_commit": args.lambda_commit,
        "lambda_latent": args.lambda_latent,
        "latent_sample_steps": args.latent_sample_steps,
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
        "checkpoint_dir": str(run_dir),
        "save_every": 0,
        "log_every": 10**9,
    }

    start = time.perf_counter()
    with epoch_summaries():
        history = Trainer(settle(values)).fit().history
    print(f"  training: {time.perf_counter() - start:.0f} s\n")
    keys = ["traj", "commit"] + (["latent"] if latent else [])
    print("| epoch | " + " | ".join(f"train {k} | val {k}" for k in keys) + " | epoch s |")
    print("|---" * (2 * len(keys) + 2) + "|")
    for e in range(len(history["train_traj"])):
        cells = " | ".join(f"{cell(history[f'train_{k}'][e])} | {cell(history[f'val_{k}'][e])}" for k in keys)
        print(f"| {e + 1} | {cells} | {history['epoch_seconds'][e]:.0f} |")


if __name__ == "__main__":
    main()
