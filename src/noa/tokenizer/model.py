"""The frozen behavioural tokenizer: a categorical, hierarchical VQ-VAE over rollout features.

Each feature category (INITIAL, SUMMARY, TEMPORAL) has its own encoder, ``levels`` residual quantizers and a
decoder. Level 0 quantizes the encoder output; level l quantizes what levels < l left over,
so the codes of one category refine each other from coarse to fine. Normalization lives
inside the model (buffers fitted on the training split), so callers always pass raw
features, and the NOA sees the exact transform the tokenizer was trained with.

The split ``encode`` / ``quantize`` / ``decode`` is what NOA training needs: it trains
*through* ``encode`` with the tokenizer frozen (``L_commit = mean MSE(z, z_q.detach())``),
so ``encode`` is a pure, differentiable function of the features and never touches the
codebooks' statistics.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from noa.errors import NoaError
from noa.features.registry import FEATURE_CATEGORIES
from noa.tokenizer.directory import CONFIG_FILE, WEIGHTS_FILE, config_data, existing_dir
from noa.torchfile import load_pt

# vector_quantize_pytorch logs (through loguru) "k-means init received N vectors for a codebook of
# M - duplicates will be sampled" once per codebook at its first batch: an expected event of small
# datasets, 3 categories x levels lines long. noa initialises every codebook in one place
# (tokenizer/train.py, `_init_codebooks`), which silences that module's messages for that pass
# only (`quiet_kmeans_init`); anything else the library logs reaches the user.
VQ_NOISE_MODULE = "vector_quantize_pytorch.vector_quantize_pytorch"


@contextmanager
def quiet_kmeans_init() -> Iterator[None]:
    """Silence the VQ library's log lines for the k-means initialisation pass, and only for it."""
    from loguru import logger

    logger.disable(VQ_NOISE_MODULE)
    try:
        yield
    finally:
        logger.enable(VQ_NOISE_MODULE)


def dead_code_arguments(threshold: float, codebook_size: int) -> dict[str, float]:
    """The VectorQuantize keyword for noa's dead-code threshold, in the installed library's terms.

    vector-quantize-pytorch 1.34 replaced ``threshold_ema_dead_code`` (an absolute EMA count)
    with ``dead_code_threshold_ratio`` (a fraction of the mean cluster size) and reads an old
    value the way this does: below 1 as the fraction itself, from 1 up divided by the codebook
    size. Passing the new keyword where it exists keeps each version's behaviour exactly and
    spares the user its deprecation warning; older versions get the keyword they know.
    """
    if "dead_code_threshold_ratio" not in inspect.signature(VectorQuantize.__init__).parameters:
        return {"threshold_ema_dead_code": threshold}
    return {"dead_code_threshold_ratio": threshold if threshold < 1 else threshold / codebook_size}


# A train-split std below this (absolute + relative to the mean) marks a feature as constant:
# normalizing by it would turn float round-off (and any NOA deviation) into huge values.
STD_FLOOR_ABS = 1e-6
STD_FLOOR_REL = 1e-4

# The temporal encoder pools its downsampled sequence to this many frames before the
# linear map to the latent, so coarse time order survives the pooling.
TEMPORAL_POOLED_FRAMES = 4


