"""Periodic padding by concatenation is circular padding: the same values bit for bit, and the
same gradients up to the order in which a wrapped cell's two contributions are summed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noa.periodic import PeriodicConv2d, periodic_pad


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 3), (2, 0), (0, 1)])
def test_periodic_pad_is_circular_pad(rows: int, cols: int) -> None:
    x = torch.randn(2, 5, 9, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(periodic_pad(x, rows, cols), F.pad(x, (cols, cols, rows, rows), mode="circular"))


@pytest.mark.parametrize("stride", [1, 2])
def test_periodic_conv_matches_circular_conv_exactly(stride: int) -> None:
    g = torch.Generator().manual_seed(1)
    ours = PeriodicConv2d(4, 6, 3, stride=stride, padding=1)
    theirs = nn.Conv2d(4, 6, 3, stride=stride, padding=1, padding_mode="circular")
    theirs.load_state_dict(ours.state_dict())  # same keys: old checkpoints load unchanged
    x = torch.randn(3, 4, 16, 16, generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    assert torch.equal(y1, y2)
    upstream = torch.randn(y1.shape, generator=g)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    assert torch.equal(ours.weight.grad, theirs.weight.grad) and torch.equal(ours.bias.grad, theirs.bias.grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-6)
