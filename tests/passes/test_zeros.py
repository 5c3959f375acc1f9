"""passes/zeros.py: zero-tracking, which proves a node zero on a class's removed indices in the
masked model. It decides when a reduction or a contraction over a pruned dim is exact (a sum, a
p-norm, ``x @ x^T``), and when it stays approximate (a mean divides by the count; an activation
nothing zeroes). The tracker is asked directly first, then through what it decides: exact
groups, proved masked-equals-pruned."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fxprune.passes.dependency import analyze
from fxprune.passes.keys import ANALYSIS
from fxprune.passes.zeros import ZeroTracker
from torch import fx, nn

import fxprune
from fxprune.testing import compile_checked, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

E, N = 32, 6


def _x():
    return torch.randn(2, N, E)


def _check(model: nn.Module, x):
    """Random distinct weights, exact mode, masked-equals-pruned, fewer parameters, no op
    without a rule."""
    randomize_(model).eval()
    out, rep, res = compile_checked(model, 0.5, x, exact=True)
    assert rep.params_after < rep.params_before, rep.details()
    assert not rep.unsupported, rep
    return out, rep, res


def _tracker(module: nn.Module, x: torch.Tensor) -> tuple[ZeroTracker, dict[str, fx.Node], int]:
    """The tracker of ``module``'s analysis, its nodes by name, and the class of ``fc1``'s outputs."""
    gm = analyze(fx.symbolic_trace(module), (x,))
    a = gm.meta[ANALYSIS]
    (c,) = {a.param_layouts["fc1.weight"][0].cls}
    return ZeroTracker(gm, a.param_layouts), {n.name: n for n in gm.graph.nodes}, c


def test_tracker_follows_zero_preserving_ops_and_stops_at_the_others() -> None:
    """fc1's output is zero on removed features (its weight and bias rows are zeroed); relu and
    a product keep that, sigmoid (sigmoid(0) = 0.5) and an added constant do not."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            r = F.relu(h)
            s = torch.sigmoid(h)
            return self.fc2(r * s + (s + 1.0))

    zt, nodes, c = _tracker(M(), torch.randn(3, 4))
    assert zt(nodes["fc1"], c) and zt(nodes["relu"], c) and zt(nodes["mul"], c)
    assert not zt(nodes["sigmoid"], c) and not zt(nodes["add"], c) and not zt(nodes["add_1"], c)
    assert not zt(nodes["x"], c)  # the graph input does not even hold the class


def test_tracker_trusts_an_affine_batch_norm_but_not_a_plain_one() -> None:
    """BatchNorm with affine weight and bias: both are zeroed on removed channels, so its output
    is zero there. Without affine parameters it outputs -mean/std on a zero input: not zero."""

    def net(affine: bool) -> nn.Module:
        class M(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc1, self.bn, self.fc2 = nn.Linear(4, 8), nn.BatchNorm1d(8, affine=affine), nn.Linear(8, 2)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fc2(self.bn(self.fc1(x)))

        return M().eval()

    zt, nodes, c = _tracker(net(True), torch.randn(3, 4))
    assert zt(nodes["bn"], c)
    zt, nodes, c = _tracker(net(False), torch.randn(3, 4))
    assert zt(nodes["fc1"], c) and not zt(nodes["bn"], c)


class L2Norms(nn.Module):
    """Three spellings of an L2 normalization over channels, each after a conv (+ BN)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 6, 3, padding=1)

    def forward(self, x):
        h = self.bn1(self.conv1(x))
        if self.how == "normalize":
            h = F.normalize(h, dim=1)
        elif self.how == "norm":
            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-6)
        elif self.how == "pow_sum":
            h = h * torch.rsqrt(h.pow(2).sum(1, keepdim=True) + 1e-6)
        elif self.how == "mean_sq":  # RMS: divides by the count, which removal changes
            h = h * torch.rsqrt(h.pow(2).mean(1, keepdim=True) + 1e-6)
        return self.conv2(h)


@pytest.mark.parametrize("how", ["normalize", "norm", "pow_sum"])
@pytest.mark.parametrize("capture", ["fx", "export"])
def test_l2_norm_over_zeroed_channels_is_exact(how, capture):
    model = randomize_(L2Norms(how)).eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True, capture=capture)
    assert small.get_parameter("conv1.weight").shape[0] == small.get_parameter("conv2.weight").shape[1] == 8
    result = fxprune.verify(model, small, x)
    assert result.passed and result.max_rel_err < 1e-5
    if capture == "fx":  # another batch size and resolution
        assert fxprune.verify(model, small, torch.randn(3, 3, 10, 10)).passed


def test_mean_of_squares_stays_approximate_and_a_norm_of_activations_is_not_exact():
    model = randomize_(L2Norms("mean_sq")).eval()
    x = torch.randn(2, 3, 8, 8)
    gm = fxprune.analyze(model, x)
    (group,) = [c for c in gm.meta["fxprune.analysis"].prunable() if c.size == 16]
    assert group.approx is not None and "mean" in group.approx

    class NormOfInput(nn.Module):  # the input itself is not zero on any removed index
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(x) * x.norm(dim=1, keepdim=True)

    gm = fxprune.analyze(NormOfInput(), x)
    assert not gm.meta["fxprune.analysis"].prunable() or all(c.size != 3 for c in gm.meta["fxprune.analysis"].prunable())


def test_contraction_of_unzeroed_activations_stays_approximate():
    class Gram(nn.Module):  # x . x^T over the embedding: nothing zeroes x's removed columns
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(E, E)

        def forward(self, x):
            h = x + 1.0
            return self.fc(h @ h.transpose(-2, -1) @ x)

    gm = fxprune.analyze(Gram(), _x())
    reasons = [c.approx or "" for c in gm.meta["fxprune.analysis"].classes]
    assert any("neither provably zero" in r for r in reasons)


def test_relu_gram_matrix_is_exact_by_zero_tracking():
    """y = relu(linear(x)); (y @ y^T) @ y: y is zero on removed features (zeroed rows, relu(0)
    = 0), so the contraction over features is exact and exact mode prunes it."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 4)

        def forward(self, x):
            y = self.fc1(x).relu()
            return self.fc2((y @ y.transpose(1, 2)) @ y)

    out, _, _ = _check(M(), torch.randn(2, 5, 6))
    assert out.fc1.weight.shape == (8, 6)
