"""One test per rule family of passes/rules.py: a tiny inline module per case, compiled,
proved masked-equals-pruned, and checked for the exact widths it should end up with (or,
for ops that must pin, for nothing pruned and the reason named in the report)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.modules.activation as activation_mod
import torchvision
from fxprune.passes.rules import key_of
from torch import nn

import fxprune

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


def _run_and_check(module, x, ratio=0.5, exact=True, expect_widths=None, expect_attrs=None):
    """Compile ``module`` at ``ratio`` and check everything that must hold for any rule:

    (a) norm layers get random statistics and affine params (fixed generator), so a zeroed
        channel is not trivially zero in the masked original;
    (b) compile; (c) masked-equals-pruned passes (max_rel_err <= 1e-4) and a ratio-0 compile
        reproduces the eager output; (d) the pruned graph lints, state_dict keys are kept, and
        the original module's state_dict is untouched; (e) pruned parameter/buffer shapes
        (``expect_widths``: state_dict name -> shape) and module attributes
        (``expect_attrs``: "sub.attr" -> value) are exactly as given; either may be a
        function of the report, for dims that are products of several groups, whose kept
        counts are the planner's choice.

    Returns (pruned module, report, verify result)."""
    x = x if isinstance(x, tuple) else (x,)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _NORMS):
                for t in (getattr(m, "weight", None), getattr(m, "bias", None)):
                    if isinstance(t, torch.Tensor):
                        t.copy_(torch.empty(t.shape).uniform_(0.5, 1.5, generator=g))
                rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
                if rm is not None:
                    rm.copy_(torch.empty(rm.shape).uniform_(-0.5, 0.5, generator=g))
                    rv.copy_(torch.empty(rv.shape).uniform_(0.5, 2.0, generator=g))
    module.eval()
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        eager = _tensors(module(*x))

    out = fxprune.compile(module, ratio, example_inputs=x, exact=exact)
    out.graph.lint()
    report = out.meta["fxprune.report"]
    res = fxprune.verify(module, out, x)
    assert res.passed and res.max_rel_err <= 1e-4, f"{res}\n{report.details()}\n{out.code}"
    with torch.no_grad():
        got = _tensors(out(*x))
    assert [t.shape for t in got] == [t.shape for t in eager], "graph output shapes must not change"
    traced = set(fxprune.analyze(module, x).state_dict())  # fx drops tensors forward never reads
    assert set(out.state_dict()) == traced, "state_dict keys must be kept"

    zero = fxprune.compile(module, 0.0, example_inputs=x, exact=exact)
    zero.graph.lint()
    with torch.no_grad():
        same = _tensors(zero(*x))
    assert len(same) == len(eager)
    for a, b in zip(same, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    after = module.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"original {k} was modified"

    sd = out.state_dict()
    expect_widths = expect_widths(report) if callable(expect_widths) else expect_widths
    expect_attrs = expect_attrs(report) if callable(expect_attrs) else expect_attrs
    for name, shape in (expect_widths or {}).items():
        assert tuple(sd[name].shape) == tuple(shape), f"{name}: {tuple(sd[name].shape)} != {shape}\n{report.details()}"
    for name, value in (expect_attrs or {}).items():
        owner, _, attr = name.rpartition(".")
        assert getattr(out.get_submodule(owner), attr) == value, f"{name} = {getattr(out.get_submodule(owner), attr)}"
    return out, report, res


def _kept(report, layout):
    """Kept count of a leaf layout's class under the report's plan (asserting it was pruned)."""
    assert layout.kind == "leaf", layout
    n = len(report.plan.keep.get(layout.cls, range(layout.size)))
    assert n < layout.size, f"class c{layout.cls} of size {layout.size} was not pruned"
    return n


def _factors(report, fqn, dim):
    """The leaf layouts of a parameter dim that is a row-major product of classes."""
    lay = report.analysis.param_layouts[fqn][dim]
    assert lay.kind == "prod", lay
    return lay.parts


def _class_of(report, fqn, dim):
    """The analysis class whose parameter list holds (fqn, dim)."""
    for c in report.analysis.classes:
        if (fqn, dim) in c.params:
            return c
    raise AssertionError(f"no class holds {fqn}[{dim}]")


class _Between(nn.Module):
    """conv(3 -> 16) -> ``f`` -> conv(16 -> 4): a spelling under test between two convs."""

    def __init__(self, f):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 4, 1)
        self.f = f

    def forward(self, x):
        return self.c2(self.f(self.c1(x)))


X2 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------
# parameterized layers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_conv_nd(k):
    """conv{k}d -> relu -> conv{k}d: the hidden channels 16 -> 8 in both weights and the bias."""
    Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[k]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = Conv(3, 16, 3, padding=1)
            self.c2 = Conv(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(torch.relu(self.c1(x)))

    x = torch.randn((2, 3) + (6,) * k)
    kern = (3,) * k
    _run_and_check(
        M(), x,
        expect_widths={"c1.weight": (8, 3) + kern, "c1.bias": (8,), "c2.weight": (8, 8) + kern, "c2.bias": (8,)},
        expect_attrs={"c1.out_channels": 8, "c2.in_channels": 8},
    )  # fmt: skip


def test_grouped_conv():
    """conv -> conv(groups=4) -> conv: channels are (group, channel-in-group), in and out
    sharing the group factor; every factor is pruned, so 16 in-channels become kG groups of
    kI and 16 out-channels kG groups of kO, weight (kG*kO, kI, 3, 3), groups=kG."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.c3 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c3(self.g(torch.relu(self.c1(x))).relu())

    def widths(r):
        grp, per_in = _factors(r, "c1.weight", 0)
        grp2, per_out = _factors(r, "g.weight", 0)
        assert grp == grp2 and r.analysis.param_layouts["g.weight"][1] == per_in
        kg, ki, ko = _kept(r, grp), _kept(r, per_in), _kept(r, per_out)
        return {"c1.weight": (kg * ki, 3, 3, 3), "g.weight": (kg * ko, ki, 3, 3), "g.bias": (kg * ko,),
                "c3.weight": (8, kg * ko, 3, 3)}  # fmt: skip

    def attrs(r):
        w = widths(r)
        kg = _kept(r, _factors(r, "c1.weight", 0)[0])
        return {"g.groups": kg, "g.in_channels": w["c1.weight"][0], "g.out_channels": w["g.bias"][0]}

    _run_and_check(M(), X2, expect_widths=widths, expect_attrs=attrs)


def test_depthwise_conv():
    """conv -> depthwise conv (groups=C) -> conv: the channel class is the group axis: 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.c3 = nn.Conv2d(16, 8, 1)

        def forward(self, x):
            return self.c3(self.dw(self.c1(x)).relu())

    _run_and_check(
        M(), X2,
        expect_widths={"c1.weight": (8, 3, 1, 1), "dw.weight": (8, 1, 3, 3), "dw.bias": (8,), "c3.weight": (8, 8, 1, 1)},
        expect_attrs={"dw.groups": 8, "dw.in_channels": 8, "dw.out_channels": 8},
    )  # fmt: skip


def test_depthwise_conv_multiplier():
    """conv -> depthwise conv with multiplier 2 (16 -> 32, groups=16) -> conv: out channels are
    (group, copy); the group axis and the copy axis are pruned (kG, kM), in-per-group is 1."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 1)
            self.dw = nn.Conv2d(16, 32, 3, padding=1, groups=16)
            self.c3 = nn.Conv2d(32, 8, 1)

        def forward(self, x):
            return self.c3(self.dw(self.c1(x)).relu())

    def widths(r):
        grp = r.analysis.param_layouts["c1.weight"][0]
        grp2, mult = _factors(r, "dw.weight", 0)
        assert grp2 == grp
        kg = _kept(r, grp)
        km = len(r.plan.keep.get(mult.cls, range(2)))  # 2 copies: pruned or not by the planner
        return {"c1.weight": (kg, 3, 1, 1), "dw.weight": (kg * km, 1, 3, 3), "c3.weight": (8, kg * km, 1, 1)}

    def attrs(r):
        return {"dw.groups": widths(r)["c1.weight"][0], "dw.out_channels": widths(r)["dw.weight"][0]}

    _run_and_check(M(), X2, expect_widths=widths, expect_attrs=attrs)


