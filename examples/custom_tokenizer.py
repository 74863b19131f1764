"""A tokenizer that is not noa's: per feature category, PCA plus a k-means codebook, in torch.

It meets ``noa.TokenizerProtocol`` (docs/api.md), so noa trains a NOA against it (L_commit and
L_latent) and diagnoses with it exactly as with its own VQ-VAE. Fit it on a dataset's stored
features and save it, then name the class when training:

    python examples/custom_tokenizer.py --dataset datasets/100k_full_features.h5 --out checkpoints/pca_tokenizer
    noa train --dataset datasets/100k_full_features.h5 --vqvae-path checkpoints/pca_tokenizer \\
        --vqvae-class examples/custom_tokenizer.py:PCATokenizer --enable-latent-loss

Per feature category (initial, summary, temporal) it standardizes the columns it reads, projects them onto their
first ``components`` principal directions, whitened to unit variance (the latent, one entry per
category), and quantizes that latent to the nearest of ``codes`` k-means centres. Everything it draws comes from one
explicit generator seeded by ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

# The columns it reads, as per-channel stems of noa's feature registry (noa.features.feature_names
# lists every column; the tokenizer gets exactly those it names).
STEMS = {
    "initial": ("std", "grad_energy", "spectral_slope"),
    "summary": ("growth_rate", "log_energy_ratio", "autocorr_lag1", "roughness", "ic_corr_final"),
    "temporal": ("mean", "std", "grad_energy"),
}
WEIGHTS, META = "pca_tokenizer.pt", "pca_tokenizer.json"
STD_FLOOR = 1e-6  # a column more constant than this is not scaled up (its round-off would dominate)


def column_names(channels: int) -> dict[str, list[str]]:
    """The feature columns the tokenizer reads for ``channels`` channels, per category."""
    return {category: [f"{stem}_c{k}" for stem in stems for k in range(channels)] for category, stems in STEMS.items()}


class PCATokenizer:
    """Per category: standardize, project on principal directions, quantize with k-means codes."""

    def __init__(self, meta: dict, state: Mapping[str, Tensor]) -> None:
        self.feature_names: dict[str, list[str]] = meta["feature_names"]
        self.timesteps, self.channels, self.grid = meta["timesteps"], meta["channels"], meta["grid"]
        self.categories = list(self.feature_names)
        self.state = {name: tensor.float() for name, tensor in state.items()}
        self.entries = [(category, 0) for category in self.categories]
        self.codebook_sizes = [self.state[f"{c}.codebook"].shape[0] for c in self.categories]
        self.latent_dim = sum(self.state[f"{c}.encoder"].shape[1] for c in self.categories)

    # ---- the protocol ------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path) -> PCATokenizer:
        """The tokenizer :meth:`save` wrote to ``directory`` (tensors only: loading runs no code)."""
        meta = json.loads((Path(directory) / META).read_text())
        state = torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
        return cls(meta, state)

    def to(self, device: torch.device) -> PCATokenizer:
        self.state = {name: tensor.to(device) for name, tensor in self.state.items()}
        return self

    def encode(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        """One latent ``[N, components]`` per category: linear in the features, so gradients pass."""
        return [self._standardized(features, c) @ self.state[f"{c}.encoder"] for c in self.categories]

    def quantize(self, latents: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        codes, indices = [], []
        for category, z in zip(self.categories, latents):
            codebook = self.state[f"{category}.codebook"]
            index = torch.cdist(z.detach(), codebook).argmin(dim=1)
            codes.append(codebook[index])
            indices.append(index)
        return codes, indices

    def reconstruction_mse(self, features: Mapping[str, Tensor]) -> dict[str, float]:
        """MSE of the standardized columns against their codes mapped back (1.0: predicting the mean)."""
        codes, _ = self.quantize(self.encode(features))
        sse, count = {}, {}
        for category, z_q in zip(self.categories, codes):
            target = self._standardized(features, category)
            sse[category] = float((z_q @ self.state[f"{category}.decoder"] - target).double().pow(2).sum())
            count[category] = target.numel()
        mse = {category: sse[category] / count[category] for category in self.categories}
        return {**mse, "total": sum(sse.values()) / sum(count.values())}

    def _standardized(self, features: Mapping[str, Tensor], category: str) -> Tensor:
        x = features[category].flatten(1)  # temporal [N, T+1, D] -> [N, (T+1)·D]
        return (x - self.state[f"{category}.mean"]) / self.state[f"{category}.std"]

    # ---- fitting and saving -------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: Mapping[str, Tensor],
        meta: dict,
        *,
        components: int = 4,
        codes: int = 16,
        iterations: int = 25,
        seed: int = 0,
    ) -> PCATokenizer:
        """Fit on ``features`` (the columns ``meta["feature_names"]`` names, per category)."""
        generator = torch.Generator().manual_seed(seed)
        state: dict[str, Tensor] = {}
        for category in meta["feature_names"]:
            x = features[category].flatten(1).double()
            if x.shape[0] < codes:
                raise ValueError(f"{x.shape[0]} samples cannot fill {codes} codes; lower --codes or use more samples")
            mean = x.mean(dim=0)
            std = x.std(dim=0, unbiased=False).clamp_min(STD_FLOOR)
            standardized = (x - mean) / std
            _, singular, vh = torch.linalg.svd(standardized, full_matrices=False)
            kept = min(components, vh.shape[0])
            spread = (singular[:kept] / x.shape[0] ** 0.5).clamp_min(STD_FLOOR)  # each direction's std
            directions = vh[:kept].T
            state[f"{category}.mean"], state[f"{category}.std"] = mean, std
            state[f"{category}.encoder"] = directions / spread  # whitened: unit-variance latents
            state[f"{category}.decoder"] = (directions * spread).T
            latents = standardized @ state[f"{category}.encoder"]
            state[f"{category}.codebook"] = kmeans(latents, codes, iterations, generator)
        return cls(meta, state)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({name: tensor.cpu() for name, tensor in self.state.items()}, directory / WEIGHTS)
        meta = dict(feature_names=self.feature_names, timesteps=self.timesteps, channels=self.channels, grid=self.grid)
        (directory / META).write_text(json.dumps(meta, indent=2) + "\n")


def kmeans(points: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means from k distinct points drawn with ``generator``; an empty cluster keeps its centre."""
    centres = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        assignment = torch.cdist(points, centres).argmin(dim=1)
        for j in range(k):
            members = points[assignment == j]
            if len(members):
                centres[j] = members.mean(dim=0)
    return centres


