"""One record per op: spellings reach the same rule under both captures."""

import pytest
import torch
from fxprune.passes.rules import key_of
from torch import nn

import fxprune


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
    assert small.get_parameter("a.weight").shape[0] == small.get_parameter("b.weight").shape[1] == 8
    assert fxprune.verify(model, small, x).passed
    if capture == "fx":  # another batch size and resolution (an exported graph is frozen to the example's)
        assert fxprune.verify(model, small, torch.randn(5, 3, 12, 12)).passed


def test_roll_spellings_reach_one_rule():
    assert key_of(torch.roll) == key_of("roll") == key_of(torch.ops.aten.roll.default) == "roll"


class FlipThenNorm(nn.Module):
    """conv -> flip over H (or over the channels) -> L2 norm over channels -> conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = self.a(x).flip(self.dim) if self.dim == 2 else torch.flip(self.a(x), dims=(self.dim,))
        return self.b(h / (h.norm(dim=1, keepdim=True) + 1e-6))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_flip_over_space_passes_channels_and_zeros(capture):
    """flip over H: the channels pass through, exactly (the norm over channels stays exact
    because zero-tracking follows the flip)."""
    model = FlipThenNorm(2).eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True, capture=capture)
    assert not small.meta["fxprune.report"].analysis.unsupported
    assert small.get_parameter("a.weight").shape[0] == small.get_parameter("b.weight").shape[1] == 8
    assert fxprune.verify(model, small, x).passed
    assert fxprune.count_macs(small, (x,)) < fxprune.count_macs(model, (x,))
    if capture == "fx":
        assert fxprune.verify(model, small, torch.randn(5, 3, 12, 12)).passed


def test_flip_over_channels_pins_them():
    model = FlipThenNorm(1).eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert small.a.out_channels == 16
    pins = [c.pinned for c in small.meta["fxprune.report"].analysis.classes if c.pinned]
    assert any("reversed by flip" in p for p in pins)


def test_flip_spellings_reach_one_rule():
    assert key_of(torch.flip) == key_of("flip") == key_of(torch.ops.aten.flip.default) == "flip"


@pytest.mark.parametrize("how", ["method_min", "method_max", "function_min", "tensor_bound"])
def test_clamp_min_and_max_spellings_reach_the_clamp_rule(how):
    """x.clamp_min(eps) under symbolic_trace had no rule (its ATen spelling had one): the norm's
    channels were pinned by an unsupported op."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.lo = nn.Parameter(torch.rand(16, 1, 1) * 0.1)
            self.b = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            h = self.a(x)
            if how == "method_min":
                h = h.clamp_min(0.05)
            elif how == "method_max":
                h = h.clamp_max(0.5)
            elif how == "function_min":
                h = torch.clamp_min(h, 0.05)
            else:
                h = h.clamp_min(self.lo)
            return self.b(h)

    model = M().eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert not small.meta["fxprune.report"].analysis.unsupported
    assert small.a.out_channels == 8
    assert fxprune.verify(model, small, x).passed
    assert key_of("clamp_min") == key_of(torch.clamp_max) == key_of(torch.ops.aten.clamp_min.default) == "clamp"


def test_registering_an_op_twice_raises_unless_replaced_and_when_specializes():
    from fxprune.passes.rules import RULES, DuplicateOpError, list_ops, register_rule, rule_for, spec_of

    with pytest.raises(DuplicateOpError, match="'roll' already has a rule"):
        register_rule("roll")(lambda ctx, input, shifts, dims=None: input.axes)
    with pytest.raises(DuplicateOpError, match="already reaches rule 'roll'"):
        register_rule("test_my_roll", torch.roll)(lambda ctx, input, shifts, dims=None: input.axes)
    assert "test_my_roll" not in RULES and key_of(torch.roll) == "roll"  # a refused registration changes nothing
    with pytest.raises(DuplicateOpError, match="no base rule"):
        register_rule("test_no_such_base", when=lambda ctx, *a, **k: True)(lambda ctx, *a, **k: None)

    base = RULES["flip"]
    special = register_rule("flip", when=lambda ctx, input, dims: dims == (99,))(lambda ctx, input, dims: input.axes)
    try:
        assert rule_for("flip", None, ("x",), {"dims": (99,)}) is special
        assert rule_for("flip", None, ("x",), {"dims": (0,)}) is base
        replaced = register_rule("flip", replace=True, zeros="moves")(base)  # replace drops specializations
        assert replaced is base and rule_for("flip", None, ("x",), {"dims": (99,)}) is base
    finally:
        spec_of("flip").variants.clear()
    ops = list_ops()
    assert "torch.flip" not in ops and "flip" in ops["flip"]["methods"] and not ops["flip"]["rewrite"]
    assert "Conv2d" in ops["conv"]["modules"]
