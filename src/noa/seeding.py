"""Stable seed derivation.

Every random draw in the library comes from a generator seeded by ``derive_seed(base,
purpose, *indices)``. The derivation hashes its inputs with BLAKE2b, so it is stable across
processes, platforms and Python versions (unlike ``hash()``), and two purposes never share a
stream.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed determined by (base, purpose, indices) alone."""
    text = ":".join([str(int(base)), purpose, *(str(int(i)) for i in indices)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(base: int, purpose: str, *indices: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(base, purpose, *indices))
    return gen