@pytest.mark.parametrize("spelling", ["conv2d_kw", "conv2d_positional", "conv_transpose2d"])
def test_functional_grouped_conv(spelling):
    """F.conv2d / F.conv_transpose2d with get_attr weights and groups=4 (keyword or
    positional): the groups argument is re-derived from the pruned group axis."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 1)
            self.w = nn.Parameter(torch.randn(16, 4, 3, 3) * 0.2)
            self.b = nn.Parameter(torch.randn(16))
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            y = self.c1(x).relu()
            if spelling == "conv2d_kw":
                y = F.conv2d(y, self.w, self.b, padding=1, groups=4)
            elif spelling == "conv2d_positional":
                y = F.conv2d(y, self.w, self.b, 1, 1, 1, 4)
            else:
                y = F.conv_transpose2d(y, self.w, self.b, 1, 1, 0, 4)
            return self.c2(y)

    def widths(r):
        grp, per_in = _factors(r, "c1.weight", 0)
        grp2, per_out = _factors(r, "b", 0)
        assert grp2 == grp
        kg, ki, ko = _kept(r, grp), _kept(r, per_in), _kept(r, per_out)
        w = (kg * ko, ki) if spelling != "conv_transpose2d" else (kg * ki, ko)
        return {"c1.weight": (kg * ki, 3, 1, 1), "w": w + (3, 3), "b": (kg * ko,), "c2.weight": (4, kg * ko, 1, 1)}

    out, report, _ = _run_and_check(M(), X2, expect_widths=widths)
    (conv,) = [n for n in out.graph.nodes if n.op == "call_function" and "conv" in n.name]
    groups = conv.kwargs["groups"] if "groups" in conv.kwargs else conv.args[6]
    assert groups == _kept(report, _factors(report, "c1.weight", 0)[0])


def test_conv_transpose2d():
    """conv_transpose2d -> relu -> conv_transpose2d: weight is (C_in, C_out, k, k); hidden 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.t1 = nn.ConvTranspose2d(3, 16, 3, stride=2, padding=1)
            self.t2 = nn.ConvTranspose2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.t2(F.relu(self.t1(x)))

    _run_and_check(
        M(), X2,
        expect_widths={"t1.weight": (3, 8, 3, 3), "t1.bias": (8,), "t2.weight": (8, 8, 3, 3)},
        expect_attrs={"t1.out_channels": 8, "t2.in_channels": 8},
    )  # fmt: skip


