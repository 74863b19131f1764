"""A loaded tokenizer as training and diagnosis use it: noa's features in, protocol calls out.

:func:`open_tokenizer` loads noa's own tokenizer or a class the user names (see
:mod:`.user_class`) through that class's own ``load``, checks the instance against the
protocol (:mod:`.protocol`) and wraps it in a :class:`FrozenTokenizer`, which hands the
tokenizer the feature columns it names. Training, ``noa diagnose`` and ``noa.Tokenizer`` call
nothing else of it, so a tokenizer of any class trains and diagnoses a NOA as noa's own does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noa.errors import NoaError
from noa.tokenizer.columns import feature_columns, feature_problems, select
from noa.tokenizer.io import directory_fingerprint, existing_dir, tokenizer_fingerprint
from noa.tokenizer.model import CategoricalVQVAE, isolated_global_rng
from noa.tokenizer.protocol import ATTRIBUTES, TokenizerProtocol
from noa.tokenizer.user_class import class_fingerprint, class_name, resolve_class, spec_of

# noa's own tokenizer, the one a directory without --vqvae-class holds (mypy checks it meets the protocol).
BUILTIN: type[TokenizerProtocol] = CategoricalVQVAE


class FrozenTokenizer:
    """A tokenizer checked against the protocol, with what noa needs to call it.

    ``model`` is the tokenizer itself; ``class_spec`` the class the user named (None: noa's
    own), ``fingerprint`` a hash of its directory (what a resume checks it is the same one),
    ``class_fingerprint`` a hash of the class's file (None: noa's own, or a class without a file).
    ``encode`` and friends take noa's full features and pass on the columns it reads.
    """

    def __init__(
        self,
        model: TokenizerProtocol,
        path: Path,
        class_spec: str | None,
        fingerprint: str,
        class_fingerprint: str | None = None,
    ) -> None:
        self.model, self.path, self.class_spec, self.fingerprint = model, path, class_spec, fingerprint
        self.class_fingerprint = class_fingerprint
        self.feature_names = {category: list(names) for category, names in model.feature_names.items()}
        self.timesteps, self.channels, self.grid = int(model.timesteps), int(model.channels), int(model.grid)
        self.entries = [(str(category), int(level)) for category, level in model.entries]
        self.codebook_sizes = [int(size) for size in model.codebook_sizes]
        self.latent_dim = int(model.latent_dim)
        self.columns = feature_columns(self.feature_names, self.channels)
        self.device = torch.device("cpu")

    @property
    def name(self) -> str:
        """The class's name, or "noa's own tokenizer"."""
        return class_name(self.class_spec)

    def to(self, device: str | torch.device) -> FrozenTokenizer:
        """Move the tokenizer to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        self.columns = {
            category: None if index is None else index.to(self.device) for category, index in self.columns.items()
        }
        return self

    def features(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The columns the tokenizer reads, from noa's features of rollouts."""
        return select(features, self.columns)

    def encode(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        """Pre-quantization latents, one per entry, of noa's ``features`` (differentiable in them)."""
        latents = self.model.encode(self.features(features))
        self._check_latents(latents)
        return latents

    def quantize(self, latents: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(codes ``z_q``, indices) per entry of ``encode``'s latents."""
        return self.model.quantize(latents)

    def tokens(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(latents concatenated ``[N, latent_dim]``, code indices ``[N, E]``) of noa's ``features``."""
        latents = self.encode(features)
        _, indices = self.quantize(latents)
        return torch.cat(latents, dim=1), torch.stack(indices, dim=1)

    def reconstruction_mse(self, features: Mapping[str, Tensor]) -> dict[str, float]:
        """The tokenizer's normalized reconstruction MSE of noa's ``features``, per category and "total"."""
        return self.model.reconstruction_mse(self.features(features))

    def _check_latents(self, latents: Sequence[Tensor]) -> None:
        """A class whose encode disagrees with its own entries / latent_dim is named, not met as a shape error."""
        widths = [z.shape[-1] for z in latents]
        if len(widths) != len(self.entries) or sum(widths) != self.latent_dim:
            raise NoaError(
                f"tokenizer {self.name}: encode returned {len(widths)} latents of total width {sum(widths)}, but its "
                f"entries name {len(self.entries)} and its latent_dim is {self.latent_dim}; fix the class"
            )


def open_tokenizer(
    path: str | Path, vqvae_class: str | type | None = None, device: str | torch.device = "cpu"
) -> FrozenTokenizer:
    """The tokenizer in directory ``path``, loaded by ``vqvae_class`` (None: noa's own), frozen, on ``device``.

    The class comes from the caller only; nothing in the directory names code to run."""
    directory = existing_dir(path)
    if vqvae_class is None:
        model: TokenizerProtocol = BUILTIN.load(directory)
        spec, fingerprint, class_file = None, tokenizer_fingerprint(directory), None
    else:
        spec = spec_of(vqvae_class)
        model = _load_user_class(resolve_class(vqvae_class), spec, directory)
        fingerprint, class_file = directory_fingerprint(directory), class_fingerprint(vqvae_class)
    problems = protocol_problems(model)
    if problems:
        raise NoaError(
            f"tokenizer {class_name(spec)} in {directory} does not fit noa's tokenizer protocol (docs/api.md):\n  - "
            + "\n  - ".join(problems)
        )
    if isinstance(model, nn.Module):
        model.requires_grad_(False).eval()
    return FrozenTokenizer(model, directory, spec, fingerprint, class_file).to(device)


def _load_user_class(cls: type, spec: str, directory: Path) -> TokenizerProtocol:
    # Default initialisations draw from torch's RNG: keep that away from the caller's.
    with isolated_global_rng(0, "cpu"):
        try:
            return cls.load(directory)  # type: ignore[attr-defined]  # resolve_class checked it is there
        except NoaError:
            raise
        # The user's loader can raise anything on a directory it cannot read; one message says which.
        except Exception as err:
            raise NoaError(f"tokenizer class {spec} could not load {directory}: {type(err).__name__}: {err}") from err


def protocol_problems(model: Any) -> list[str]:
    """Every way a loaded tokenizer's attributes miss the protocol, one line each."""
    missing = [name for name in ATTRIBUTES if not hasattr(model, name)]
    if missing:
        return [f"it lacks the protocol's {'attribute' if len(missing) == 1 else 'attributes'} {', '.join(missing)}"]
    problems = [
        f"{name} must be a positive integer, got {getattr(model, name)!r}"
        for name in ("timesteps", "channels", "grid", "latent_dim")
        if not _positive_int(getattr(model, name))
    ]
    entries, sizes = model.entries, model.codebook_sizes
    pairs = isinstance(entries, Sequence) and all(
        isinstance(e, Sequence) and len(e) == 2 and isinstance(e[0], str) and _int(e[1]) for e in entries
    )
    if not pairs or not entries:
        problems.append(f"entries must be a non-empty list of (category, level) pairs, got {entries!r}")
    elif not (isinstance(sizes, Sequence) and len(sizes) == len(entries) and all(_positive_int(s) for s in sizes)):
        problems.append(
            f"codebook_sizes must hold a positive integer for each of the {len(entries)} entries, got {sizes!r}"
        )
    if _positive_int(model.channels):
        problems += feature_problems(model.feature_names, model.channels)
    return problems


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object) -> bool:
    return _int(value) and value > 0  # type: ignore[operator]
