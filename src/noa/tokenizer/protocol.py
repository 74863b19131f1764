"""What noa asks of a frozen tokenizer: the members L_commit, L_latent, diagnose and the token
agreement use, and nothing more, so a tokenizer of any class can stand in for noa's own.

noa computes the features (:mod:`noa.features`, for CNO and NOA rollouts alike) and hands the
tokenizer the columns it names in ``feature_names``; the tokenizer encodes them into one
pre-quantization latent per (category, level) entry and quantizes those latents. Reference:
``docs/api.md``, "Your own tokenizer".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

# The protocol's members, by kind: methods are looked up on the class before anything is
# loaded; attributes (often set in __init__) on the instance its ``load`` returns.
METHODS = ("load", "to", "encode", "quantize", "reconstruction_mse")
ATTRIBUTES = ("feature_names", "timesteps", "channels", "grid", "entries", "codebook_sizes", "latent_dim")


class Fits(Protocol):
    """What a tokenizer fits: the rollouts' T, channels and grid (a loaded tokenizer has them)."""

    @property
    def timesteps(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def grid(self) -> int: ...


class TokenizerProtocol(Fits, Protocol):
    """A frozen tokenizer of rollout behaviour, as noa trains against it and diagnoses with it.

    Attributes (plain attributes or properties):

    - ``feature_names``: ``{category: [name, ...]}``, the feature columns it reads, named as
      ``noa.features.feature_names(channels)`` lists them (categories ``initial``, ``summary``,
      ``temporal``; any subset, in any order). ``encode`` gets exactly these columns.
    - ``timesteps``, ``channels``, ``grid``: the rollouts it fits (T, C, H = W); noa refuses
      data of any other shape, naming both values.
    - ``entries``: ``[(category, level), ...]``, one per latent ``encode`` returns and per
      codebook; token agreement leaves out the category ``"initial"`` (it encodes the IC).
    - ``codebook_sizes``: codes per entry (token indices lie in ``[0, size)``).
    - ``latent_dim``: the widths of ``encode``'s latents summed (what the latent projector targets).
    """

    @property
    def feature_names(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def entries(self) -> Sequence[tuple[str, int]]: ...

    @property
    def codebook_sizes(self) -> Sequence[int]: ...

    @property
    def latent_dim(self) -> int: ...

    @classmethod
    def load(cls, directory: Path) -> Any:
        """The tokenizer saved in ``directory``, on the CPU: the class reads its own files."""
        ...

    def to(self, device: torch.device) -> Any:
        """The tokenizer on ``device`` (``self``, as ``nn.Module.to`` returns)."""
        ...

    def encode(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        """Features ``{category: [N, D] or [N, T+1, D]}`` -> one latent ``[N, d_e]`` per entry.

        Pre-quantization and differentiable in the features: L_commit's gradient reaches the
        NOA through it. No side effects (no codebook updates, no statistics).
        """
        ...

    def quantize(self, latents: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Latents -> (codes ``z_q`` ``[N, d_e]``, indices ``[N]`` int64) per entry; no side effects."""
        ...

    def reconstruction_mse(self, features: Mapping[str, Tensor]) -> dict[str, float]:
        """Normalized reconstruction MSE of decode(quantize(encode(features))): one value per
        category it encodes and ``"total"`` (1.0 is what predicting the mean scores)."""
        ...
