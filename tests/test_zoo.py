"""torchvision CNN families: exact pruning at ratio 0.5 is proved masked-equals-pruned.

A fast subset runs by default; the whole list runs with ``pytest -m zoo``.
"""

import pytest
import torch
import torchvision

import fxprune
from fxprune.testing import randomize_
from fxprune.verify import relative_error
from modelzoo import torchvision_cnns

ALL = torchvision_cnns()  # benchmarks/modelzoo/models.py; benchmarks/ is on pytest's pythonpath
FAST = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "densenet121", "efficientnet_b0",
        "regnet_x_400mf", "squeezenet1_1", "googlenet", "mnasnet0_5", "convnext_tiny"]  # fmt: skip


def _read_params(gm: torch.fx.GraphModule) -> int:
    """Parameters the graph reads (through a module call or a get_attr), counted once."""
    seen: dict[int, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            for p in gm.get_submodule(n.target).parameters():
                seen[id(p)] = p.numel()
        elif n.op == "get_attr":
            t = gm
            for part in n.target.split("."):
                t = getattr(t, part)
            if isinstance(t, torch.nn.Parameter):
                seen[id(t)] = t.numel()
    return sum(seen.values())


def _run_and_check(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_(torchvision.models.get_model(name, weights=None).eval())
    x = torch.randn(1, 3, 299 if name == "inception_v3" else 64, 299 if name == "inception_v3" else 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    report = pruned.meta["fxprune.report"]
    result = fxprune.verify(model, pruned, x)
    assert result.passed, f"{name}: {result}"
    # another batch size than the example's: no size read from the example may be frozen in
    x3 = torch.randn(3, *x.shape[1:])
    masked = fxprune.mask(fxprune.analyze(model, x), report.plan)
    with torch.no_grad():
        err3 = relative_error(pruned(x3), masked(x3))
    assert err3 <= 1e-4, f"{name} at batch 3: max rel err {err3:.2e}"
    # parameters the forward reads: tensors it never reads (GoogLeNet's and Inception's
    # auxiliary heads, which run only in training) are kept whole, under their own keys
    read_before, read_after = _read_params(fxprune.analyze(model, x)), _read_params(pruned)
    assert read_after <= 0.6 * read_before, (name, read_before, read_after)
    assert set(pruned.state_dict()) == set(before), f"{name}: state_dict keys differ from the original's"
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert set(pruned.state_dict()) <= set(model.state_dict())
    pruned.graph.lint()


@pytest.mark.parametrize("name", FAST)
def test_fast_subset(name: str) -> None:
    """Representative families: residual, dense concat, depthwise + SE, channel shuffle, fire
    modules, inception branches, inverted residuals, layer-norm blocks."""
    _run_and_check(name)


@pytest.mark.zoo
@pytest.mark.parametrize("name", ALL)
def test_zoo(name: str) -> None:
    """Every torchvision CNN in the families of the core issue (vgg with batch norm)."""
    _run_and_check(name)
