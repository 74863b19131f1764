"""Projects the U-AFNO bottleneck into the tokenizer's latent space for L_latent.

Pooling makes the projector independent of the bottleneck's spatial size, so one projector
serves any grid. It pools both the mean and the standard deviation of each channel: the
tokenizer's latents describe behaviour (levels *and* variability of a field), and a mean
alone would discard the second.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STD_EPS = 1e-6  # keeps the gradient of sqrt finite on constant channels


class LatentProjector(nn.Module):
    """``[B, Cb, h, w]`` -> ``[B, latent_dim]``: 1x1 conv, mean+std pooling, MLP."""

    def __init__(self, in_channels: int, latent_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.pointwise = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.GELU())
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, latent_dim),
        )

    def forward(self, bottleneck: Tensor) -> Tensor:
        h = self.pointwise(bottleneck).flatten(2)
        mean = h.mean(dim=2)
        std = torch.sqrt(h.var(dim=2, unbiased=False) + STD_EPS)
        return self.mlp(torch.cat([mean, std], dim=1))
