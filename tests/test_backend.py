"""torch.compile(model, backend="fxprune"): Dynamo's graphs pruned by the same passes."""

from __future__ import annotations

import copy
import importlib.metadata

import pytest
import torch
import torchvision
from fxprune.passes.keys import REPORT
from torch import nn

import fxprune
from fxprune.dynamo import StaleWeightsError, state_fqn
from fxprune.testing import randomize_


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = y + torch.relu(self.bn2(self.conv2(y)))
        y = self.conv3(y).relu().mean((2, 3))
        return self.fc(y)


class BrokenNet(SmallNet):
    """SmallNet with a graph break between conv1 and conv2: conv1's channels cross it."""

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        torch._dynamo.graph_break()
        y = y + torch.relu(self.bn2(self.conv2(y)))
        y = self.conv3(y).relu().mean((2, 3))
        return self.fc(y)


def _model(cls=SmallNet):
    torch.manual_seed(0)
    return randomize_(cls()).eval()


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_entry_point_lists_fxprune():
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    assert "fxprune" in {e.name for e in eps}
    assert "fxprune" in torch._dynamo.list_backends(exclude_tags=())


def test_state_fqn_from_dynamo_sources():
    assert state_fqn("L['self']._modules['layer1']._modules['0']._parameters['weight']") == "layer1.0.weight"
    assert state_fqn("L['self']._modules['bn']._buffers['running_mean']") == "bn.running_mean"
    assert state_fqn("G['model']._modules['fc']._parameters['bias']") == "fc.bias"
    assert state_fqn("L['x']") is None


@pytest.mark.parametrize("then", ["eager", "inductor"])
def test_string_backend_equals_fxprune_compile(then):
    m, x = _model(), torch.randn(2, 3, 16, 16)
    before = _state(m)
    ref = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    fast = torch.compile(m, backend="fxprune", options={"ratio": 0.5, "exact": True, "then": then})
    with torch.no_grad():
        y = fast(x)
    torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-5)
    report = fxprune.dynamo.reports()[-1]
    assert report.capture == "dynamo"
    assert report.params_after == fxprune.count_params(ref) < report.params_before
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the model is untouched


def test_factory_backend_and_given_plan():
    m, x = _model(), torch.randn(2, 3, 16, 16)
    ref = fxprune.compile(m, speedup=2.0, example_inputs=x)  # a plan made earlier, with approx groups
    plan = ref.meta[REPORT].plan
    be = fxprune.backend(plan=plan, then="eager")
    with torch.no_grad():
        y = torch.compile(m, backend=be)(x)
    torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-5)
    assert be.reports[0].plan.keep  # the plan was applied, not dropped
    assert be.reports[0].notes == []


def test_recompile_reuses_the_decision():
    m = _model()
    be = fxprune.backend(ratio=0.5, then="eager")
    fast = torch.compile(m, backend=be)
    with torch.no_grad():
        fast(torch.randn(2, 3, 16, 16))
        fast(torch.randn(5, 3, 20, 20))  # new shapes: Dynamo compiles a second graph
    assert len(be.reports) == 2
    kept = [{g.params: r.plan.keep.get(g.id) for g in r.plan.groups} for r in be.reports]
    assert kept[0] == kept[1]
    x = torch.randn(3, 3, 24, 24)
    ref = fxprune.rewrite(
        fxprune.analyze(m, x), fxprune.dynamo.remap_plan(be.reports[0].plan, fxprune.analyze(m, x))[0]
    )
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)


