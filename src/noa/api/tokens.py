"""Behavioural tokens of rollouts from a tokenizer directory (``noa vqvae train --out``, or the
directory of a tokenizer class of your own, loaded by the class you name).

A thin layer over :func:`noa.tokenizer.open_tokenizer` and :func:`noa.features.compute_features`:
a rollout's features are the ones the tokenizer reads, and its tokens are the nearest code of
every (category, level) entry, as ``noa diagnose`` counts them. A tokenizer fits one T, channel
count and grid; a rollout of any other shape is refused with both sides named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from noa.errors import NoaError
from noa.features import compute_features
from noa.runtime import resolve_device
from noa.tokenizer import FrozenTokenizer, TokenizerConfig, check_compatible, open_tokenizer


class Tokenizer:
    """A frozen tokenizer: rollouts -> code indices ``[B, E]``, one per (category, level) entry.

    ``entries`` names the E columns (``("initial", 0)``, ...), ``codebook_sizes`` their ranges;
    ``model`` is the tokenizer itself (a :class:`~noa.tokenizer.CategoricalVQVAE`, or an
    instance of the class you named).
    """

    def __init__(self, frozen: FrozenTokenizer) -> None:
        self._frozen = frozen

    @property
    def model(self) -> Any:
        """The tokenizer object: noa's :class:`~noa.tokenizer.CategoricalVQVAE` or your class's instance."""
        return self._frozen.model

    @property
    def path(self) -> Path:
        """The directory it was loaded from."""
        return self._frozen.path

    @property
    def config(self) -> TokenizerConfig | None:
        """noa's own tokenizer's config (None for a tokenizer of another class: see ``timesteps`` and friends)."""
        config = getattr(self.model, "config", None)
        return config if isinstance(config, TokenizerConfig) else None

    @property
    def timesteps(self) -> int:
        """The T of the rollouts it fits."""
        return self._frozen.timesteps

    @property
    def channels(self) -> int:
        """The channel count of the rollouts it fits."""
        return self._frozen.channels

    @property
    def grid(self) -> int:
        """The grid (H = W) of the rollouts it fits."""
        return self._frozen.grid

    @property
    def feature_names(self) -> dict[str, list[str]]:
        """The feature columns it reads, per feature category (names of ``noa.features.feature_names``)."""
        return self._frozen.feature_names

    @property
    def entries(self) -> list[tuple[str, int]]:
        """(category, level) of each token column."""
        return self._frozen.entries

    @property
    def codebook_sizes(self) -> list[int]:
        """How many codes each token column ranges over."""
        return self._frozen.codebook_sizes

    @property
    def device(self) -> torch.device:
        """Where the tokenizer runs and where its tokens are returned."""
        return self._frozen.device

    def to(self, device: str | torch.device) -> Tokenizer:
        """Move the tokenizer to ``device`` ('cpu', 'cuda', 'cuda:N', 'auto'); returns ``self``."""
        self._frozen.to(resolve_device(str(device)))
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
            self._frozen,
            timesteps=frames - 1,
            channels=channels,
            grid=height,
            source=f"rollouts of shape {tuple(trajectory.shape)}",
        )
        return self._frozen.tokens(compute_features(trajectory.to(self.device)))[1]


def load_tokenizer(
    path: str | Path, device: str | torch.device = "auto", vqvae_class: str | type | None = None
) -> Tokenizer:
    """The tokenizer in directory ``path``, frozen, on ``device`` ('cpu', 'cuda', 'cuda:N', 'auto').

    ``vqvae_class`` loads a directory another program wrote: a class meeting
    ``noa.TokenizerProtocol``, or its name as ``"MODULE_OR_FILE:CLASS"``. None: noa's own
    tokenizer. The class is only ever the one you pass, never one the directory names.
    """
    return Tokenizer(open_tokenizer(path, vqvae_class, resolve_device(str(device))))
