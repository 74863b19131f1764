"""Behavioural tokens of rollouts from a tokenizer directory (``noa vqvae train --out``).

A thin layer over :mod:`noa.tokenizer` and :func:`noa.features.compute_features`: a rollout's
features are the ones the tokenizer was trained on, and its tokens are the nearest code of
every (category, level) entry, as ``noa diagnose`` counts them. A tokenizer fits one T,
channel count and grid; a rollout of any other shape is refused with both sides named.
"""

from __future__ import annotations

from pathlib import Path

import torch

from noa.errors import NoaError
from noa.features import compute_features, feature_names
from noa.runtime import resolve_device
from noa.tokenizer import CategoricalVQVAE, TokenizerConfig, check_compatible
from noa.tokenizer import load_tokenizer as _load_vqvae


class Tokenizer:
    """A frozen tokenizer: rollouts -> code indices ``[B, E]``, one per (category, level) entry.

    ``entries`` names the E columns (``("initial", 0)``, ...), ``codebook_sizes`` their ranges;
    ``model`` is the underlying :class:`~noa.tokenizer.CategoricalVQVAE`.
    """

    def __init__(self, model: CategoricalVQVAE, path: Path | None = None) -> None:
        self.model = model
        self.path = path

    @property
    def config(self) -> TokenizerConfig:
        """What the tokenizer fits: ``timesteps``, ``channels``, ``grid``, feature names."""
        return self.model.config

    @property
    def entries(self) -> list[tuple[str, int]]:
        """(category, level) of each token column, category-major."""
        return self.model.entries

    @property
    def codebook_sizes(self) -> list[int]:
        """How many codes each token column ranges over."""
        return self.model.codebook_sizes

    @property
    def device(self) -> torch.device:
        """Where the tokenizer runs and where its tokens are returned."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Tokenizer:
        """Move the tokenizer to ``device`` ('cpu', 'cuda', 'cuda:N', 'auto'); returns ``self``."""
        self.model.to(resolve_device(str(device)))
        return self

    @torch.no_grad()
    def tokens(self, trajectory: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, E]`` (int64, on the tokenizer's device) of rollouts.

        ``trajectory`` is ``[B, T+1, C, H, W]`` (a NOA rollout) or ``[B, M, T+1, C, H, W]`` (a
        CNO replay; features are averaged over the M realizations first, as for training data).
        """
        if not isinstance(trajectory, torch.Tensor) or trajectory.dim() not in (5, 6):
            shape = tuple(trajectory.shape) if isinstance(trajectory, torch.Tensor) else type(trajectory).__name__
            raise NoaError(f"tokens need rollouts [B, T+1, C, H, W] or [B, M, T+1, C, H, W], got {shape}")
        frames, channels, height, width = trajectory.shape[-4:]
        if height != width:
            raise NoaError(f"tokens need a square grid, got {height}x{width}")
        check_compatible(
            self.config,
            feature_names=feature_names(channels),
            timesteps=frames - 1,
            channels=channels,
            grid=height,
            source=f"rollouts of shape {tuple(trajectory.shape)}",
        )
        latents = self.model.encode(compute_features(trajectory.to(self.device)))
        _, indices = self.model.quantize(latents)
        return torch.stack(indices, dim=1)


def load_tokenizer(path: str | Path, device: str | torch.device = "auto") -> Tokenizer:
    """The tokenizer in directory ``path``, frozen, on ``device`` ('cpu', 'cuda', 'cuda:N', 'auto')."""
    return Tokenizer(_load_vqvae(path, resolve_device(str(device))), Path(path))
