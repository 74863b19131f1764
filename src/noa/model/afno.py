"""Adaptive Fourier Neural Operator blocks (Guibas et al. 2021) for the U-AFNO bottleneck.

An AFNO block mixes tokens globally in Fourier space: rfft2 of the map, a block-diagonal
complex MLP applied independently at every retained frequency, soft-thresholding for
sparsity, irfft2 back. A channel MLP follows. Both halves are residual.

The spectral half always runs in float32, even under autocast: half-precision FFTs lose
too much accuracy (and bfloat16 FFTs are not supported on every backend).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MLP_RATIO = 2  # hidden width of the channel MLP, as a multiple of the channel count


def kept_modes(height: int, width: int, modes: int) -> tuple[int, int, int]:
    """How many rfft2 rows/columns carry the lowest ``modes`` frequencies of a map.

    Rows keep the signed frequencies ``|k_y| < modes`` (``pos`` non-negative ones at the
    start, ``neg`` negative ones at the end); columns keep ``0 <= k_x < modes``. Each count is
    clamped to what the grid has, so a ``modes`` larger than the bottleneck keeps every
    frequency (on an 8x8 bottleneck any ``modes >= 5`` does).
    """
    pos = min(modes, (height + 1) // 2)
    neg = min(modes - 1, height // 2)
    cols = min(modes, width // 2 + 1)
    return pos, neg, cols


class SpectralMixing(nn.Module):
    """Token mixing: rfft2 → block-diagonal complex MLP per mode → softshrink → irfft2."""

    def __init__(self, channels: int, modes: int, num_blocks: int, sparsity_threshold: float) -> None:
        super().__init__()
        if channels % num_blocks:
            raise ValueError(f"channels ({channels}) must be divisible by num_blocks ({num_blocks})")
        self.modes = modes
        self.num_blocks = num_blocks
        self.block_size = channels // num_blocks
        self.sparsity_threshold = sparsity_threshold
        shape = (2, num_blocks, self.block_size, self.block_size)  # [real/imag, group, in, out]
        self.w1 = nn.Parameter(0.02 * torch.randn(shape))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, num_blocks, self.block_size))
        self.w2 = nn.Parameter(0.02 * torch.randn(shape))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, num_blocks, self.block_size))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: channels-last ``[B, h, w, C]``; returns the same shape and dtype."""
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self._mix(x.float())
        return out.to(dtype)

    def _mix(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        pos, neg, cols = kept_modes(height, width, self.modes)
        spec = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
        low = torch.cat([spec[:, :pos, :cols], spec[:, height - neg :, :cols]], dim=1)
        low = low.reshape(batch, pos + neg, cols, self.num_blocks, self.block_size)

        real, imag = _complex_linear(low.real, low.imag, self.w1, self.b1)
        real, imag = F.relu(real), F.relu(imag)
        real, imag = _complex_linear(real, imag, self.w2, self.b2)
        real = F.softshrink(real, self.sparsity_threshold)
        imag = F.softshrink(imag, self.sparsity_threshold)
        mixed = torch.complex(real, imag).reshape(batch, pos + neg, cols, channels)

        out = torch.zeros_like(spec)
        out[:, :pos, :cols] = mixed[:, :pos]
        out[:, height - neg :, :cols] = mixed[:, pos:]
        return torch.fft.irfft2(out, s=(height, width), dim=(1, 2), norm="ortho")


def _complex_linear(real: Tensor, imag: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """(real + i·imag) @ (weight[0] + i·weight[1]) + bias per channel group, in real arithmetic.

    Real parameters keep optimisers, DDP and checkpoints free of complex dtypes.
    """
    rr = torch.einsum("...gi,gio->...go", real, weight[0])
    ii = torch.einsum("...gi,gio->...go", imag, weight[1])
    ri = torch.einsum("...gi,gio->...go", real, weight[1])
    ir = torch.einsum("...gi,gio->...go", imag, weight[0])
    return rr - ii + bias[0], ri + ir + bias[1]


class AFNOBlock(nn.Module):
    """LayerNorm → FiLM → spectral mixing → residual; LayerNorm → channel MLP → residual."""

    def __init__(self, channels: int, modes: int, num_blocks: int, sparsity_threshold: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.mixing = SpectralMixing(channels, modes, num_blocks, sparsity_threshold)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, MLP_RATIO * channels),
            nn.GELU(),
            nn.Linear(MLP_RATIO * channels, channels),
        )

    def forward(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """``x``: ``[B, C, h, w]``; ``scale``/``shift``: ``[B, C]`` FiLM modulation."""
        h = x.permute(0, 2, 3, 1)
        modulated = self.norm1(h) * scale[:, None, None, :] + shift[:, None, None, :]
        h = h + self.mixing(modulated)
        h = h + self.mlp(self.norm2(h))
        return h.permute(0, 3, 1, 2)