def test_conv_transpose2d_grouped():
    """conv -> conv_transpose2d(16 -> 16, groups=4) -> conv: weight (C_in, C_out/g, k, k) =
    ((group, in-per-group), out-per-group); every factor is pruned, so the weight becomes
    (kG*kI, kO, 3, 3) with groups=kG and out_channels=kG*kO."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 1)
            self.t = nn.ConvTranspose2d(16, 16, 3, padding=1, groups=4)
            self.c3 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c3(self.t(self.c1(x).relu()).relu())

    def widths(r):
        grp, per_in = _factors(r, "c1.weight", 0)
        grp2, per_out = _factors(r, "t.bias", 0)
        assert grp == grp2 and _factors(r, "t.weight", 0) == (grp, per_in)
        kg, ki, ko = _kept(r, grp), _kept(r, per_in), _kept(r, per_out)
        return {"c1.weight": (kg * ki, 3, 1, 1), "t.weight": (kg * ki, ko, 3, 3), "t.bias": (kg * ko,),
                "c3.weight": (4, kg * ko, 1, 1)}  # fmt: skip

    def attrs(r):
        w = widths(r)
        kg = _kept(r, _factors(r, "c1.weight", 0)[0])
        return {"t.groups": kg, "t.in_channels": w["c1.weight"][0], "t.out_channels": w["t.bias"][0]}

    _run_and_check(M(), X2, expect_widths=widths, expect_attrs=attrs)


def test_linear():
    """linear -> relu -> linear: hidden features 16 -> 8; in_features / out_features follow."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    _run_and_check(
        M(), torch.randn(3, 6),
        expect_widths={"fc1.weight": (8, 6), "fc1.bias": (8,), "fc2.weight": (4, 8), "fc2.bias": (4,)},
        expect_attrs={"fc1.out_features": 8, "fc2.in_features": 8},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# normalization
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bn2d", "bn1d_after_linear", "functional"])
def test_batch_norm(kind):
    """conv -> BatchNorm2d / linear -> BatchNorm1d / F.batch_norm on get_attr tensors: every
    per-channel tensor (weight, bias, running stats) follows the channel: 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "bn1d_after_linear":
                self.l1, self.bn, self.l2 = nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Linear(16, 4)
            else:
                self.l1, self.l2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 3, padding=1)
                if kind == "bn2d":
                    self.bn = nn.BatchNorm2d(16)
                else:
                    self.w = nn.Parameter(torch.rand(16) + 0.5)
                    self.b = nn.Parameter(torch.randn(16))
                    self.register_buffer("rm", torch.randn(16))
                    self.register_buffer("rv", torch.rand(16) + 0.5)

        def forward(self, x):
            y = self.l1(x)
            if kind == "functional":
                y = F.batch_norm(y, self.rm, self.rv, self.w, self.b, training=False)
            else:
                y = self.bn(y)
            return self.l2(y.relu())

    if kind == "bn1d_after_linear":
        x, widths = torch.randn(4, 6), {"l1.weight": (8, 6), "l2.weight": (4, 8)}
    else:
        x, widths = X2, {"l1.weight": (8, 3, 3, 3), "l2.weight": (4, 8, 3, 3)}
    if kind == "functional":
        widths.update({"w": (8,), "b": (8,), "rm": (8,), "rv": (8,)})
        attrs = None
    else:
        widths.update({"bn.weight": (8,), "bn.bias": (8,), "bn.running_mean": (8,), "bn.running_var": (8,)})
        attrs = {"bn.num_features": 8}
    _run_and_check(M(), x, expect_widths=widths, expect_attrs=attrs)


class _GN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.c2(self.gn(self.c1(x)).relu())


def test_group_norm_exact_prunes_whole_groups():
    """conv -> GroupNorm(4 groups of 4) -> conv, exact: channels are (group, channel-in-group);
    only whole groups go (num_groups 4 -> kG < 4), never channels within a group (their
    removal would change the group's statistics): the within-group factor stays 4."""
    model = _GN()

    def widths(r):
        grp, inner = _factors(r, "c1.weight", 0)
        assert inner.size == 4 and inner.cls not in r.plan.keep
        kg = _kept(r, grp)
        return {"c1.weight": (kg * 4, 3, 3, 3), "gn.weight": (kg * 4,), "gn.bias": (kg * 4,), "c2.weight": (8, kg * 4, 3, 3)}

    def attrs(r):
        kg = _kept(r, _factors(r, "c1.weight", 0)[0])
        return {"gn.num_groups": kg, "gn.num_channels": kg * 4}

    out, report, _ = _run_and_check(model, X2, expect_widths=widths, expect_attrs=attrs)
    # the kept channels are whole groups: find each kept row of c1.weight in the original
    orig = model.c1.weight.detach().flatten(1)
    kept = [int((orig == row).all(1).nonzero()) for row in out.c1.weight.detach().flatten(1)]
    groups = {i // 4 for i in kept}
    assert kept == [i for g in sorted(groups) for i in range(4 * g, 4 * g + 4)]
    # the within-group factor is a class of its own, approximate, and left whole
    inner = report.plan.group(_factors(report, "c1.weight", 0)[1].cls)
    assert not inner.exact and "group_norm" in inner.approx_reason


def test_group_norm_default_prunes_within_groups():
    """The same model with exact=False: the within-group factor is pruned too (approximately):
    kG groups of kI < 4 channels remain, and verify reports how far the outputs moved."""

    def widths(r):
        kg, ki = (_kept(r, f) for f in _factors(r, "c1.weight", 0))
        return {"c1.weight": (kg * ki, 3, 3, 3), "gn.weight": (kg * ki,), "c2.weight": (8, kg * ki, 3, 3)}

    def attrs(r):
        kg, ki = (_kept(r, f) for f in _factors(r, "c1.weight", 0))
        return {"gn.num_groups": kg, "gn.num_channels": kg * ki}

    _, _, res = _run_and_check(_GN(), X2, exact=False, expect_widths=widths, expect_attrs=attrs)
    assert res.approx_rel_err is not None and res.approx_rel_err > 0


def test_instance_norm_affine():
    """conv -> InstanceNorm2d(affine=True) -> conv: per-(sample, channel) statistics, so the
    channel prunes exactly: 16 -> 8, affine params too."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.inorm = nn.InstanceNorm2d(16, affine=True)
            self.c2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(self.inorm(self.c1(x)).relu())

    _run_and_check(
        M(), X2,
        expect_widths={"c1.weight": (8, 3, 3, 3), "inorm.weight": (8,), "inorm.bias": (8,), "c2.weight": (8, 8, 3, 3)},
        expect_attrs={"inorm.num_features": 8},
    )  # fmt: skip


class _LNChannelLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.ln = nn.LayerNorm(16)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        y = self.c1(x).permute(0, 2, 3, 1)
        y = self.ln(y).permute(0, 3, 1, 2)
        return self.c2(y.relu())


def test_layer_norm_channel_last_exact_keeps_it():
    """conv -> permute NHWC -> LayerNorm(C) -> permute back -> conv, exact: LayerNorm's
    statistics span the channels, so that class is approximate and left whole."""
    _, report, res = _run_and_check(
        _LNChannelLast(), X2, expect_widths={"c1.weight": (16, 3, 3, 3), "ln.weight": (16,), "c2.weight": (8, 16, 3, 3)}
    )
    c = _class_of(report, "c1.weight", 0)
    g = report.plan.group(c.id)
    assert not g.exact and "layer_norm" in g.approx_reason and c.id not in report.plan.keep
    assert res.approx_rel_err is None


def test_layer_norm_channel_last_default_prunes_approx():
    """The same model with exact=False: the channel class is pruned (16 -> 8, LayerNorm(8)) and
    verify reports the approximate error."""
    _, _, res = _run_and_check(
        _LNChannelLast(), X2, exact=False,
        expect_widths={"c1.weight": (8, 3, 3, 3), "ln.weight": (8,), "ln.bias": (8,), "c2.weight": (8, 8, 3, 3)},
        expect_attrs={"ln.normalized_shape": (8,)},
    )  # fmt: skip
    assert res.approx_rel_err is not None and res.approx_rel_err > 0


@pytest.mark.parametrize("exact", [True, False])
def test_layer_norm_functional_runtime_shape(exact):
    """linear -> F.layer_norm(y, y.shape[-1:], w, b) -> linear on (N, T, F): normalized_shape is
    a node computed at run time; exact keeps the features, default prunes them (16 -> 8) and
    re-derives normalized_shape."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.w = nn.Parameter(torch.rand(16) + 0.5)
            self.b = nn.Parameter(torch.randn(16))
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x):
            y = self.fc1(x)
            return self.fc2(F.layer_norm(y, y.shape[-1:], self.w, self.b))

    f = 16 if exact else 8
    _, _, res = _run_and_check(
        M(), torch.randn(2, 5, 6), exact=exact, expect_widths={"fc1.weight": (f, 6), "w": (f,), "b": (f,), "fc2.weight": (4, f)}
    )
    assert (res.approx_rel_err is None) == exact


@pytest.mark.parametrize("exact", [True, False])
def test_layer_norm_over_chw(exact):
    """conv -> LayerNorm([C, H, W]) -> conv: the statistics span channels and space: exact keeps
    the channels; default prunes them and the (C, H, W) affine params along C."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.ln = nn.LayerNorm([16, 8, 8])
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c2(self.ln(self.c1(x)))

    c = 16 if exact else 8
    _run_and_check(
        M(), X2, exact=exact,
        expect_widths={"c1.weight": (c, 3, 3, 3), "ln.weight": (c, 8, 8), "ln.bias": (c, 8, 8), "c2.weight": (4, c, 1, 1)},
        expect_attrs={"ln.normalized_shape": (c, 8, 8)},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# element-wise
# ------------------------------------------------------------------------------------------
def _activation_classes():
    out = []
    for name in activation_mod.__all__:
        cls = getattr(activation_mod, name)
        if isinstance(cls, type) and key_of(cls) in ("unary", "unary_zero"):
            out.append(cls)
    return out


_ACT_ARGS = {nn.Threshold: (0.1, -1.0)}


def test_activation_list_is_complete():
    """Sanity for the parametrization below: the usual activations are element-wise rules."""
    names = {c.__name__ for c in _activation_classes()}
    assert {"ReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish", "LeakyReLU", "Threshold", "RReLU"} <= names


@pytest.mark.parametrize("cls", _activation_classes(), ids=lambda c: c.__name__)
def test_activation(cls):
    """conv -> <activation module> -> conv: element-wise, so hidden channels 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.act = cls(*_ACT_ARGS.get(cls, ()))
            self.c2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(self.act(self.c1(x)))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (8, 8, 3, 3)})


@pytest.mark.parametrize("num_parameters", [16, 1])
def test_prelu(num_parameters):
    """conv -> PReLU(num_parameters=C) -> conv: one slope per channel, pruned with it; with a
    single shared slope (num_parameters=1) the slope stays and the channels still prune."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.act = nn.PReLU(num_parameters)
            self.c2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(self.act(self.c1(x)))

    m = M()
    with torch.no_grad():
        m.act.weight.uniform_(-1.0, 1.0)
    _run_and_check(
        m, X2,
        expect_widths={"c1.weight": (8, 3, 3, 3), "act.weight": (min(8, num_parameters),), "c2.weight": (8, 8, 3, 3)},
        expect_attrs={"act.num_parameters": min(8, num_parameters)},
    )  # fmt: skip


@pytest.mark.parametrize(
    "make", [nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, lambda: (lambda y: F.dropout(y, 0.3, False))],
    ids=["Dropout", "Dropout2d", "AlphaDropout", "Identity", "F.dropout"],
)  # fmt: skip
def test_dropout_identity(make):
    """conv -> dropout / identity -> conv: pass-through, hidden channels 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.drop = make()
            self.c2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(self.drop(self.c1(x).relu()))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (8, 8, 3, 3)})


# ------------------------------------------------------------------------------------------
# pooling and resampling
# ------------------------------------------------------------------------------------------
_POOLS = {
    "MaxPool2d": lambda: nn.MaxPool2d(2),
    "AvgPool2d": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(3),
    "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d((2, 3)),
    "F.max_pool2d": lambda: (lambda y: F.max_pool2d(y, 2, 2)),
    "F.avg_pool2d": lambda: (lambda y: F.avg_pool2d(y, 2)),
    "F.adaptive_avg_pool2d": lambda: (lambda y: F.adaptive_avg_pool2d(y, 1)),
    "MaxPool1d": lambda: nn.MaxPool1d(2),
}


@pytest.mark.parametrize("name", list(_POOLS))
def test_pooling(name):
    """conv -> max/avg/adaptive pool -> conv: pooling mixes space only; channels 16 -> 8."""
    k = 1 if name.endswith("1d") else 2
    Conv = nn.Conv1d if k == 1 else nn.Conv2d

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = Conv(3, 16, 3, padding=1)
            self.pool = _POOLS[name]()
            self.c2 = Conv(16, 8, 1)

        def forward(self, x):
            return self.c2(self.pool(self.c1(x)))

    x = torch.randn(2, 3, 8) if k == 1 else X2
    kern = (1,) * k
    _run_and_check(M(), x, expect_widths={"c1.weight": (8, 3) + (3,) * k, "c2.weight": (8, 8) + kern})


