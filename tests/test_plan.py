"""Allocation: targets, global ranking, min_keep, per-module overrides, ignore."""

import pytest
import torch
import torchvision
from torch import nn

import fxprune
from fxprune.testing import randomize_


class _Net(nn.Module):
    """Three conv stages of different widths and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 32, 3, padding=1)
        self.out = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.mid(x))
        x = torch.relu(self.out(x))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 3, 8, 8)


def _gm(seed: int = 0) -> torch.fx.GraphModule:
    torch.manual_seed(seed)
    return fxprune.analyze(randomize_(_Net()), X)


def _kept(plan: fxprune.Plan) -> dict[str, int]:
    """Kept count per group, keyed by the first member's FQN."""
    return {g.params[0][0]: len(plan.keep.get(g.id, range(g.size))) for g in plan.groups}


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "vit_b_16"])
def test_speedup_target_lands_within_3_percent(name: str) -> None:
    """speedup=2.0: base MACs / pruned MACs, counted again independently on the result."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    out = fxprune.compile(model, speedup=2.0, example_inputs=x)
    got = fxprune.count_macs(model, (x,)) / fxprune.count_macs(out, (x,))
    assert abs(got - 2.0) <= 0.03 * 2.0, got


def test_params_target() -> None:
    gm = _gm()
    plan = fxprune.make_plan(gm, params=2.0)
    got = fxprune.count_params(gm) / fxprune.count_params(fxprune.rewrite(gm, plan))
    assert abs(got - 2.0) <= 0.1, got  # a tiny net: one index moves the count by several %


def test_global_ranking_learns_layer_sparsity_and_respects_min_keep() -> None:
    """Scores that make one layer weak: global ranking empties it down to min_keep, and
    never below, while uniform allocation removes the same fraction everywhere."""
    gm = _gm()
    scores = fxprune.magnitude(gm)
    analysis = gm.meta["fxprune.analysis"]
    weak = next(c.id for c in analysis.prunable() if c.params[0][0].startswith("mid."))
    scores = {c: (s * 0.01 if c == weak else s) for c, s in scores.items()}
    uniform = _kept(fxprune.make_plan(gm, 0.5, scores))
    assert uniform == {"stem.weight": 8, "mid.weight": 16, "out.weight": 32}
    for min_keep, floor in [(None, 4), (3, 3), (0.25, 8)]:  # default: 10% of 32 -> 4
        plan = fxprune.make_plan(gm, 0.5, scores, global_ranking=True, min_keep=min_keep)
        kept = _kept(plan)
        assert kept["mid.weight"] == floor, (min_keep, kept)
        assert all(n >= 1 for n in kept.values())
        assert sum(kept.values()) == 112 - 56  # half of all 112 candidate indices go


def test_min_keep_and_round_to_in_uniform_allocation() -> None:
    gm = _gm()
    assert _kept(fxprune.make_plan(gm, 0.9, min_keep=4)) == {"stem.weight": 4, "mid.weight": 4, "out.weight": 6}
    assert _kept(fxprune.make_plan(gm, 0.5, round_to=12)) == {"stem.weight": 12, "mid.weight": 24, "out.weight": 36}


def test_per_module_ratio_and_ignore() -> None:
    """An override sets the ratio of the channels a module produces; ignoring a module
    keeps every group it touches whole, so its input channels too."""
    gm = _gm()
    assert _kept(fxprune.make_plan(gm, 0.5, ratios={"mid": 0.75})) == {"stem.weight": 8, "mid.weight": 8, "out.weight": 32}
    assert _kept(fxprune.make_plan(gm, 0.5, ignore=["out"])) == {"stem.weight": 8, "mid.weight": 32, "out.weight": 64}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ratio": 0.5, "speedup": 2.0}, "give one of"),
        ({}, "give ratio="),
        ({"speedup": 0.5}, "speedup must be a number >= 1"),
        ({"ratio": 0.5, "min_keep": 0}, "min_keep must be"),
        ({"ratio": 0.5, "ratios": {"mid": 1.2}}, r"ratios\['mid'\] must be in \[0, 1\)"),
    ],
)
def test_bad_allocation_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fxprune.make_plan(_gm(), **kwargs)


def test_unreachable_target_says_why() -> None:
    with pytest.raises(fxprune.PlanError, match="out of reach"):
        fxprune.make_plan(_gm(), speedup=1000.0)