def test_changed_weights_are_refused_not_served_stale():
    m = _model()
    fast = torch.compile(m, backend=fxprune.backend(ratio=0.5, then="eager"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fast(x)
        m.conv1.weight.add_(1.0)  # e.g. an optimizer step
        with pytest.raises(StaleWeightsError, match="conv1.weight was modified in place"):
            fast(x)


def test_graph_break_pins_the_crossing_channels_and_stays_correct():
    m, x = _model(BrokenNet), torch.randn(2, 3, 16, 16)
    be = fxprune.backend(ratio=0.5, exact=True, then="eager")
    with torch.no_grad():
        y = torch.compile(m, backend=be)(x)
    assert len(be.reports) == 2  # one graph on each side of the break
    pruned = {fqn for r in be.reports for g in r.plan.groups if g.id in r.plan.keep for fqn, _ in g.params}
    assert not any(f.startswith(("conv1.", "bn1.")) for f in pruned)  # conv1's channels cross the break
    assert any(f.startswith("conv3.") for f in pruned)  # groups inside one graph are still pruned
    first = be.reports[0]
    reasons = {c.pinned for c in first.analysis.classes if any(p.startswith("conv1.") for p, _ in c.params)}
    assert any("output" in (r or "") for r in reasons)
    # the masked original (each graph's removed slices zeroed, by FQN) equals the compiled model
    masked = copy.deepcopy(m)
    for gm, r in zip(be.graphs, be.reports):
        zeroed = dict(fxprune.mask(gm, r.plan).named_parameters())
        masked.load_state_dict(zeroed, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(y, masked(x), rtol=1e-4, atol=1e-5)


def test_fullgraph_with_a_break_is_a_clear_error():
    m = _model(BrokenNet)
    fast = torch.compile(m, backend=fxprune.backend(ratio=0.5, then="eager"), fullgraph=True)
    with pytest.raises(Exception, match="graph_break|graph break"):
        fast(torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"then": "tvm"}, "then='tvm' is not one of"),
        ({"ratoi": 0.5}, "ratoi"),
        ({"ratio": 1.5}, r"ratio must be in \[0, 1\)"),
    ],
)
def test_bad_options_say_what_is_wrong(options, match):
    fast = torch.compile(_model(), backend="fxprune", options=options)
    with pytest.raises(Exception, match=match):
        fast(torch.randn(2, 3, 16, 16))


def test_factory_rejects_bad_then_at_once():
    with pytest.raises(ValueError, match="then='jit'"):
        fxprune.backend(then="jit")


_MODELS = {
    "resnet18": (1, 3, 64, 64),
    "resnet50": (1, 3, 64, 64),
    "mobilenet_v3_large": (1, 3, 64, 64),
    "vit_b_16": (1, 3, 224, 224),
}


@pytest.mark.zoo
@pytest.mark.parametrize("then", ["eager", "inductor"])
@pytest.mark.parametrize("name", list(_MODELS))
def test_backend_equals_compile_on_torchvision(name, then):
    torch.manual_seed(0)
    m = randomize_(getattr(torchvision.models, name)()).eval()
    x = torch.randn(*_MODELS[name])
    ref = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    fast = torch.compile(m, backend="fxprune", options={"ratio": 0.5, "exact": True, "then": then})
    with torch.no_grad():
        y, want = fast(x), ref(x)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    report = fxprune.dynamo.reports()[-1]
    assert report.params_after == fxprune.count_params(ref) < report.params_before


class TinyViTBlock(nn.Module):
    """nn.MultiheadAttention: Dynamo keeps F.multi_head_attention_forward as one call."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        y = self.norm(x)
        y = x + self.attn(y, y, y, need_weights=False)[0]
        return self.fc(y.mean(1))


@pytest.mark.parametrize("heads", ["heads", "head_dim"])
def test_multihead_attention_through_dynamo_equals_compile(heads):
    m, x = _model(TinyViTBlock), torch.randn(2, 6, 32)
    ref = fxprune.compile(m, 0.5, example_inputs=x, exact=True, heads=heads)
    be = fxprune.backend(ratio=0.5, exact=True, heads=heads, then="eager")
    with torch.no_grad():
        y = torch.compile(m, backend=be)(x)
        want = ref(x)
        masked = fxprune.mask(be.graphs[0], be.reports[0].plan)(x)[0]
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, masked, rtol=1e-4, atol=1e-5)
    assert be.reports[0].params_after == fxprune.count_params(ref) < be.reports[0].params_before


def test_new_options_or_new_weights_are_decided_again():
    m, x = _model(), torch.randn(2, 3, 16, 16)
    be = fxprune.backend(then="eager")
    with torch.no_grad():
        torch.compile(m, backend=be, options={"ratio": 0.25})(x)
        torch._dynamo.reset()
        torch.compile(m, backend=be, options={"ratio": 0.75})(x)  # same tensors, other options
        assert be.reports[1].params_after < be.reports[0].params_after
        m.conv3.weight.mul_(-3.0).add_(torch.randn_like(m.conv3.weight))  # the weights move on
        torch._dynamo.reset()
        y = torch.compile(m, backend=be, options={"ratio": 0.75})(x)  # decided again, not refused
    ref = fxprune.compile(m, 0.75, example_inputs=x)
    torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-5)