_RESAMPLE = {
    "F.interpolate_nearest": lambda: (lambda y: F.interpolate(y, scale_factor=2, mode="nearest")),
    "F.interpolate_bilinear_size": lambda: (lambda y: F.interpolate(y, size=(5, 7), mode="bilinear", align_corners=False)),
    "nn.Upsample": lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
    "nn.UpsamplingNearest2d": lambda: nn.UpsamplingNearest2d(scale_factor=2),
}  # fmt: skip


@pytest.mark.parametrize("name", list(_RESAMPLE))
def test_interpolate(name):
    """conv -> F.interpolate / nn.Upsample -> conv: resampling mixes space only; 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.up = _RESAMPLE[name]()
            self.c2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(self.up(self.c1(x)))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (8, 8, 3, 3)})


# ------------------------------------------------------------------------------------------
# broadcasting binary ops: a squeeze-excitation gate
# ------------------------------------------------------------------------------------------
_GATES = {
    "mul": lambda x, s: x * s,
    "torch.mul": lambda x, s: torch.mul(x, s),
    "add": lambda x, s: x + s,
    "method_add": lambda x, s: x.add(s),
    "sub": lambda x, s: x - s,
    "div": lambda x, s: x / (s + 1.0),
    "where": lambda x, s: torch.where(s > 0.5, x, x * s),
}


@pytest.mark.parametrize("op", list(_GATES))
def test_squeeze_excitation_broadcast(op):
    """conv -> x op gate, gate = sigmoid(conv1x1(relu(conv1x1(avgpool(x))))) of shape
    (N, C, 1, 1): the broadcast ties the gate's channels to x's; 16 -> 8 everywhere and the
    squeeze width 4 -> 2."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.se1 = nn.Conv2d(16, 4, 1)
            self.se2 = nn.Conv2d(4, 16, 1)
            self.head = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            y = self.c1(x).relu()
            s = torch.sigmoid(self.se2(F.relu(self.se1(self.pool(y)))))
            return self.head(_GATES[op](y, s))

    _run_and_check(
        M(), X2,
        expect_widths={"c1.weight": (8, 3, 3, 3), "se1.weight": (2, 8, 1, 1), "se1.bias": (2,),
                       "se2.weight": (8, 2, 1, 1), "se2.bias": (8,), "head.weight": (8, 8, 3, 3)},
    )  # fmt: skip


def test_squeeze_excitation_linear_view_expand():
    """SENet spelling: b, c = y.size(); gate = sigmoid(fc2(relu(fc1(avgpool(y).view(b, c)))))
    .view(b, c, 1, 1); y * gate.expand_as(y): the view sizes are re-derived, 16 -> 8, 4 -> 2."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.fc1 = nn.Linear(16, 4)
            self.fc2 = nn.Linear(4, 16)
            self.c2 = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):
            y = self.c1(x).relu()
            b, c, _, _ = y.size()
            g = F.adaptive_avg_pool2d(y, 1).view(b, c)
            g = torch.sigmoid(self.fc2(self.fc1(g).relu())).view(b, c, 1, 1)
            return self.c2(y * g.expand_as(y))

    _run_and_check(
        M(), X2,
        expect_widths={"c1.weight": (8, 3, 3, 3), "fc1.weight": (2, 8), "fc2.weight": (8, 2), "fc2.bias": (8,),
                       "c2.weight": (4, 8, 3, 3)},
    )  # fmt: skip


@pytest.mark.parametrize("spelling", ["method", "kwarg"])
def test_expand_to_a_shape_node(spelling):
    """timm EvoNorm-S's group std: v = x.reshape(b, g, c // g, h, w).var((2, 3, 4)) then
    v.expand(xg.shape): the whole-shape node is rebuilt element-wise, so the batch stays live
    and the pruned channels (a product of groups x channels per group) follow."""

    def f(y):
        b, c, h, w = y.shape
        yg = y.reshape(b, 2, c // 2, h, w)
        v = yg.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(1e-3).sqrt()
        v = v.expand(yg.shape) if spelling == "method" else v.expand(size=yg.shape)
        return y / v.reshape(b, c, h, w)

    out, _, _ = _run_and_check(_Between(f), X2, exact=False)
    assert out.get_parameter("c1.weight").shape[0] < 16
    x3 = torch.randn(3, 3, 8, 8)
    assert out(x3).shape == (3, 4, 8, 8)  # the batch size is not frozen


@pytest.mark.parametrize("exact", [True, False])
def test_matmul_between_activations_is_approx(exact):
    """linear -> a = y @ y^T -> a @ y -> linear: the feature dim is contracted between two
    activations. y = sigmoid(linear) is not zero on removed features in the masked model
    (sigmoid(0) = 0.5), so the removed products need not vanish: exact mode keeps it; default
    mode prunes it (16 -> 8) as an approximate group. (With relu instead, zero-tracking proves
    the contraction exact: tests/test_transformers.py.)"""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x):
            y = self.fc1(x).sigmoid()
            return self.fc2((y @ y.transpose(1, 2)) @ y)

    f = 16 if exact else 8
    _, report, res = _run_and_check(
        M(), torch.randn(2, 5, 6), exact=exact, expect_widths={"fc1.weight": (f, 6), "fc2.weight": (4, f)}
    )
    g = report.plan.group(_class_of(report, "fc1.weight", 0).id)
    assert not g.exact and "matmul" in g.approx_reason
    assert (res.approx_rel_err is None) == exact


# ------------------------------------------------------------------------------------------
# cat, stack, split, chunk, unbind, narrow, slicing
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, -3, -1])
def test_cat(dim):
    """Two conv branches concatenated on the channel dim (1 or -3): each branch 8 -> 4 and the
    consumer's input is [4 | 4]; on the width dim (-1) the branches' channels are one class."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(3, 8, 1)
            cin = 16 if dim in (1, -3) else 8
            self.head = nn.Conv2d(cin, 4, 3, padding=1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x).relu(), torch.tanh(self.b(x))], dim=dim))

    cin = 8 if dim in (1, -3) else 4
    _run_and_check(
        M(), X2, expect_widths={"a.weight": (4, 3, 3, 3), "b.weight": (4, 3, 1, 1), "head.weight": (4, cin, 3, 3)}
    )


@pytest.mark.parametrize("dim", [1, -1])
def test_stack(dim):
    """Two conv branches stacked: the new dim is pinned and both branches' channels are one
    class (8 -> 4). dim=1 is flattened back into channels (2 x 4 = 8 consumer inputs);
    dim=-1 is averaged away."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(16 if dim == 1 else 8, 4, 1)

        def forward(self, x):
            s = torch.stack([self.a(x), self.b(x).relu()], dim=dim)
            s = s.flatten(1, 2) if dim == 1 else s.mean(-1)
            return self.head(s)

    _run_and_check(
        M(), X2,
        expect_widths={"a.weight": (4, 3, 3, 3), "b.weight": (4, 3, 1, 1), "head.weight": (4, 8 if dim == 1 else 4, 1, 1)},
    )  # fmt: skip


def test_split_unequal_sizes():
    """conv(16) -> torch.split([6, 10], dim=1) -> two convs -> cat: each piece is its own
    class, pruned separately (6 -> 3, 10 -> 5); the split sizes are re-derived."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.a = nn.Conv2d(6, 4, 1)
            self.b = nn.Conv2d(10, 4, 1)

        def forward(self, x):
            p, q = torch.split(self.c1(x).relu(), [6, 10], dim=1)
            return torch.cat([self.a(p), self.b(q)], 1)

    _run_and_check(
        M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "a.weight": (4, 3, 1, 1), "b.weight": (4, 5, 1, 1)}
    )


