"""Plotting helpers return matplotlib figures drawn from real analyses; the grouping matrix
and the widths are checked against what the analysis and the pruned model say. Also the
HTML renders of the report and the plan."""

from __future__ import annotations

import io

import pytest
import torch
import torchvision
from torch import nn

import fxprune
from fxprune import plots

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

X = torch.randn(1, 3, 32, 32)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return buf.getvalue()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def small(resnet):
    return fxprune.compile(resnet, 0.5, example_inputs=X)


def test_grouping_matrix_couples_the_residual_stream(resnet) -> None:
    names, m = plots.grouping_matrix_data(resnet, X)
    assert names[:3] == ["conv1", "bn1", "layer1.0.conv1"] and len(names) == len(set(names))
    assert (m == m.T).all()
    at = names.index
    # stage-1 residual stream: stem, both blocks' conv2 outputs and the next stage's inputs
    for a, b in [("conv1", "layer1.0.conv2"), ("layer1.0.conv2", "layer1.1.bn2"), ("layer1.1.conv2", "layer2.0.conv1")]:
        assert m[at(a), at(b)] == 1, (a, b)
    # a block's inner channels (conv1 -> bn1 -> conv2 input) are their own group
    assert m[at("layer1.0.conv1"), at("layer1.0.bn1")] == 1
    assert m[at("layer1.0.bn1"), at("layer1.1.bn1")] == 0
    assert m[at("layer1.0.bn1"), at("layer4.1.bn1")] == 0
    # the pinned head output is not a prunable group, but fc's input is the stage-4 stream
    _, mp = plots.grouping_matrix_data(resnet, X, prunable_only=True)
    assert mp[at("fc"), at("layer4.1.conv2")] == 1
    assert isinstance(plots.grouping_matrix(resnet, X), Figure)


def test_grouping_matrix_agrees_with_the_analysis_for_densenet() -> None:
    model = torchvision.models.densenet121()
    gm = fxprune.analyze(model, X)
    names, m = plots.grouping_matrix_data(gm, level="param")
    analysis = gm.meta["fxprune.analysis"]
    params = dict(gm.named_parameters())
    for c in analysis.classes:
        members = [p for p, _ in c.params if p in params]
        if c.data and c.size > 1 and len(members) > 1:
            i, j = names.index(members[0]), names.index(members[-1])
            assert m[i, j] == 1
    _png(plots.grouping_matrix(gm, title="DenseNet-121"))


def test_dependency_graph_and_histogram_draw(resnet) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    _png(plots.dependency_graph(net, torch.randn(1, 3, 8, 8)))
    norms = plots.group_norms(resnet, X)
    gm = fxprune.analyze(resnet, X)
    assert set(norms) == {c.id for c in gm.meta["fxprune.analysis"].prunable()}
    # the group norm of index 0 of the stem group, by hand over every member slice
    stem = next(c for c in gm.meta["fxprune.analysis"].prunable() if ("conv1.weight", 0) in c.params)
    params = dict(resnet.named_parameters())
    by_hand = sum(float(params[p].detach().select(d, 0).pow(2).sum()) for p, d in stem.params if p in params) ** 0.5
    assert norms[stem.id][0].item() == pytest.approx(by_hand, rel=1e-6)
    fig = plots.sparsity_histogram({"random init": resnet, "precomputed": norms}, X, bins=10)
    assert len(fig.axes[0].patches) == 20
    _png(fig)


def test_layer_widths_and_latency(resnet, small) -> None:
    rows = plots.layer_width_data(resnet, small)
    assert ("conv1", 64, 32) in rows and ("fc", 1000, 1000) in rows
    _png(plots.layer_widths(resnet, small))
    pts = plots.measure({"base": resnet, "0.5": small}, X, warmup=1, iters=2)
    assert pts[0][1] > pts[1][1] > 0  # fewer MACs after
    _png(plots.latency_vs_macs(pts))
    with pytest.raises(ValueError, match="example_inputs"):
        plots.latency_vs_macs({"base": resnet})


def test_report_and_plan_render_html(small) -> None:
    report = small.meta["fxprune.report"]
    html = report._repr_html_()
    assert "<table>" in html and "fxprune report" in html
    plan_html = report.plan._repr_html_()
    assert plan_html.count("<tr>") == len(report.plan.groups) + 1
    assert "fxprune plan" in plan_html and "conv1.weight[0]" in plan_html
