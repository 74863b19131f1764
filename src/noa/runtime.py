"""Where computation runs: device resolution with a clear message when CUDA is missing."""

from __future__ import annotations

import torch

from noa.errors import NoaError


def resolve_device(name: str) -> str:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present) as a torch device string."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NoaError(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
        return name
    if name != "cpu":
        raise NoaError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto")
    return name
