"""How diverse in behaviour two datasets' operator families are, from their stored features.

Issue 15 redesigned the CNO family (θ now identifies the operator); this compares the spread of
the behavioural features of a dataset made with the new family against one made with the old
family, same size, grid, T, seed and ICs. It reads ``/features`` with h5py directly, so it opens
files of any dataset format version. Per feature category (INITIAL, SUMMARY, TEMPORAL flattened
over time), with every column standardized by the mean and std of the two datasets pooled:

- spread = mean over columns of the dataset's variance (1.0 = as spread as the pool; a family
  that covers less behaviour than the other scores below 1, the other above);
- effective dimension = participation ratio (Σλ)² / Σλ² of the eigenvalues of the dataset's own
  correlation matrix: how many independent directions its behaviour varies along.

INITIAL depends on the ICs only, which both datasets share: it is the control (spread ≈ 1).
``--bootstrap N`` adds 95% intervals over N resamplings of the samples (with replacement) of
each effective dimension and of the spread difference: how far the figures move with the draw
of 2000 operators alone.

    python benchmarks/family_diversity.py OLD.h5 NEW.h5 --bootstrap 200
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

CATEGORIES = ("initial", "summary", "temporal")


def load(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        ok = f["metadata/valid"][:] & f["features/done"][:]
        return {c: f["features"][c][:][ok].reshape(int(ok.sum()), -1).astype(np.float64) for c in CATEGORIES}


def effective_dimension(x: np.ndarray) -> float:
    std = x.std(axis=0)
    z = (x[:, std > 0] - x[:, std > 0].mean(axis=0)) / std[std > 0]
    eig = np.linalg.eigvalsh(np.cov(z, rowvar=False))
    eig = np.clip(eig, 0, None)
    return float(eig.sum() ** 2 / (eig**2).sum())


def spreads(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Each dataset's mean column variance, columns standardized over both pooled."""
    pooled = np.concatenate([a, b])
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    keep = std > 0
    return tuple(float(((x[:, keep] - mean[keep]) / std[keep]).var(axis=0).mean()) for x in (a, b))


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for c in CATEGORIES:
        spread_a, spread_b = spreads(a[c], b[c])
        out[c] = {
            "spread_a": spread_a,
            "spread_b": spread_b,
            "dim_a": effective_dimension(a[c]),
            "dim_b": effective_dimension(b[c]),
        }
    return out


def spread_difference_interval(a: np.ndarray, b: np.ndarray, repeats: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of spread B - spread A when both datasets' rows are resampled."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(repeats):
        spread_a, spread_b = spreads(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
        diffs.append(spread_b - spread_a)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def bootstrap_interval(x: np.ndarray, repeats: int, seed: int = 0) -> tuple[float, float]:
    """The 2.5% and 97.5% quantiles of the effective dimension over resampled rows of ``x``."""
    rng = np.random.default_rng(seed)
    dims = [effective_dimension(x[rng.integers(0, len(x), len(x))]) for _ in range(repeats)]
    return float(np.quantile(dims, 0.025)), float(np.quantile(dims, 0.975))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="first dataset (e.g. the old family)")
    p.add_argument("b", help="second dataset (e.g. the new family)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="resamplings for 95%% intervals of the effective dimensions (0 = none)",
    )
    args = p.parse_args()
    a, b = load(args.a), load(args.b)
    print(f"A = {args.a} ({len(a['initial'])} valid samples), B = {args.b} ({len(b['initial'])} valid samples)")
    print("| category | spread A | spread B | spread B - A (95%) | effective dim A | effective dim B |")
    print("|---|---:|---:|---:|---:|---:|")
    for c, r in compare(a, b).items():
        dims = [f"{r['dim_a']:.1f}", f"{r['dim_b']:.1f}"]
        difference = f"{r['spread_b'] - r['spread_a']:+.3f}"
        if args.bootstrap:
            dims = [
                f"{d} ({lo:.1f}–{hi:.1f})"
                for d, (lo, hi) in zip(dims, (bootstrap_interval(x[c], args.bootstrap) for x in (a, b)))
            ]
            difference += " ({:+.3f} to {:+.3f})".format(*spread_difference_interval(a[c], b[c], args.bootstrap))
        print(f"| {c} | {r['spread_a']:.3f} | {r['spread_b']:.3f} | {difference} | {dims[0]} | {dims[1]} |")


if __name__ == "__main__":
    main()