# ---- the command ------------------------------------------------------------------------


def fit_on_dataset(
    dataset: Path,
    out: Path,
    *,
    components: int,
    codes: int,
    seed: int,
    n_samples: int | None = None,
    val_split: float = 0.1,
) -> PCATokenizer:
    """Fit on the training rows of the split `noa train --val-split V --seed S` makes of the
    first ``n_samples`` valid samples (all by default), save to ``out`` and print the
    reconstruction MSE on the held-out rows: the rows `noa diagnose` scores a NOA of that split
    on are then held out from the tokenizer too, as they are for `noa vqvae train`'s."""
    from noa.data import h5
    from noa.data.loader import split_rows, usable_rows

    split = split_rows(usable_rows(dataset, n_samples), val_split, seed)
    if len(split.val) == 0:
        raise ValueError("the held-out split is empty; raise --val-split or use more samples")
    with h5.open_dataset(dataset) as f:
        info = h5.read_info(f)
        stored = h5.feature_names(f)
        names = column_names(info.channels)
        train, held_out = (
            {
                category: values[category][..., [stored[category].index(name) for name in columns]]
                for category, columns in names.items()
            }
            for values in (h5.read_features(f, split.train), h5.read_features(f, split.val))
        )
    meta = {"feature_names": names, "timesteps": info.timesteps, "channels": info.channels, "grid": info.grid}
    tokenizer = PCATokenizer.fit(train, meta, components=components, codes=codes, seed=seed)
    tokenizer.save(out)
    mse = tokenizer.reconstruction_mse(held_out)
    print(
        f"PCATokenizer: fitted on {len(split.train)} samples of {dataset} (T={info.timesteps}, {info.channels} "
        f"channels, {info.grid}x{info.grid}); reconstruction MSE on the {len(split.val)} held out "
        f"(--val-split {val_split:g}, --seed {seed}: noa train's split) "
        + ", ".join(f"{name} {value:.3f}" for name, value in mse.items())
    )
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit the example PCA + k-means tokenizer on a noa dataset.")
    parser.add_argument("--dataset", required=True, help="dataset .h5 written by `noa data generate`")
    parser.add_argument("--out", required=True, help="directory to write the tokenizer to (new or empty)")
    parser.add_argument("--components", type=int, default=4, help="principal directions per category (default 4)")
    parser.add_argument("--codes", type=int, default=16, help="k-means codes per category (default 16)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split (as noa train's) and of the k-means initialisation (default 0)",
    )
    parser.add_argument(
        "--n-samples", type=int, default=None, help="split the first N valid samples (default all; PCA needs few)"
    )
    parser.add_argument(
        "--val-split",
        type=float,
        default=0.1,
        help="fraction held out, as noa train's --val-split (default 0.1); fitted on the rest",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} exists and is not an empty directory; choose another --out", file=sys.stderr)
        return 2
    if args.components < 1 or args.codes < 1:
        print("error: --components and --codes must be at least 1", file=sys.stderr)
        return 2
    from noa.errors import NoaError

    start = time.perf_counter()
    try:
        fit_on_dataset(
            Path(args.dataset),
            out,
            components=args.components,
            codes=args.codes,
            seed=args.seed,
            n_samples=args.n_samples,
            val_split=args.val_split,
        )
    except (NoaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"fitted in {time.perf_counter() - start:.2f} s; saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
