"""Depth pruning: scores, plans, targets and joint mode on top of passes/blocks.py (block
detection and removal are tested in tests/passes/test_blocks.py).

Every removal is checked numerically: the model with the branch output zeroed at its add must
equal the model with the block removed (and width pruning on top keeps masked-equals-pruned)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from fxprune.passes.blocks import find_blocks, remove_blocks, zero_blocks
from models_blocks import Net, net
from torch import nn

import fxprune
from fxprune.depth import block_scores, linear_cka
from fxprune.testing import randomize_
from fxprune.verify import relative_error

pytestmark = pytest.mark.usefixtures("one_thread")


X = torch.randn(2, 3, 8, 8)
DATA = [torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)]
LABELLED = [(b, torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(i))) for i, b in enumerate(DATA)]


def _gm(model: nn.Module, x: torch.Tensor = X) -> torch.fx.GraphModule:
    return fxprune.analyze(model, x)


def test_compile_depth_count_scores_and_verifies() -> None:
    model = net()
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    small = fxprune.compile(model, example_inputs=X, depth=2, data=DATA, verify=True)
    rep = small.meta["fxprune.report"]
    assert rep.verification.passed and rep.verification.max_rel_err == 0.0
    assert len(rep.plan.removed_blocks) == 2 and len(rep.blocks) == 2
    assert rep.params_after < rep.params_before and rep.macs_after < rep.macs_before
    assert "2 blocks removed (score: cka)" in str(rep) and "<table>" in rep._repr_html_()
    # the lowest CKA scores were removed
    scores = block_scores(_gm(model), DATA)
    assert sorted(rep.plan.removed_blocks) == sorted(sorted(scores, key=scores.get)[:2])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snap.items())  # model untouched


def test_depth_fraction_and_named_blocks() -> None:
    model = net()
    small = fxprune.compile(model, example_inputs=X, depth=0.34, data=DATA)
    assert len(small.meta["fxprune.report"].plan.removed_blocks) == 1
    named = fxprune.compile(model, example_inputs=X, depth=["plain", "main"], verify=True)
    rep = named.meta["fxprune.report"]
    assert [r[0].split("/")[0] for r in rep.blocks] == ["plain", "main"] and rep.verification.passed
    one = fxprune.compile(model, example_inputs=X, depth="scaled")  # one id as a string
    assert one.meta["fxprune.report"].plan.removed_blocks == ("scaled/add_1",)


def test_depth_plus_width_masked_equals_pruned_and_plan_round_trip() -> None:
    model = net()
    small = fxprune.compile(model, 0.5, example_inputs=X, depth=["plain", "dropped"], round_to=2)
    plan = small.meta["fxprune.report"].plan
    assert plan.keep, "width pruning applied on top"
    res = fxprune.verify(model, small, X)
    assert res.passed and res.max_rel_err < 1e-5, res
    # JSON round trip; the plan applies to the full model's analysis (blocks first, then width)
    back = fxprune.Plan.from_json(plan.to_json())
    assert back == plan and back.removed_blocks == plan.removed_blocks
    again = fxprune.rewrite(_gm(model), back)
    with torch.no_grad():
        assert relative_error(again(X), small(X)) == 0.0
    # an older plan without the field still loads
    d = json.loads(plan.to_json())
    del d["removed_blocks"]
    assert fxprune.Plan.from_json(json.dumps(d)).removed_blocks == ()


def test_depth_count_with_overall_speedup_target() -> None:
    """depth=k plus speedup=: the width part makes up the rest, counted against the original."""
    torch.manual_seed(0)
    model = randomize_(Net(32).eval())
    small = fxprune.compile(model, example_inputs=X, depth=1, data=DATA, speedup=1.5, verify=True)
    rep = small.meta["fxprune.report"]
    assert len(rep.plan.removed_blocks) == 1 and rep.plan.keep
    assert rep.macs_before / rep.macs_after == pytest.approx(1.5, rel=0.03)
    assert rep.plan.meta["speedup"] == pytest.approx(rep.macs_before / rep.macs_after)
    assert rep.verification.passed


def test_staged_api_make_plan_on_reduced_graph() -> None:
    gm = _gm(net())
    reduced = fxprune.remove_blocks(gm, ["scaled"])
    plan = fxprune.make_plan(reduced, 0.5)
    assert plan.removed_blocks == ("scaled/add_1",)
    a, b = fxprune.rewrite(reduced, plan), fxprune.rewrite(gm, plan)
    with torch.no_grad():
        assert relative_error(a(X), b(X)) == 0.0
    masked = fxprune.mask(gm, plan)
    with torch.no_grad():
        assert relative_error(a(X), masked(X)) < 1e-5
    # a plan without the block applied to the reduced graph: clear error
    with pytest.raises(ValueError, match="already has blocks"):
        fxprune.rewrite(reduced, fxprune.Plan(0.0, (), {}, removed_blocks=("plain",)))


def test_taylor_estimates_loss_increase_for_a_small_branch() -> None:
    """With a tiny layer scale the removal is a small perturbation: the first-order estimate
    matches the measured loss increase closely."""
    model = net()
    with torch.no_grad():
        model.scaled.gamma.fill_(1e-3)
    gm = _gm(model)
    scaled = [b for b in find_blocks(gm, kinds=("residual",)) if "scaled.gamma" in b.params]
    loss = block_scores(gm, LABELLED, score="loss", loss_fn=F.cross_entropy, blocks=scaled)
    taylor = block_scores(gm, LABELLED, score="taylor", loss_fn=F.cross_entropy, blocks=scaled)
    (k,) = loss
    assert abs(loss[k]) > 0 and abs(taylor[k] - loss[k]) <= 0.05 * abs(loss[k]), (loss, taylor)
    cka = block_scores(gm, DATA, score="cka", blocks=scaled)
    assert 0 <= cka[k] < 1e-3  # removing a near-zero branch leaves the outputs almost equal


def test_linear_cka_properties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(32, 10, generator=g)) < 0.6
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear_cka(x[:1], x[:1])


def test_joint_mode_candidates_at_same_macs() -> None:
    torch.manual_seed(0)
    model = randomize_(Net(32).eval())  # wide enough for the width search to land near 1.5x
    small = fxprune.compile(model, example_inputs=X, speedup=1.5, mode="joint", data=DATA, verify=True)
    rep = small.meta["fxprune.report"]
    names = [c["candidate"] for c in rep.candidates]
    assert names[:2] == ["width", "depth"] and names[2].startswith("mixed")
    built = [c for c in rep.candidates if c["cka"] is not None]
    chosen = [c for c in rep.candidates if c["selected"]]
    assert len(chosen) == 1 and chosen[0]["cka"] == max(c["cka"] for c in built)
    for c in built:
        assert c["speedup"] >= 1.5 * 0.97, c
    assert rep.verification.passed
    assert "joint candidates" in str(rep)
    assert rep.macs_before / rep.macs_after == pytest.approx(chosen[0]["speedup"])


def test_mode_depth_reaches_target() -> None:
    model = net()
    small = fxprune.compile(model, example_inputs=X, speedup=1.2, mode="depth", data=DATA, verify=True)
    rep = small.meta["fxprune.report"]
    assert rep.macs_before / rep.macs_after >= 1.2 * 0.99 and rep.verification.passed
    assert not rep.plan.keep  # depth only


def test_bad_input_errors() -> None:
    model = net()
    with pytest.raises(ValueError, match="only 3 removable residual blocks"):
        fxprune.compile(model, example_inputs=X, depth=4, data=DATA)
    with pytest.raises(ValueError, match="needs data"):
        fxprune.compile(model, example_inputs=X, depth=1)
    with pytest.raises(ValueError, match="not a removable block"):
        fxprune.compile(model, example_inputs=X, depth=["nope"])
    with pytest.raises(ValueError, match="speedup"):
        fxprune.compile(model, example_inputs=X, mode="joint", data=DATA)
    with pytest.raises(ValueError, match="depth_score"):
        fxprune.compile(model, example_inputs=X, depth=1, data=DATA, depth_score="magic")
    with pytest.raises(ValueError, match="mode must be"):
        fxprune.compile(model, example_inputs=X, mode="deep")
    with pytest.raises(ValueError, match="labelled batches"):
        fxprune.compile(model, example_inputs=X, depth=1, data=DATA, depth_score="loss")
    with pytest.raises(TypeError, match="depth must be"):
        fxprune.compile(model, example_inputs=X, depth=object(), data=DATA)
    with pytest.raises(ValueError, match="whole number"):
        fxprune.compile(model, example_inputs=X, depth=1.5, data=DATA)

    class NoRes(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.relu()

    with pytest.raises(ValueError, match="no removable residual block"):
        fxprune.compile(NoRes(), example_inputs=X, depth=1, data=DATA)


def test_resnet18_depth_and_width_small_input() -> None:
    torch.manual_seed(0)
    model = randomize_(torchvision.models.resnet18().eval())
    x = torch.randn(2, 3, 32, 32)
    base = copy.deepcopy(model)
    gm = _gm(model, x)
    assert len(find_blocks(gm, kinds=("residual",))) == 5  # identity-shortcut BasicBlocks
    small = fxprune.compile(model, 0.3, example_inputs=x, depth=2, data=[torch.randn(4, 3, 32, 32)], verify=True)
    rep = small.meta["fxprune.report"]
    assert rep.verification.passed, rep.verification
    assert rep.params_after < rep.params_before
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))


# ------------------------------------------------------------------------------------------
# torchvision zoo (slow: pytest -m zoo)
# ------------------------------------------------------------------------------------------
def _zoo(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialized heads would hide every difference
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return randomize_(model), torch.randn(2, 3, 224 if name.startswith("vit") else 64, 224 if name.startswith("vit") else 64)


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "vit_b_16", "convnext_tiny"])
def test_zoo_depth_masked_equals_pruned(name: str) -> None:
    model, x = _zoo(name)
    gm = _gm(model, x)
    pool = find_blocks(gm, kinds=("residual",))
    assert pool
    ids = [b.id for b in pool[::2]]  # every other residual block
    small = remove_blocks(gm, ids)
    masked = zero_blocks(gm, ids)
    with torch.no_grad():
        assert relative_error(small(x), masked(x)) <= 1e-6
    assert fxprune.count_params(small) < fxprune.count_params(gm)
    both = fxprune.compile(model, 0.3, example_inputs=x, depth=ids, verify=True)
    rep = both.meta["fxprune.report"]
    assert rep.verification.passed, rep.verification
    assert rep.params_after < rep.params_before