def test_split_int_size_reordered_cat():
    """conv(16) -> y.split(4, dim=1) -> cat in reverse order -> conv: four classes of 4, each
    4 -> 2; the consumer sees the pieces reversed."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c2(torch.cat(self.c1(x).relu().split(4, dim=1)[::-1], 1))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 8, 1, 1)})


@pytest.mark.parametrize(
    "split",
    [
        lambda y: torch.tensor_split(y, indices=(6,), dim=1),  # torchvision MViT's spelling
        lambda y: torch.split(y, split_size_or_sections=[6, 10], dim=1),
        lambda y: y.split(split_size=8, dim=1),
        lambda y: torch.chunk(y, chunks=2, dim=1),
        lambda y: y.tensor_split(sections=2, dim=1),
    ],
    ids=["tensor_split-indices", "split-sections-kw", "method-split_size-kw", "chunk-chunks-kw",
         "tensor_split-sections-kw"],
)
def test_split_keyword_spellings(split):
    """Every keyword spelling of split / chunk / tensor_split is analyzed (both pieces pruned,
    each in its own class) and rewritten; the pieces come from the example outputs."""

    def f(y):
        p, q = split(y.relu())
        return torch.cat([q, p], 1)

    out, report, _ = _run_and_check(_Between(f), X2)
    assert out.get_parameter("c1.weight").shape[0] < 16
    assert not report.unsupported


@pytest.mark.parametrize("spelling", ["F.glu", "chunk_gate"])
def test_glu(spelling):
    """conv(16) -> GLU over channels (F.glu, or a, b = chunk(2, dim=-3); a * sigmoid(b)): the
    two halves are one class (8 -> 4), so the conv keeps 2 x 4."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c1(x)
            if spelling == "F.glu":
                return self.c2(F.glu(y, 1))
            a, b = y.chunk(2, dim=-3)
            return self.c2(a * torch.sigmoid(b))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 4, 1, 1)})


def test_chunk_pieces_pruned_unequally():
    """conv(16) -> chunk(2, dim=1): the first piece feeds a conv (8 -> 4), the second goes to
    the graph output (pinned, stays 8); the equal chunks become a split of [4, 8]."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.a = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            p, q = self.c1(x).chunk(2, dim=1)
            return self.a(p.relu()), q

    out, _, _ = _run_and_check(M(), X2, expect_widths={"c1.weight": (12, 3, 3, 3), "a.weight": (4, 4, 1, 1)})
    (node,) = [n for n in out.graph.nodes if n.name == "chunk"]
    assert node.op == "call_function" and list(node.args[1]) == [4, 8]  # a split with unequal sizes


def test_unbind():
    """conv(16) -> view (N, 2, 8, H, W) -> unbind(1) -> a + b -> conv: the 8-channel factor is
    one class shared by both halves (8 -> k), the conv before keeps 2 x k."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c1(x)
            a, b = y.view(y.shape[0], 2, -1, y.shape[2], y.shape[3]).unbind(1)
            return self.c2(a.relu() + b)

    def widths(r):
        k = _kept(r, r.analysis.param_layouts["c2.weight"][1])
        return {"c1.weight": (2 * k, 3, 3, 3), "c2.weight": (4, k, 1, 1)}

    _run_and_check(M(), X2, expect_widths=widths)


@pytest.mark.parametrize("start", [4, -12, "runtime"])
def test_narrow(start):
    """conv(16) -> narrow(1, start, 8) -> conv: the dim is [4 | 8 | 4], each part halved, so
    the conv keeps 8 and the consumer 4; narrow's start/length are re-derived (also when they
    are computed at run time from the pruned size: narrow(1, c // 4, c // 2))."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c1(x).relu()
            if start == "runtime":
                return self.c2(y.narrow(1, y.shape[1] // 4, y.shape[1] // 2))
            return self.c2(y.narrow(1, start, 8))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 4, 1, 1)})


_NCHW_INDEX = {
    "[:, 4:12]": (slice(None), slice(4, 12)),
    "[:, 4:12, :, :]": (slice(None), slice(4, 12), slice(None), slice(None)),
    "[..., 4:12, :, :]": (Ellipsis, slice(4, 12), slice(None), slice(None)),
    "[:, -12:-4]": (slice(None), slice(-12, -4)),
    "[:, :8]": (slice(None), slice(None, 8)),
}
_NTF_INDEX = {
    "[..., 4:12]": (Ellipsis, slice(4, 12)),
    "[:, :, 4:12]": (slice(None), slice(None), slice(4, 12)),
    "[..., -12:-4]": (Ellipsis, slice(-12, -4)),
    "[..., :8]": (Ellipsis, slice(None, 8)),
    "[:, :, -8:]": (slice(None), slice(None), slice(-8, None)),
    "[:, 1:4, 4:12]": (slice(None), slice(1, 4), slice(4, 12)),
}


@pytest.mark.parametrize("key", list(_NCHW_INDEX) + list(_NTF_INDEX))
def test_getitem_slice(key):
    """Basic slicing of 8 of 16 channels, on the channel dim of NCHW (dim 1) or the last dim of
    (N, T, F) linear features, with positive, negative, open and Ellipsis forms: the sliced
    dim is [before | kept | after], each part halved, the slice re-derived."""
    nchw = key in _NCHW_INDEX
    index = _NCHW_INDEX[key] if nchw else _NTF_INDEX[key]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Conv2d(3, 16, 3, padding=1) if nchw else nn.Linear(6, 16)
            self.l2 = nn.Conv2d(8, 4, 1) if nchw else nn.Linear(8, 4)

        def forward(self, x):
            return self.l2(self.l1(x).relu()[index])

    if nchw:
        x, widths = X2, {"l1.weight": (8, 3, 3, 3), "l2.weight": (4, 4, 1, 1)}
    else:
        x, widths = torch.randn(2, 5, 6), {"l1.weight": (8, 6), "l2.weight": (4, 4)}
    _run_and_check(M(), x, expect_widths=widths)


_RUNTIME_INDEX = {
    "[:, : c // 2]": (lambda y: y[:, : y.shape[1] // 2], 8, 4),
    "[:, c - 12 : c - 4]": (lambda y: y[:, y.shape[1] - 12 : y.shape[1] - 4], 8, 4),
    "[..., : w // 2]": (lambda y: y[..., : y.shape[-1] // 2], 8, 8),
    "[..., : c // 4] (W bound from pruned C)": (lambda y: y[..., : y.shape[1] // 4], 8, 8),
    "[:, 4:12, 1:-1, ::2]": (lambda y: y[:, 4:12, 1:-1, ::2], 8, 4),
}


@pytest.mark.parametrize("key", list(_RUNTIME_INDEX))
def test_getitem_runtime_bounds(key):
    """Slices whose bounds are computed at run time from sizes (x[..., :n] with n from
    x.shape), on the channel dim or on W, and slices of several dims at once: channel offsets
    are re-derived from the kept positions; a bound computed from a pruned size but applied
    to an unpruned dim keeps its original value."""
    fn, c1, c2_in = _RUNTIME_INDEX[key]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16 if c2_in == 8 else 8, 4, 1)

        def forward(self, x):
            return self.c2(fn(self.c1(x).relu()))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (c1, 3, 3, 3), "c2.weight": (4, c2_in, 1, 1)})


@pytest.mark.parametrize("runtime", [False, True])
def test_getitem_integer_index_pins_that_channel(runtime):
    """conv(16) -> y[:, 3] (or y[:, c - 13]) -> unsqueeze -> conv: the dim is [3 | 1 | 12]; the
    selected channel is pinned, the others prune and the index is re-derived."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(1, 4, 1)

        def forward(self, x):
            y = self.c1(x).relu()
            return self.c2((y[:, y.shape[1] - 13] if runtime else y[:, 3]).unsqueeze(1))

    def widths(r):
        lay = r.analysis.param_layouts["c1.weight"][0]
        assert lay.kind == "cat" and [p.size for p in lay.parts] == [3, 1, 12]
        assert lay.parts[1].cls not in r.plan.keep
        return {"c1.weight": (_kept(r, lay.parts[0]) + 1 + _kept(r, lay.parts[2]), 3, 3, 3)}

    _, report, _ = _run_and_check(M(), X2, expect_widths=widths)
    pinned = report.analysis.classes[report.analysis.param_layouts["c1.weight"][0].parts[1].cls].pinned
    assert "integer index" in pinned


