"""Scenarios of the reference tool's (Torch-Pruning's) own test suite that fxprune had gaps
in: tensors the forward never reads, a user's own layer with a registered rule, a
GraphModule the user traced, and keyword (dict) example inputs."""

import tempfile

import pytest
import torch
import torch.nn.functional as F
import torchvision
from fxprune.passes.rules import Ctx, register_module, register_rule
from torch import fx, nn

import fxprune
from fxprune.testing import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


# -- tensors the forward never reads ------------------------------------------------------------
class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.unused_param = nn.Parameter(torch.randn(16))
        self.register_buffer("unused_buffer", torch.arange(4.0))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.unused_head = nn.Sequential(nn.Conv2d(16, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        return self.conv2(F.relu(self.bn(self.conv1(x))))


def test_unused_tensors_and_submodules_are_kept():
    model = randomize_(WithUnused()).eval()
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert set(small.state_dict()) == set(model.state_dict())
    assert small.conv1.out_channels == 8  # it did prune
    torch.testing.assert_close(small.unused_param, model.unused_param)  # kept whole
    assert small.unused_param is not model.unused_param  # a copy: the user's model is untouched
    assert "scratch" not in small.state_dict() and hasattr(small, "scratch")  # still non-persistent
    assert isinstance(small.unused_head[1], nn.BatchNorm2d)
    assert fxprune.verify(model, small, x).passed


@pytest.mark.parametrize("build", [torchvision.models.googlenet, torchvision.models.inception_v3])
def test_aux_heads_keep_their_keys_through_save_and_load(build):
    torch.manual_seed(0)
    model = build(init_weights=True, aux_logits=True).eval()
    x = torch.randn(1, 3, 96 if build is torchvision.models.googlenet else 75, 96 if build is torchvision.models.googlenet else 75)
    small = fxprune.compile(model, 0.3, example_inputs=x, exact=True)
    assert set(small.state_dict()) == set(model.state_dict())
    assert fxprune.count_params(small) < fxprune.count_params(model)
    with tempfile.TemporaryDirectory() as d:
        fxprune.save(small, d, example_inputs=x)
        again = fxprune.load(d, build(init_weights=True, aux_logits=True))
    sd, sd2 = small.state_dict(), again.state_dict()
    assert set(sd) == set(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    torch.testing.assert_close(again(x), small(x))


# -- a user's own layer, reached through its registered module rule ----------------------------
class ChannelScale(nn.Module):
    """A user's layer: one learned scale per channel (traced through, it would be a mul by a
    get_attr; as a leaf, its registered rule ties the scale to the channels)."""

    def __init__(self, c):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


@register_rule("test_channel_scale")
def _channel_scale(ctx: Ctx, input, scale):
    ctx.unify(scale.axes[0], input.axes[1])
    return input.axes


@register_module("test_channel_scale", ChannelScale)
def _channel_scale_module(ctx: Ctx, mod, fqn, input):
    return {"input": input, "scale": ctx.param(f"{fqn}.scale")}


class UsesScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = ChannelScale(16)
        self.conv2 = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.scale(self.conv1(x))))


def test_registered_user_layer_is_a_leaf_and_pruned_through_its_rule():
    model = randomize_(UsesScale()).eval()
    x = torch.randn(2, 3, 8, 8)
    gm = fxprune.analyze(model, x)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv1", "scale", "conv2"]
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert isinstance(small.scale, ChannelScale) and small.scale.scale.shape == (8,)
    assert small.conv1.out_channels == 8
    assert fxprune.verify(model, small, x).passed
    torch.testing.assert_close(small(torch.randn(5, 3, 12, 12)).shape, torch.Size([5, 4, 12, 12]))


def test_user_traced_graph_module_keeps_its_leaves():
    class KeepLayer4(fx.Tracer):
        def is_leaf_module(self, m, name):
            return name == "layer4" or super().is_leaf_module(m, name)

    model = randomize_(torchvision.models.resnet18()).eval()
    gm = fx.GraphModule(model, KeepLayer4().trace(model))
    x = torch.randn(1, 3, 64, 64)
    small = fxprune.compile(gm, 0.5, example_inputs=x, exact=True)
    assert "layer4" in [n.target for n in small.graph.nodes if n.op == "call_module"]
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"].count("layer4") == 1  # untouched
    assert fxprune.count_params(small) < fxprune.count_params(gm)
    assert fxprune.verify(gm, small, x).passed


# -- keyword example inputs ---------------------------------------------------------------------
class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(5, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, image, extra, gain: float = 1.0):
        return self.head(torch.relu(self.a(image) + self.b(extra))) * gain


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_dict_example_inputs(capture):
    model = randomize_(TwoInputs()).eval()
    kw = {"extra": torch.randn(2, 5, 8, 8), "image": torch.randn(2, 3, 8, 8)}
    small = fxprune.compile(model, 0.5, example_inputs=kw, exact=True, capture=capture)
    assert small.a.out_channels == 8 if capture == "fx" else fxprune.count_params(small) < fxprune.count_params(model)
    assert fxprune.verify(model, small, kw).passed
    # positional and keyword inputs mix; a skipped parameter takes its default
    small2 = fxprune.compile(model, 0.5, example_inputs=(kw["image"],), example_kwargs={"extra": kw["extra"]}, exact=True)
    assert fxprune.verify(model, small2, (kw["image"], kw["extra"])).passed


def test_dict_example_inputs_bad_names_are_named():
    model = TwoInputs()
    with pytest.raises(TypeError, match="image"):
        fxprune.compile(model, 0.5, example_inputs={"imgae": torch.randn(1, 3, 8, 8), "extra": torch.randn(1, 5, 8, 8)})
    with pytest.raises(ValueError, match="extra"):
        fxprune.compile(model, 0.5, example_inputs={"extra": torch.randn(1, 5, 8, 8)},
                        example_kwargs={"extra": torch.randn(1, 5, 8, 8)})  # fmt: skip


def test_a_registered_rule_that_cannot_fire_warns():
    model = randomize_(UsesScale()).eval()
    with pytest.warns(UserWarning, match="ChannelScale never fired"):
        fxprune.analyze(model, torch.randn(1, 3, 8, 8), capture="export")


# -- chosen indices in one call -----------------------------------------------------------------
def test_chosen_indices_equal_the_hand_built_plan():
    model = randomize_(torchvision.models.resnet18()).eval()
    x = torch.randn(1, 3, 32, 32)
    small = fxprune.compile(model, example_inputs=x, remove={"layer2.0.conv1": [2, 6, 9], "layer1.0.conv2": [0, 5]})
    # the same by hand: analyze, find each layer's output-channel group, keep the rest
    gm = fxprune.analyze(model, x)
    analysis = gm.meta["fxprune.analysis"]
    base = fxprune.make_plan(gm, 0.0)
    keep = dict(base.keep)
    for fqn, drop in (("layer2.0.conv1.weight", {2, 6, 9}), ("layer1.0.conv2.weight", {0, 5})):
        lay = analysis.param_layouts[fqn][0]
        keep[lay.cls] = tuple(i for i in range(lay.size) if i not in drop)
    by_hand = fxprune.rewrite(gm, fxprune.Plan(0.0, base.groups, keep))
    a, b = small.state_dict(), by_hand.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # coupled slices went too: layer1's residual stream feeds layer1.*.conv1 and layer2's downsample
    m = small.get_submodule
    assert m("layer1.1.conv1").in_channels == 62 and m("layer2.0.downsample.0").in_channels == 62
    assert m("layer2.0.conv1").out_channels == m("layer2.0.bn1").num_features == 125
    kept = [i for i in range(128) if i not in (2, 6, 9)]
    torch.testing.assert_close(m("layer2.0.conv1").weight, model.layer2[0].conv1.weight[kept][:, [i for i in range(64) if i not in (0, 5)]])
    assert fxprune.verify(model, small, x).passed
    # with a ratio, the other groups are pruned as usual and the chosen group follows the choice
    both = fxprune.compile(model, 0.5, example_inputs=x, remove={"layer2.0.conv1": [2, 6, 9]})
    assert both.get_submodule("layer2.0.conv1").out_channels == 125
    assert both.get_submodule("layer3.0.conv1").out_channels == 128


def test_chosen_indices_bad_input_is_named():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(fxprune.PlanError, match="same group"):
        fxprune.compile(model, example_inputs=x, remove={"layer1.0.conv2": [0], "layer1.1.conv2": [1]})
    with pytest.raises(fxprune.PlanError, match="graph output"):
        fxprune.compile(model, example_inputs=x, remove={"fc": [0]})
    with pytest.raises(fxprune.PlanError, match=r"\[0, 64\)"):
        fxprune.compile(model, example_inputs=x, remove={"layer1.0.conv1": [64]})
    with pytest.raises(fxprune.PlanError, match="no module"):
        fxprune.compile(model, example_inputs=x, remove={"layer9.conv": [1]})


# -- isomorphic ranking ---------------------------------------------------------------------
def test_isomorphic_ranking_ranks_within_groups_of_one_structure():
    import timm

    model = randomize_(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4)).eval()
    x = torch.randn(1, 3, 32, 32)
    gm = fxprune.analyze(model, x)
    analysis = gm.meta["fxprune.analysis"]
    from fxprune.plan import signatures

    sigs = signatures(gm, analysis)
    mlp = [c.id for c in analysis.prunable() if ("blocks.0.mlp.fc1.weight", 0) in c.params]
    (mlp0,) = mlp
    same = [cid for cid, s in sigs.items() if s == sigs[mlp0]]
    assert len(same) == 4  # the MLP hidden units of the 4 blocks are one kind
    # scores that make block 0's MLP the weakest: plain global ranking empties it first,
    # isomorphic ranking takes the same share of every kind, and within the MLP kind block 0 loses most
    scores = {c.id: torch.rand(c.size, generator=torch.Generator().manual_seed(c.id)) + 1.0 for c in analysis.prunable()}
    scores[mlp0] = scores[mlp0] - 1.0
    iso = fxprune.make_plan(gm, 0.1, scores, global_ranking="isomorphic")
    glob = fxprune.make_plan(gm, 0.1, scores, global_ranking=True)
    total = sum(analysis.classes[cid].size for cid in same)
    assert sum(iso.removed(cid) for cid in same) == pytest.approx(0.1 * total, abs=len(same))  # the kind loses 10%
    assert iso.removed(mlp0) == max(iso.removed(cid) for cid in same)
    assert glob.removed(mlp0) > iso.removed(mlp0)  # plain global ranking takes more from the weak layer
    small = fxprune.rewrite(gm, iso)
    torch.testing.assert_close(small(x).shape, model(x).shape)
    with pytest.raises(ValueError, match="isomorphic"):
        fxprune.make_plan(gm, 0.3, global_ranking="iso")
