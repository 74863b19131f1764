"""Counter-based Gaussian noise: any (key, realization, step, element) value, computed on device.

A stateful generator would make step t of sample i depend on everything drawn before it. Here
each value is a pure function of its coordinates, hashed with 32-bit integer mixing (the
"lowbias32" finaliser) in int64 tensor arithmetic, then turned into a normal deviate by
Box–Muller. So the noise of one sample never depends on its batch, a rollout can be resumed
at any step, and nothing is drawn on the host inside the time loop.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
_M16 = 0xFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2^32 for x in [0, 2^32) without int64 overflow (c split in 16-bit halves)."""
    lo = x * (c & _M16)
    hi = ((x * (c >> 16)) & _M16) << 16
    return (lo + hi) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of 32-bit values held in int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def split_key(key: int) -> tuple[int, int]:
    """A 64-bit key as two 32-bit words."""
    return key & _M32, (key >> 32) & _M32


class CounterNormal:
    """Standard normal values indexed by (key, realization, step, element).

    ``keys`` holds one 64-bit key per stream (sample × realization rows); ``realizations`` the
    realization index of each row. Elements are numbered 0..n_elements-1 in C-order of one
    frame. Calling the object with a step returns ``[rows, n_elements]`` normals.
    """

    def __init__(self, keys: list[int], realizations: list[int], n_elements: int, device: torch.device):
        words = [split_key(k) for k in keys]
        lo = torch.tensor([w[0] for w in words], dtype=torch.int64, device=device)[:, None]
        hi = torch.tensor([w[1] for w in words], dtype=torch.int64, device=device)[:, None]
        real = torch.tensor(realizations, dtype=torch.int64, device=device)[:, None]
        self._row_lo = lo
        self._row_hi = mix32(hi ^ mix32(real))
        self._elements = mix32(torch.arange(n_elements, dtype=torch.int64, device=device))[None, :]

    def __call__(self, step: int) -> torch.Tensor:
        step_word = mix32(self._elements ^ (step & _M32))
        h = mix32(self._row_lo ^ mix32(self._row_hi ^ step_word))
        h2 = mix32(h ^ 0x9E3779B9)
        # 24-bit uniforms: exact in float32; u1 in (0, 1] keeps log finite.
        u1 = ((h >> 8) + 1).to(torch.float32) * (1.0 / 16777216.0)
        u2 = (h2 >> 8).to(torch.float32) * (1.0 / 16777216.0)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