def test_getitem_strided_slice_pins():
    """conv(16) -> y[:, ::2] -> conv: a strided slice of channels is not described as a
    concatenation, so the channel class is pinned and nothing is pruned there."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.c2(self.c1(x).relu()[:, ::2])

    _, report, _ = _run_and_check(M(), X2, expect_widths={"c1.weight": (16, 3, 3, 3), "c2.weight": (4, 8, 1, 1)})
    assert "strided slice" in _class_of(report, "c1.weight", 0).pinned


# ------------------------------------------------------------------------------------------
# reshapes and layout
# ------------------------------------------------------------------------------------------
_FLATTENS = {
    "torch.flatten": lambda y: torch.flatten(y, 1),
    "view(size(0), -1)": lambda y: y.view(y.size(0), -1),
    "reshape(n, c*h*w)": lambda y: y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3]),
    "nn.Flatten": nn.Flatten(),
}


@pytest.mark.parametrize("name", list(_FLATTENS))
def test_flatten_into_linear(name):
    """conv (16 x 4 x 4) -> flatten -> Linear(256, 10): each channel keeps its 16 columns, so
    fc.weight becomes (10, 8 * 16)."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.flat = _FLATTENS[name]
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(self.flat(self.c1(x).relu()))

    model = M()
    out, _, _ = _run_and_check(
        model, torch.randn(2, 3, 4, 4), expect_widths={"c1.weight": (8, 3, 3, 3), "fc.weight": (10, 8 * 16)},
        expect_attrs={"fc.in_features": 128},
    )  # fmt: skip
    # the columns kept are the kept channels' whole blocks of H*W, in order
    orig = model.c1.weight.detach().flatten(1)
    kept = [int((orig == row).all(1).nonzero()) for row in out.c1.weight.detach().flatten(1)]
    cols = torch.cat([torch.arange(16 * c, 16 * c + 16) for c in kept])
    assert torch.equal(out.fc.weight.detach(), model.fc.weight.detach()[:, cols])


def test_view_reshape_permute_transpose_chain():
    """conv -> permute NHWC -> contiguous -> reshape (N, HW, C) -> Linear(C, C) -> transpose
    -> unsqueeze/squeeze -> contiguous().view(N, C, H, W) -> conv: both channel classes
    (conv out / linear in, linear out / conv in) halve; the size arguments are re-derived."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 16)
            self.c2 = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):
            y = self.c1(x)
            n, c, h, w = y.shape
            y = y.permute(0, 2, 3, 1).contiguous().reshape(n, h * w, c)
            y = self.fc(y.relu())
            y = y.transpose(1, 2).unsqueeze(2).squeeze(2)
            y = torch.unsqueeze(y, -1).squeeze(-1)
            y = y.contiguous().view(n, -1, h, w)
            return self.c2(y)

    _run_and_check(
        M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "fc.weight": (8, 8), "fc.bias": (8,), "c2.weight": (4, 8, 3, 3)}
    )


@pytest.mark.parametrize("op", ["repeat", "repeat_interleave"])
def test_repeat(op):
    """conv(8) -> repeat(1, 2, 1, 1) / repeat_interleave(2, dim=1) -> conv(16 in): the channel
    is (copy, c) or (c, copy) with the copy count pinned: 8 -> 4, consumer 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            y = self.c1(x).relu()
            return self.c2(y.repeat(1, 2, 1, 1) if op == "repeat" else y.repeat_interleave(2, dim=1))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (4, 3, 3, 3), "c2.weight": (4, 8, 1, 1)})


@pytest.mark.parametrize("spelling", ["method", "module"])
def test_unflatten(spelling):
    """conv(16) -> unflatten(1, (2, 8)) -> sum over the 2 -> conv(8 in): the 8 factor prunes
    (8 -> k); the conv's output is zero on removed indices in the masked model, so the sum
    over the 2 is unchanged by removing one of them, and the 2 factor prunes too (2 -> j);
    the conv keeps j x k, and the unflattened size is re-derived."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.u = nn.Unflatten(1, (2, 8))
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c1(x)
            y = self.u(y) if spelling == "module" else y.unflatten(1, (2, 8))
            return self.c2(y.sum(1))

    def widths(r):
        k = _kept(r, r.analysis.param_layouts["c2.weight"][1])
        two, eight = _factors(r, "c1.weight", 0)
        assert eight.size == 8 and two.size == 2
        return {"c1.weight": (_kept(r, two) * k, 3, 3, 3), "c2.weight": (4, k, 1, 1)}

    _run_and_check(M(), X2, expect_widths=widths)


def test_pad_channels_pins():
    """conv(16) -> F.pad on the channel dim (1 each side) -> conv(18 in): padded dims change
    content at their ends and are pinned; a second pad of H, W only keeps channels free."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 16, 3, padding=1)
            self.c1 = nn.Conv2d(16, 16, 3, padding=1)
            self.c2 = nn.Conv2d(18, 4, 1)

        def forward(self, x):
            y = self.c1(F.pad(self.c0(x).relu(), (1, 1, 1, 1)))
            return self.c2(F.pad(y, (0, 0, 0, 0, 1, 1)))

    _, report, _ = _run_and_check(
        M(), X2, expect_widths={"c0.weight": (8, 3, 3, 3), "c1.weight": (16, 8, 3, 3), "c2.weight": (4, 18, 1, 1)}
    )
    assert "pad" in _class_of(report, "c1.weight", 0).pinned


def test_movedim_linear_channel_last():
    """conv -> movedim(1, -1) -> Linear(C, 4) over channels-last -> mean: 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.movedim(self.c1(x).relu(), 1, -1)).mean((1, 2))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "fc.weight": (4, 8)})


_SPATIAL_REDUCE = {
    "mean": lambda y: y.mean((2, 3)),
    "torch.sum": lambda y: torch.sum(y, dim=(2, 3)),
    "amax": lambda y: y.amax(dim=(-2, -1)),
    "mean_keepdim_flatten": lambda y: y.mean((2, 3), keepdim=True).flatten(1),
    "amax_positional_keepdim": lambda y: torch.amax(y, (2, 3), True).squeeze(-1).squeeze(-1),
    "flatten_max_values": lambda y: y.flatten(2).max(-1)[0],
}


@pytest.mark.parametrize("name", list(_SPATIAL_REDUCE))
def test_reduce_spatial(name):
    """conv -> mean/sum/amax over H, W -> Linear: the channel passes through: 16 -> 8."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.red = _SPATIAL_REDUCE[name]
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(self.red(self.c1(x).relu()))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "fc.weight": (4, 8)})


_CHANNEL_REDUCE = {
    "mean": lambda y: y.mean(1, keepdim=True),
    "torch.sum": lambda y: torch.sum(y, dim=1, keepdim=True),
    "amax": lambda y: y.amax(dim=-3, keepdim=True),
    "max_values": lambda y: y.max(dim=1, keepdim=True)[0],
    "sum_no_keepdim": lambda y: y.sum(1).unsqueeze(1),
}


@pytest.mark.parametrize("spelling", ["torch.norm", "method", "vector_norm"])
def test_norm_over_spatial_dims_keeps_channels(spelling):
    """ConvNeXt-V2's GRN spelling: the L2 norm over H, W (keepdim) is one value per channel,
    so the channels stay prunable through it, exactly."""
    norms = {
        "torch.norm": lambda y: torch.norm(y, p=2, dim=(2, 3), keepdim=True),
        "method": lambda y: y.norm(2, (2, 3), True),
        "vector_norm": lambda y: torch.linalg.vector_norm(y, 2, dim=(-2, -1), keepdim=True),
    }

    def f(y):
        return y * norms[spelling](y)

    _, report, _ = _run_and_check(_Between(f), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 8, 1, 1)})
    assert not report.unsupported