@dataclass
class TokenizerConfig:
    """Everything needed to rebuild a tokenizer, plus the data it is valid for."""

    feature_dims: dict[str, int]
    feature_names: dict[str, list[str]]
    timesteps: int  # T; temporal features have T + 1 frames
    channels: int  # of the rollouts the features came from (compatibility checks only)
    grid: int
    latent_dim: int = 16  # per category per level
    # Many small residual levels rather than big codebooks: TEMPORAL features of stochastic
    # rollouts need ~70 bits to reach held-out MSE < 0.1 (benchmarks/tokenizer_quality.py), and
    # 64-code books stay > 70% used even on a few hundred held-out samples.
    levels: int = 12
    codebook_size: int = 64
    hidden: int = 256
    commitment_weight: float = 0.25
    ema_decay: float = 0.95
    # When a code restarts. vector-quantize-pytorch < 1.34 reads it as EMA hits per training
    # batch (keep it well under the mean batch_size / codebook_size, 2 at 128 / 64, or healthy
    # codes keep being replaced); 1.34 and newer as a fraction of the mean cluster size
    # (`dead_code_arguments`).
    dead_code_threshold: float = 0.5
    kmeans_iters: int = 10

    def __post_init__(self) -> None:
        problems = []
        if set(self.feature_dims) != set(FEATURE_CATEGORIES) or set(self.feature_names) != set(FEATURE_CATEGORIES):
            problems.append(
                f"feature_dims and feature_names need exactly the categories {list(FEATURE_CATEGORIES)}, "
                f"got {sorted(self.feature_dims)} and {sorted(self.feature_names)}"
            )
        else:
            for category in FEATURE_CATEGORIES:
                names, dim = self.feature_names[category], self.feature_dims[category]
                if not isinstance(dim, int) or dim < 1 or len(names) != dim:
                    problems.append(f"{category}: feature_dims says {dim} but {len(names)} names are given")
                elif len(set(names)) != len(names):
                    problems.append(f"{category}: feature names repeat")
        integers = ("timesteps", "channels", "grid", "latent_dim", "levels", "codebook_size", "hidden", "kmeans_iters")
        for name in integers:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("commitment_weight", "ema_decay", "dead_code_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.ema_decay, (int, float)) and not 0.0 < self.ema_decay < 1.0:
            problems.append(f"ema_decay must lie in (0, 1), got {self.ema_decay!r}")
        threshold, size = self.dead_code_threshold, self.codebook_size
        if isinstance(threshold, (int, float)) and isinstance(size, int) and size >= 1 and threshold >= size:
            problems.append(f"dead_code_threshold must be below codebook_size ({size}), got {threshold!r}")
        if problems:
            raise NoaError("invalid tokenizer config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TokenizerConfig:
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown, missing = set(d) - known, required - set(d)
        if unknown or missing:
            raise NoaError(
                f"tokenizer config does not fit this version of noa: missing keys {sorted(missing)}, "
                f"unknown keys {sorted(unknown)}"
            )
        dims, names = d["feature_dims"], d["feature_names"]
        if not (
            isinstance(dims, Mapping)
            and isinstance(names, Mapping)
            and all(isinstance(v, list) for v in names.values())
        ):
            raise NoaError("tokenizer config: feature_dims must map category -> int and feature_names category -> list")
        values = dict(d)
        values["feature_dims"] = dict(dims)
        values["feature_names"] = {k: [str(n) for n in v] for k, v in names.items()}
        return cls(**values)


def load_config(path: str | Path) -> TokenizerConfig:
    """The config of the tokenizer directory ``path`` (no weights are read)."""
    data = config_data(path)
    try:
        return TokenizerConfig.from_dict(data)
    except NoaError as err:
        raise NoaError(f"{Path(path) / CONFIG_FILE}: {err}") from err


@contextmanager
def isolated_global_rng(seed: int, device: str | torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG (CPU and ``device``) seeded, then restore it.

    ``vector_quantize_pytorch`` draws its k-means initialisation and dead-code restarts from
    the global RNG, and torch's default layer initialisation does too. Confining those draws
    here makes them a function of our derived seed and leaves the caller's RNG untouched.
    """
    device = torch.device(device)
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        for index in cuda_devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class TemporalEncoder(nn.Module):
    """[N, T+1, D] -> [N, latent]: strided 1-D convolutions over time, pooled to a few frames."""

    def __init__(self, dim: int, frames: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        width = max(hidden // 2, 8)
        layers: list[nn.Module] = [nn.Conv1d(dim, width, kernel_size=5, padding=2), nn.GELU()]
        length = frames
        while length >= 4 * TEMPORAL_POOLED_FRAMES:
            layers += [nn.Conv1d(width, width, kernel_size=4, stride=2, padding=1), nn.GELU()]
            length //= 2
        layers.append(nn.AdaptiveAvgPool1d(TEMPORAL_POOLED_FRAMES))
        self.convs = nn.Sequential(*layers)
        self.head = _mlp([width * TEMPORAL_POOLED_FRAMES, hidden, latent_dim])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x.transpose(1, 2)).flatten(1))


class TemporalDecoder(nn.Module):
    """[N, latent] -> [N, T+1, D]: an MLP whose last layer is a learned map onto all frames."""

    def __init__(self, dim: int, frames: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.frames, self.dim = frames, dim
        self.net = _mlp([latent_dim, hidden, hidden, frames * dim])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, self.frames, self.dim)


class CategoricalVQVAE(nn.Module):
    """Per-category encoders, residual codebooks and decoders, with normalization built in."""

    normalization_set: Tensor  # a buffer: whether fit_normalization has run

    def levels_of(self, category: str) -> nn.ModuleList:
        """The residual quantizers of ``category``, level by level (typed: ModuleDict items are plain Modules)."""
        return cast(nn.ModuleList, self.quantizers[category])

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        frames, hidden, latent = config.timesteps + 1, config.hidden, config.latent_dim
        dims = config.feature_dims
        self.encoders = nn.ModuleDict(
            {
                "initial": _mlp([dims["initial"], hidden, hidden, latent]),
                "summary": _mlp([dims["summary"], hidden, hidden, latent]),
                "temporal": TemporalEncoder(dims["temporal"], frames, hidden, latent),
            }
        )
        self.decoders = nn.ModuleDict(
            {
                "initial": _mlp([latent, hidden, hidden, dims["initial"]]),
                "summary": _mlp([latent, hidden, hidden, dims["summary"]]),
                "temporal": TemporalDecoder(dims["temporal"], frames, hidden, latent),
            }
        )
        self.quantizers = nn.ModuleDict(
            {
                category: nn.ModuleList(
                    VectorQuantize(
                        dim=latent,
                        codebook_size=config.codebook_size,
                        decay=config.ema_decay,
                        kmeans_init=True,
                        kmeans_iters=config.kmeans_iters,
                        **dead_code_arguments(config.dead_code_threshold, config.codebook_size),
                        commitment_weight=config.commitment_weight,
                        rotation_trick=False,  # plain straight-through, matching encode()'s residuals
                        sync_codebook=False,  # trained in one process: never all-reduce codebooks
                    )
                    for _ in range(config.levels)
                )
                for category in FEATURE_CATEGORIES
            }
        )
        for category in FEATURE_CATEGORIES:
            self.register_buffer(f"mean_{category}", torch.zeros(dims[category]))
            self.register_buffer(f"std_{category}", torch.ones(dims[category]))
        self.register_buffer("normalization_set", torch.tensor(False))

    # ---- sizes -------------------------------------------------------------------------

    @property
    def entries(self) -> list[tuple[str, int]]:
        """(category, level) of each encode/quantize entry, category-major."""
        return [(category, level) for category in FEATURE_CATEGORIES for level in range(self.config.levels)]

    @property
    def latent_dim(self) -> int:
        """Width of all encode outputs concatenated (what the NOA's projector targets)."""
        return len(self.entries) * self.config.latent_dim

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.config.codebook_size for _ in self.entries]

    # ---- the tokenizer protocol (noa.tokenizer.protocol): what it reads and fits ----------

    @property
    def feature_names(self) -> dict[str, list[str]]:
        """The feature columns it was trained on, per category (all of them, in registry order)."""
        return self.config.feature_names

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def grid(self) -> int:
        return self.config.grid

    @classmethod
    def load(cls, directory: Path) -> CategoricalVQVAE:
        """The tokenizer `noa vqvae train` wrote to ``directory``, frozen (eval mode, no parameter
        requires grad), on the CPU."""
        path = existing_dir(directory)
        config = load_config(path)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise NoaError(
                f"{weights} is missing; {path} is not a complete tokenizer directory (retrain or copy it again)"
            )
        state = load_pt(weights, "tokenizer weights", "retrain the tokenizer or copy its directory again")
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise NoaError(f"{weights} does not hold a tokenizer state dict; retrain or copy it again")
        # Building the model draws default initial weights from torch's RNG; keep that away from the caller's.
        with isolated_global_rng(0, "cpu"):
            model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise NoaError(f"{weights} does not fit {path / CONFIG_FILE}: {err}") from err
        if not bool(model.normalization_set):
            raise NoaError(f"{weights} has no normalization statistics; retrain the tokenizer")
        model.requires_grad_(False)
        return model.eval()

    def reconstruction_mse(self, features: Mapping[str, Tensor]) -> dict[str, float]:
        """Normalized reconstruction MSE per category and "total" (see :func:`reconstruction_mse`)."""
        return reconstruction_mse(self, features)

    @property
    def category_slices(self) -> dict[str, slice]:
        """Where each category's levels sit in the concatenation of the encode outputs."""
        width = self.config.levels * self.config.latent_dim
        return {category: slice(i * width, (i + 1) * width) for i, category in enumerate(FEATURE_CATEGORIES)}

    # ---- normalization -----------------------------------------------------------------

    @torch.no_grad()
    def set_normalization(self, train_features: Mapping[str, Tensor]) -> None:
        """Fit per-feature mean/std on the training split (temporal: over samples and time)."""
        self._check_features(train_features)
        for category in FEATURE_CATEGORIES:
            x = train_features[category].double()
            x = x.reshape(-1, x.shape[-1])
            mean = x.mean(dim=0)
            std = x.std(dim=0, unbiased=False)
            std = torch.maximum(std, STD_FLOOR_ABS + STD_FLOOR_REL * mean.abs())
            getattr(self, f"mean_{category}").copy_(mean)
            getattr(self, f"std_{category}").copy_(std)
        self.normalization_set.fill_(True)

    def normalize(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self._check_features(features)
        if not bool(self.normalization_set):
            raise RuntimeError("normalization statistics are not set: call set_normalization first")
        return {
            category: (features[category] - getattr(self, f"mean_{category}")) / getattr(self, f"std_{category}")
            for category in FEATURE_CATEGORIES
        }

    def _check_features(self, features: Mapping[str, Tensor]) -> None:
        """Shapes must match the config exactly: never silently truncate or broadcast."""
        missing = [f for f in FEATURE_CATEGORIES if f not in features]
        if missing:
            raise NoaError(f"features lack the categories {missing}; the tokenizer needs {list(FEATURE_CATEGORIES)}")
        frames = self.config.timesteps + 1
        expected = {
            "initial": (self.config.feature_dims["initial"],),
            "summary": (self.config.feature_dims["summary"],),
            "temporal": (frames, self.config.feature_dims["temporal"]),
        }
        n = features["initial"].shape[0]
        for category in FEATURE_CATEGORIES:
            shape = tuple(features[category].shape)
            if shape[1:] != expected[category] or shape[0] != n:
                raise NoaError(
                    f"{category} features have shape {list(shape)}, the tokenizer expects "
                    f"[{n}, {', '.join(map(str, expected[category]))}] (same N for every category)"
                )

    # ---- encode / quantize / decode -----------------------------------------------------

    def encode(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        """Raw features -> one pre-quantization latent [N, latent_dim] per (category, level).

        Level l's entry is the residual after subtracting the (detached) codes of levels < l,
        found by plain codebook lookup: no EMA update, no gradient into the codebooks, while
        the gradient to the features flows through every entry.
        """
        normed = self.normalize(features)
        latents = []
        for category in FEATURE_CATEGORIES:
            residual = self.encoders[category](normed[category])
            for vq in self.levels_of(category):
                latents.append(residual)
                codes, _ = _nearest(vq, residual)
                residual = residual - codes.detach()
        return latents

    def quantize(self, latents: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Nearest-codebook lookup per entry: (codes [N, latent_dim], indices [N]); no side effects."""
        if len(latents) != len(self.entries):
            raise ValueError(f"expected {len(self.entries)} latents (one per category and level), got {len(latents)}")
        quantized, indices = [], []
        for (category, level), z in zip(self.entries, latents):
            codes, idx = _nearest(self.levels_of(category)[level], z)
            quantized.append(codes)
            indices.append(idx)
        return quantized, indices

    def decode(self, z_q: list[Tensor]) -> dict[str, Tensor]:
        """Codes per (category, level) -> normalized reconstructions; levels are summed first."""
        if len(z_q) != len(self.entries):
            raise ValueError(f"expected {len(self.entries)} code tensors, got {len(z_q)}")
        levels = self.config.levels
        return {
            category: self.decoders[category](torch.stack(z_q[i * levels : (i + 1) * levels]).sum(dim=0))
            for i, category in enumerate(FEATURE_CATEGORIES)
        }

    def forward(self, features: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[Tensor], Tensor]:
        """Training path: (normalized reconstruction, indices, weighted commitment loss summed over entries).

        In train mode the library's quantizers run here: k-means initialisation on first use,
        EMA codebook updates, dead-code restarts and straight-through gradients. In eval mode
        this is decode(quantize(encode(x))) with the same loss formula.
        """
        if not self.training:
            latents = self.encode(features)
            z_q, indices = self.quantize(latents)
            commit = cast(Tensor, sum(F.mse_loss(z, q) for z, q in zip(latents, z_q)))
            return self.decode(z_q), indices, self.config.commitment_weight * commit
        normed = self.normalize(features)
        z_q, indices, losses = [], [], []
        for category in FEATURE_CATEGORIES:
            residual = self.encoders[category](normed[category])
            for vq in self.levels_of(category):
                quantized, idx, loss = vq(residual)
                z_q.append(quantized)
                indices.append(idx)
                losses.append(loss)
                residual = residual - quantized.detach()
        return self.decode(z_q), indices, torch.stack(losses).sum()


def _nearest(vq: VectorQuantize, z: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest code (squared Euclidean) of each row of ``z``, reading the codebook only."""
    codebook = vq.codebook.detach().to(z.dtype)
    distances = z.detach().pow(2).sum(dim=1, keepdim=True) - 2.0 * z.detach() @ codebook.T + codebook.pow(2).sum(dim=1)
    indices = distances.argmin(dim=1)
    return codebook[indices], indices


# ---- evaluation passes (reconstruction_mse here; the training loop's metrics use them too) ----


@contextmanager
def evaluating(model: CategoricalVQVAE) -> Iterator[None]:
    """Eval mode and no grad for a block, restoring the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def batches(features: Mapping[str, Tensor], batch_size: int, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """Consecutive slices of ``batch_size`` samples of every category, moved to ``device``."""
    n = features[FEATURE_CATEGORIES[0]].shape[0]
    for start in range(0, n, batch_size):
        yield {f: features[f][start : start + batch_size].to(device) for f in FEATURE_CATEGORIES}


def model_device(model: CategoricalVQVAE) -> torch.device:
    """Where the model's tensors live (its normalization flag is one of its buffers)."""
    return model.normalization_set.device


def reconstruction_mse(
    model: CategoricalVQVAE, features: Mapping[str, Tensor], batch_size: int = 1024
) -> dict[str, float]:
    """Normalized reconstruction MSE of decode(quantize(encode(x))) per category and "total".

    Each category's value is the mean over all its normalized values. "total" is the mean
    over every normalized value of all categories together, so each category weighs by its
    number of values per sample (temporal: (T+1) x D_t, usually the largest).
    """
    sse = {f: 0.0 for f in FEATURE_CATEGORIES}
    count = {f: 0 for f in FEATURE_CATEGORIES}
    with evaluating(model):
        for batch in batches(features, batch_size, model_device(model)):
            z_q, _ = model.quantize(model.encode(batch))
            recon, normed = model.decode(z_q), model.normalize(batch)
            for f in FEATURE_CATEGORIES:
                sse[f] += float((recon[f].double() - normed[f].double()).pow(2).sum())
                count[f] += normed[f].numel()
    result = {f: sse[f] / max(count[f], 1) for f in FEATURE_CATEGORIES}
    result["total"] = sum(sse.values()) / max(sum(count.values()), 1)
    return result
