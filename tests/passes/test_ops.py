"""One record per op: spellings reach the same rule under both captures."""

import pytest
import torch
from torch import nn

import fxprune
from fxprune.passes.rules import key_of


class RollSpatial(nn.Module):
    """conv -> roll over H and W (a shifted window) -> conv: the channels pass through."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.roll(self.a(x), shifts=(1, 2), dims=(2, 3)))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_roll_passes_channels_under_both_captures(capture):
    model = RollSpatial().eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True, capture=capture)
    report = small.meta["fxprune.report"]
    assert not report.analysis.unsupported, [u.message() for u in report.analysis.unsupported]
    assert fxprune.count_params(small) < 0.7 * fxprune.count_params(model)
    assert fxprune.verify(model, small, x).passed


def test_roll_spellings_reach_one_rule():
    assert key_of(torch.roll) == key_of("roll") == key_of(torch.ops.aten.roll.default) == "roll"