def test_norm_over_channels_is_a_statistic():
    """F.normalize-style x / x.norm(dim=1, keepdim=True) of a tensor that is not zero on the
    removed channels (here conv + 1): removing channels changes the norm, so the channels are
    approximate (kept in exact mode, pruned in default mode). Of the conv's own output, which
    is zero there in the masked model, the norm is unchanged: exact."""

    def shifted(y):
        y = y + 1
        return y / y.norm(dim=1, keepdim=True)

    _, report, _ = _run_and_check(_Between(shifted), X2, expect_widths={"c1.weight": (16, 3, 3, 3)})
    c = _class_of(report, "c1.weight", 0)
    assert c.pinned is None and c.approx is not None and "norm statistic" in c.approx
    small = fxprune.compile(_Between(shifted).eval(), 0.5, example_inputs=X2)
    assert small.get_parameter("c1.weight").shape[0] == 8

    def direct(y):
        return y / y.norm(dim=1, keepdim=True)

    _, report, _ = _run_and_check(_Between(direct), X2, expect_widths={"c1.weight": (8, 3, 3, 3)})
    assert _class_of(report, "c1.weight", 0).approx is None


@pytest.mark.parametrize("bound", ["min", "max", "both"])
def test_clamp_with_tensor_bounds_ties_channels(bound):
    """clamp(x, min=t) with a per-channel parameter t: t's channels are x's (pruned with it)."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.lo = nn.Parameter(torch.randn(16, 1, 1) * 0.1)
            self.hi = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            y = self.c1(x)
            if bound == "min":
                y = torch.clamp(y, min=self.lo)
            elif bound == "max":
                y = y.clamp(max=self.hi)
            else:
                y = y.clip(self.lo, self.hi)
            return self.c2(y)

    widths = {"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 8, 1, 1)}
    widths.update({"lo": (8, 1, 1)} if bound != "max" else {})
    widths.update({"hi": (8, 1, 1)} if bound != "min" else {})
    _run_and_check(M(), X2, expect_widths=widths)


@pytest.mark.parametrize("name", list(_CHANNEL_REDUCE))
def test_reduce_channel_pins(name):
    """conv -> relu -> mean/sum/amax over the channel dim -> conv: the reduced channel class is
    pinned ("reduced over") and nothing is pruned there; an earlier conv still prunes."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 16, 3, padding=1)
            self.c1 = nn.Conv2d(16, 16, 3, padding=1)
            self.red = _CHANNEL_REDUCE[name]
            self.c2 = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return self.c2(self.red(self.c1(self.c0(x).relu()).sigmoid()))

    _, report, _ = _run_and_check(
        M(), X2, expect_widths={"c0.weight": (8, 3, 3, 3), "c1.weight": (16, 8, 3, 3), "c1.bias": (16,)}
    )
    c = _class_of(report, "c1.weight", 0)
    if name == "mean":  # a keepdim mean is a statistic (hand-written RMSNorm): approximate, not pinned
        assert c.pinned is None and c.approx is not None and "statistic" in c.approx and c.id not in report.plan.keep
        return
    assert c.pinned is not None and "reduced over" in c.pinned and c.id not in report.plan.keep


@pytest.mark.parametrize("spelling", ["F", "module"])
def test_pixel_shuffle(spelling):
    """conv(16) -> pixel_shuffle(2) -> conv(4 in): channel = (c, r1, r2); c halves (4 -> 2),
    the sub-pixel factors stay, so the first conv keeps 2 x 4 = 8 channels."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.ps = nn.PixelShuffle(2) if spelling == "module" else (lambda y: F.pixel_shuffle(y, 2))
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.c2(self.ps(self.c1(x)).relu())

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 2, 3, 3)})


@pytest.mark.parametrize("spelling", ["F", "module"])
def test_pixel_unshuffle(spelling):
    """conv(4) -> pixel_unshuffle(2) -> conv(16 in): channel out = (c, r1, r2); c halves
    (4 -> 2), so the consumer keeps 2 x 4 = 8 inputs."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.pu = nn.PixelUnshuffle(2) if spelling == "module" else (lambda y: F.pixel_unshuffle(y, 2))
            self.c2 = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c2(self.pu(self.c1(x).relu()))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (2, 3, 3, 3), "c2.weight": (4, 8, 1, 1)})


def test_channel_shuffle():
    """conv(16) -> view(b, 4, 4, h, w).transpose(1, 2).reshape(b, 16, h, w) -> conv: channels
    are (group, c) before and (c, group) after; both factors are pruned (to kG, kC) and the
    consumer sees them in the swapped order."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):
            y = self.c1(x).relu()
            b, c, h, w = y.size()
            g = 4
            y = y.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)
            return self.c2(y)

    def widths(r):
        grp, per = _factors(r, "c1.weight", 0)
        assert _factors(r, "c2.weight", 1) == (per, grp)
        n = _kept(r, grp) * _kept(r, per)
        return {"c1.weight": (n, 3, 3, 3), "c2.weight": (4, n, 3, 3)}

    _run_and_check(M(), X2, expect_widths=widths)


# ------------------------------------------------------------------------------------------
# parameters used directly in forward (get_attr)
# ------------------------------------------------------------------------------------------
_CONTRACT = {
    "@": lambda y, w: y @ w,
    "torch.matmul": lambda y, w: torch.matmul(y, w),
    "einsum": lambda y, w: torch.einsum("nc,cd->nd", y, w),
}


@pytest.mark.parametrize("op", list(_CONTRACT))
def test_contract_with_parameter(op):
    """linear(16) -> relu -> y @ self.w (16 x 8 parameter) -> linear: contracting with a
    parameter is exact, so both the contracted dim (16 -> 8) and w's output dim (8 -> 4) prune."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.w = nn.Parameter(torch.randn(16, 8))
            self.fc2 = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc2(_CONTRACT[op](F.relu(self.fc1(x)), self.w))

    _, report, _ = _run_and_check(
        M(), torch.randn(3, 6), expect_widths={"fc1.weight": (8, 6), "w": (8, 4), "fc2.weight": (4, 4)}
    )
    assert report.plan.group(_class_of(report, "w", 0).id).exact


def test_einsum_conv_features_with_parameter():
    """conv -> einsum("nchw,cd->ndhw", y, self.w) -> conv: a 1x1 'conv' spelled as einsum with
    a parameter: exact, both sides halve."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.w = nn.Parameter(torch.randn(16, 8))
            self.c2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.c2(torch.einsum("nchw,cd->ndhw", self.c1(x).relu(), self.w))

    _run_and_check(M(), X2, expect_widths={"c1.weight": (8, 3, 3, 3), "w": (8, 4), "c2.weight": (4, 4, 1, 1)})


class _Sub(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.register_buffer("mu", torch.randn(16, 1, 1))


@pytest.mark.parametrize("spelling", ["view", "nested (C,1,1) param and buffer", "indexing [:, None, None]"])
def test_parameter_channel_scale(spelling):
    """conv -> x * self.scale.view(1, -1, 1, 1) (or a submodule's (C, 1, 1) parameter and
    buffer, or self.scale[:, None, None]) -> conv: every per-channel tensor is sliced with
    the channel (16 -> 8)."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.scale = nn.Parameter(torch.rand(16) + 0.5)
            if spelling != "view":  # (symbolic_trace drops tensors forward never reads)
                self.blk = _Sub()
            self.c2 = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):
            y = self.c1(x).relu()
            if spelling == "view":
                y = y * self.scale.view(1, -1, 1, 1)
            elif spelling == "nested (C,1,1) param and buffer":
                y = (y - self.blk.mu) * self.blk.gamma * self.scale.reshape(16, 1, 1)
            else:
                y = (y - self.blk.mu) * self.scale[:, None, None] * self.blk.gamma
            return self.c2(y)

    widths = {"c1.weight": (8, 3, 3, 3), "c2.weight": (4, 8, 3, 3)}
    widths["scale"] = (8,)
    if spelling != "view":
        widths.update({"blk.gamma": (8, 1, 1), "blk.mu": (8, 1, 1)})
    _run_and_check(M(), X2, expect_widths=widths)


