"""Test models with residual and parallel branches, shared by tests/passes/test_blocks.py (block
detection and removal) and tests/test_depth.py (depth pruning on top of it)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from fxprune.testing import randomize_

__all__ = ["cbr", "Scaled", "Dropped", "Net", "net"]


def cbr(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())


class Scaled(nn.Module):
    """x + gamma * f(x) (a layer scale, as in ConvNeXt/CaiT)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = cbr(c)
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.body(x)


class Dropped(nn.Module):
    """x + drop_path(f(x)) (stochastic depth)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = cbr(c)
        self.drop = StochasticDepth(0.2, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.body(x))


class Net(nn.Module):
    """Plain residual, layer-scale residual, drop-path residual, two parallel branches and a
    projection shortcut (y = proj(x) + f(x))."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.plain = nn.Sequential(cbr(c), nn.Conv2d(c, c, 1))
        self.scaled = Scaled(c)
        self.dropped = Dropped(c)
        self.left = nn.Conv2d(c, c, 3, padding=1)
        self.right = nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.main = cbr(c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.plain(x)
        x = self.scaled(x)
        x = self.dropped(x)
        x = self.left(x) + self.right(x)
        x = self.proj(x) + self.main(x)
        return self.fc(x.mean((2, 3)))


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(Net().eval(), seed)
