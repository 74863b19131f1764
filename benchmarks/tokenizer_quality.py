"""Tokenizer quality on real toolkit data: held-out reconstruction MSE and codebook usage.

Generates a dataset with ``noa.data.generate`` (or reuses ``--dataset``, or a complete file of
the same configuration already in ``--workdir``), trains a tokenizer with
``noa.tokenizer.job.train_tokenizer_on_dataset`` (what `noa vqvae train` runs) and reports:

- normalized reconstruction MSE of decode(quantize(encode(x))) on the held-out split, total
  (the mean over every normalized value, so TEMPORAL weighs most) and per category;
- per codebook (category x level): utilization and perplexity on the held-out split, their
  mean and minimum, and utilization on the training split for context;
- wall times of generation and training.

The target is the guide's "excellent" tokenizer: held-out MSE < 0.1 and utilization > 70%
(mean over codebooks).

    python benchmarks/tokenizer_quality.py                       # 2000 samples, 32x32, T=32
    python benchmarks/tokenizer_quality.py --dataset my.h5 --epochs 60 --levels 3
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from pathlib import Path

import torch

from noa.data import h5
from noa.data.generate import GenerateConfig, generate
from noa.data.loader import split_rows, usable_rows
from noa.errors import NoaError
from noa.runtime import resolve_device
from noa.tokenizer import FEATURE_CATEGORIES, codebook_stats, load_tokenizer
from noa.tokenizer.job import train_tokenizer_on_dataset

TARGET_MSE = 0.1
TARGET_UTILIZATION = 0.7


def ensure_dataset(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The dataset to train on and the seconds spent generating it (None when reused)."""
    if args.dataset is not None:
        return Path(args.dataset), None
    path = Path(args.workdir) / f"cno_n{args.n_samples}_g{args.grid}_t{args.timesteps}_s{args.seed}.h5"
    if path.exists():
        print(f"reusing {path}")
        return path, None
    cfg = GenerateConfig(n_samples=args.n_samples, grid=args.grid, timesteps=args.timesteps, seed=args.seed)
    print(f"generating {path} ({args.n_samples} samples, {args.grid}x{args.grid}, T={args.timesteps})")
    start = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    generate(cfg, path, batch_size=16, device=args.device, resume=partial.exists(), progress=not args.no_progress)
    return path, time.perf_counter() - start


def train_split_usage(dataset: Path, tokenizer_dir: Path, args: argparse.Namespace) -> list[float]:
    """Utilization of each codebook on the training split (the split the job used)."""
    split = split_rows(usable_rows(dataset, args.train_samples), args.val_split, args.seed)
    with h5.open_dataset(dataset) as f:
        train = h5.read_features(f, split.train)
    model = load_tokenizer(tokenizer_dir, args.device)
    return [cb["utilization"] for cb in codebook_stats(model, train)]


def report(metrics: dict, train_usage: list[float], gen_s: float | None, args: argparse.Namespace) -> dict:
    """Print the figures and return them as a JSON-ready summary."""
    mse = metrics["recon_mse"]
    books = metrics["codebooks"]
    usage = [cb["utilization"] for cb in books]
    summary = {
        "config": {
            k: getattr(args, k)
            for k in ("epochs", "batch_size", "lr", "levels", "codebook_size", "latent_dim", "hidden", "seed")
        },
        "n_val": metrics["n_samples"],
        "recon_mse": mse,
        "utilization_mean": statistics.fmean(usage),
        "utilization_min": min(usage),
        "train_utilization_mean": statistics.fmean(train_usage),
        "perplexity_mean": statistics.fmean(cb["perplexity"] for cb in books),
        "generation_s": gen_s,
        "train_s": metrics["train_seconds"],
    }
    print(f"\nheld-out samples: {metrics['n_samples']}")
    print(
        "normalized reconstruction MSE: total {:.4f}  ".format(mse["total"])
        + "  ".join(f"{f} {mse[f]:.4f}" for f in FEATURE_CATEGORIES)
    )
    print(
        f"codebook utilization % on the held-out split, levels L0..L{args.levels - 1} ({books[0]['size']} codes each):"
    )
    for category in FEATURE_CATEGORIES:
        rows = [(cb, tr) for cb, tr in zip(books, train_usage) if cb["category"] == category]
        levels = " ".join(f"{100 * cb['utilization']:3.0f}" for cb, _ in rows)
        train_mean = statistics.fmean(tr for _, tr in rows)
        ppl = " ".join(f"{cb['perplexity']:.0f}" for cb, _ in rows)
        print(f"  {category:<9} {levels} | training split mean {100 * train_mean:.1f}% | perplexity {ppl}")
    print(
        f"utilization mean {100 * summary['utilization_mean']:.1f}%  min {100 * summary['utilization_min']:.1f}%  "
        f"(training split mean {100 * summary['train_utilization_mean']:.1f}%); mean perplexity {summary['perplexity_mean']:.1f}"
    )
    gen = "reused" if gen_s is None else f"{gen_s:.1f} s"
    print(f"wall time: generation {gen}, training {summary['train_s']:.1f} s")
    ok_mse = mse["total"] < TARGET_MSE
    ok_util = summary["utilization_mean"] > TARGET_UTILIZATION
    summary["target_met"] = ok_mse and ok_util
    print(
        f"target (MSE < {TARGET_MSE}, utilization > {100 * TARGET_UTILIZATION:.0f}%): "
        f"MSE {'met' if ok_mse else 'MISSED'}, utilization {'met' if ok_util else 'MISSED'}"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="reuse this dataset (with features) instead of generating one")
    parser.add_argument("--n-samples", type=int, default=2000, help="samples to generate; default 2000")
    parser.add_argument("--grid", type=int, default=32, help="grid of the generated dataset; default 32")
    parser.add_argument(
        "--timesteps", type=int, default=32, help="rollout length T of the generated dataset; default 32"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed; default 0")
    parser.add_argument(
        "--workdir", default="benchmarks/.work", help="where the dataset and tokenizer go (git-ignored)"
    )
    parser.add_argument("--train-samples", type=int, default=None, help="use the first N valid samples (default all)")
    parser.add_argument("--val-split", type=float, default=0.1, help="held-out fraction; default 0.1")
    # Training flags default to what `noa vqvae train` uses, so the benchmark measures the defaults.
    job = {name: p.default for name, p in inspect.signature(train_tokenizer_on_dataset).parameters.items()}
    for name, kind in (
        ("epochs", int),
        ("batch_size", int),
        ("lr", float),
        ("levels", int),
        ("codebook_size", int),
        ("latent_dim", int),
        ("hidden", int),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=job[name],
            help=f"default {job[name]} (as `noa vqvae train`)",
        )
    parser.add_argument("--device", default="cpu", help="cpu or cuda; default cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default torch's own choice")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except NoaError as err:
        raise SystemExit(f"error: {err}") from None


def run(args: argparse.Namespace) -> None:
    args.device = resolve_device(args.device)
    dataset, gen_s = ensure_dataset(args)
    out = Path(args.workdir) / f"tokenizer_{dataset.stem}"
    metrics = train_tokenizer_on_dataset(
        dataset,
        out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        levels=args.levels,
        codebook_size=args.codebook_size,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        seed=args.seed,
        device=args.device,
        val_split=args.val_split,
        n_samples=args.train_samples,
        overwrite=True,
        progress=not args.no_progress,
    )
    summary = report(metrics, train_split_usage(dataset, out, args), gen_s, args)
    result = Path(args.workdir) / f"tokenizer_quality_{dataset.stem}.json"
    result.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {result}")


if __name__ == "__main__":
    main()