def test_module_called_twice_and_tied_weights():
    """One conv applied twice in a row (its in and out channels become one class) and a
    Linear weight tied between two layers: each tensor is sliced once, consistently."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 1)
            self.c = nn.Conv2d(16, 16, 3, padding=1)
            self.fc1 = nn.Linear(16, 12)
            self.fc2 = nn.Linear(12, 16)
            self.fc3 = nn.Linear(16, 12)
            self.fc3.weight = self.fc1.weight
            self.out = nn.Linear(12, 4)

        def forward(self, x):
            y = self.c(self.c(self.c1(x)).relu()).mean((2, 3))
            return self.out(self.fc3(self.fc2(self.fc1(y).relu()).relu()))

    out, _, _ = _run_and_check(
        M(), X2,
        expect_widths={"c1.weight": (8, 3, 1, 1), "c.weight": (8, 8, 3, 3), "fc1.weight": (6, 8), "fc2.weight": (8, 6),
                       "fc3.weight": (6, 8), "out.weight": (4, 6)},
    )  # fmt: skip
    assert out.fc1.weight is out.fc3.weight


# ------------------------------------------------------------------------------------------
# ops without a rule, graph inputs and outputs
# ------------------------------------------------------------------------------------------
_UNKNOWN = {
    "torch.sort": (lambda y: torch.sort(y, dim=1)[0], "sort"),
    "torch.renorm": (lambda y: torch.renorm(y, 2, 1, 5.0), "renorm"),  # (cumsum, once here, has a rule now)
}


@pytest.mark.parametrize("name", list(_UNKNOWN))
def test_unknown_op_pins(name):
    """conv0 -> conv1 -> <op with no rule along channels> -> conv2: conv1's output class and
    conv2's input are pinned and the op is listed as unsupported by node name; conv0's
    hidden channels, away from the op, still prune."""
    fn, node = _UNKNOWN[name]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 16, 3, padding=1)
            self.c1 = nn.Conv2d(16, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):
            return self.c2(fn(self.c1(self.c0(x).relu())))

    _, report, _ = _run_and_check(
        M(), X2, expect_widths={"c0.weight": (8, 3, 3, 3), "c1.weight": (16, 8, 3, 3), "c2.weight": (4, 16, 3, 3)}
    )
    unsupported = {u.node: u for u in report.analysis.unsupported}
    assert node in unsupported and unsupported[node].op == name
    c = _class_of(report, "c1.weight", 0)
    assert c.pinned is not None and name in c.pinned and node in c.pinned
    c2 = _class_of(report, "c2.weight", 1)
    assert c2.pinned is not None and name in c2.pinned
    assert c.id not in report.plan.keep and c2.id not in report.plan.keep


def test_graph_input_and_output_pinned():
    """linear(8 -> 16) -> relu -> linear(16 -> 4): only the hidden width prunes; the first
    layer's in_features (graph input) and the last layer's out_features (graph output) stay."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(self.fc1(x).relu())

    out, report, _ = _run_and_check(
        M(), torch.randn(3, 8),
        expect_widths={"fc1.weight": (8, 8), "fc2.weight": (4, 8), "fc2.bias": (4,)},
        expect_attrs={"fc1.in_features": 8, "fc2.out_features": 4},
    )  # fmt: skip
    assert "graph input" in _class_of(report, "fc1.weight", 1).pinned
    assert "graph output" in _class_of(report, "fc2.weight", 0).pinned
    assert "graph output" in _class_of(report, "fc2.bias", 0).pinned


class _PlainTensorScale(nn.Module):
    """A plain (unregistered) tensor attribute used as a per-channel scale reaches the graph
    as get_attr of a constant: it is sliced with the channels it scales."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)
        self.scale = torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1)

    def forward(self, x):
        return self.b(self.a(x) * self.scale)


def test_plain_tensor_attribute_is_sliced():
    """A get_attr constant (not a parameter or buffer) follows the channels it scales."""
    out, _, _ = _run_and_check(_PlainTensorScale(), torch.randn(2, 3, 5, 5), expect_widths={"a.weight": (4, 3, 1, 1)})
    assert out.scale.shape == (1, 4, 1, 1)


class _NewTensorScale(nn.Module):
    """A per-channel scale built from data with ``new_tensor``: its argument is data, not
    sizes, so no size can be re-derived from it and the channels it scales stay whole."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        w = y.new_tensor([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]).view(1, 8, 1, 1)
        return self.b(y * w)


def test_new_tensor_from_data_pins():
    """new_tensor has no rule: the node is named in the report and a.out keeps 8 channels."""
    out, report, _ = _run_and_check(_NewTensorScale(), torch.randn(2, 3, 5, 5), expect_widths={"a.weight": (8, 3, 1, 1)})
    assert [u.op for u in report.unsupported] == [".new_tensor"]


class _DropPathAndAssert(nn.Module):
    """A residual branch through torchvision's stochastic_depth (drop-path, per sample) with a
    shape check by torch._assert on the channel count, as timm writes it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)
        # the module form: torch.fx.wrap keeps the call only inside torchvision's own module
        self.drop = torchvision.ops.StochasticDepth(0.2, "row")

    def forward(self, x):
        y = self.a(x)
        torch._assert(y.shape[1] == 8, "expected 8 channels")
        y = y + self.drop(self.b(y))
        return self.c(y)


def test_stochastic_depth_and_assert():
    """Both pass channels through: the residual class (a.out = b.out) halves, and the
    assert's condition, computed from the pruned size, keeps its original value."""
    out, report, _ = _run_and_check(
        _DropPathAndAssert().eval(), torch.randn(2, 3, 5, 5),
        expect_widths={"a.weight": (4, 3, 1, 1), "b.weight": (4, 4, 1, 1), "c.weight": (4, 4, 1, 1)},
    )  # fmt: skip
    assert not report.unsupported
    targets = [n.target for n in out.graph.nodes if n.op == "call_function"]
    assert torchvision.ops.stochastic_depth in targets and torch._assert in targets


class _StdConv(nn.Conv2d):
    """Weight standardization as timm's StdConv2d does it: batch_norm(training=True) over each
    filter's input channels and taps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, eps=1e-6)
        return F.conv2d(x, w.reshape_as(self.weight), self.bias, padding=1)


def test_weight_standardization_makes_input_channels_approximate() -> None:
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), _StdConv(16, 8, 3, padding=1)).eval()
    x = torch.randn(1, 3, 16, 16)
    exact = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    assert exact.state_dict()["0.weight"].shape[0] == 16  # exact mode keeps them: not provably exact
    approx = fxprune.compile(m, 0.5, example_inputs=x, verify=True)
    group = next(g for g in approx.meta["fxprune.report"].plan.groups if ("0.weight", 0) in g.params)
    assert not group.exact and "batch_norm batch statistics" in group.approx_reason
    assert approx.state_dict()["0.weight"].shape[0] == 8


class _ClassToken(nn.Module):
    """torchvision ViT's pattern: n = x.shape[0] from a tensor whose channel dim is pruned,
    then class_token.expand(n, -1, -1). The batch size must stay live, not frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.token = nn.Parameter(torch.randn(1, 1, 16))
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        n = x.shape[0]
        x = torch.cat([self.token.expand(n, -1, -1), x], dim=1)
        x = x + self.mlp(x)
        return self.head(x[:, 0])


def test_batch_size_read_from_a_pruned_tensor_stays_live() -> None:
    m = _ClassToken().eval()
    small = fxprune.compile(m, 0.5, example_inputs=torch.randn(1, 5, 8))
    assert small.state_dict()["proj.weight"].shape[0] == 8  # the channel dim was pruned
    masked = fxprune.mask(fxprune.analyze(m, torch.randn(1, 5, 8)), small.meta["fxprune.report"].plan)
    x = torch.randn(4, 5, 8)  # another batch size than the example's
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
