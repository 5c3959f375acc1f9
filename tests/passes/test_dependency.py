"""passes/dependency.py: the analysis pass on its own (no plan, no rewrite). Each test builds a
tiny module, runs ``analyze`` on its symbolic_trace, and asserts on the classes it finds: which
parameter dims share a class, which layouts are products or concatenations, and what is pinned
and why. The numerics of pruning through each op are in test_rules.py and test_ops.py."""

from __future__ import annotations

import pytest
import torch
from fxprune.passes.dependency import Analysis, analyze
from fxprune.passes.keys import ANALYSIS, DIMS
from torch import fx, nn

pytestmark = pytest.mark.usefixtures("one_thread")


def _analysis(module: nn.Module, *x: torch.Tensor) -> tuple[fx.GraphModule, Analysis]:
    gm = analyze(fx.symbolic_trace(module), x)
    return gm, gm.meta[ANALYSIS]


def _cls(a: Analysis, fqn: str, dim: int) -> int:
    lay = a.param_layouts[fqn][dim]
    assert lay.kind == "leaf", lay
    return lay.cls


def _info(a: Analysis, c: int):
    (info,) = [k for k in a.classes if k.id == c]
    return info


@fx.wrap
def _mystery(x: torch.Tensor) -> torch.Tensor:
    """An op no rule describes (a wrapped function: one call_function node under fx)."""
    return x.roll(1, dims=1)


def test_residual_add_ties_both_branches_into_one_class() -> None:
    """a(x) + b(x): the add unifies both convs' output channels; each conv's input dim is a
    different class from its output (sch(f-) != sch(f+)), pinned by the graph input."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.a(x) + self.b(x))

    gm, a = _analysis(M(), torch.randn(2, 3, 6, 6))
    out = _cls(a, "a.weight", 0)
    assert out == _cls(a, "b.weight", 0) == _cls(a, "a.bias", 0) == _cls(a, "c.weight", 1)
    assert _info(a, out).prunable and _info(a, out).size == 8
    inp = _cls(a, "a.weight", 1)
    assert inp != out and inp == _cls(a, "b.weight", 1)
    assert _info(a, inp).pinned is not None and "graph input" in _info(a, inp).pinned
    assert [c.size for c in a.prunable()] == [8]  # c's output is the graph output: pinned
    assert all(DIMS in n.meta for n in gm.graph.nodes if n.op not in ("output",))


def test_depthwise_conv_ties_its_input_to_its_output() -> None:
    """groups == channels: the depthwise conv's out channels are its in channels."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pw, self.dw, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.dw(self.pw(x)).relu())

    _, a = _analysis(M(), torch.randn(1, 3, 5, 5))
    assert _cls(a, "pw.weight", 0) == _cls(a, "dw.weight", 0) == _cls(a, "out.weight", 1)


def test_cat_gives_a_concatenation_of_both_classes() -> None:
    """fc reads cat(a(x), b(x)): its input dim is a concatenation [a | b], two prunable classes."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(4, 6), nn.Linear(4, 10), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cat([self.a(x), self.b(x)], dim=1))

    _, a = _analysis(M(), torch.randn(2, 4))
    lay = a.param_layouts["fc.weight"][1]
    assert lay.kind == "cat" and [p.size for p in lay.parts] == [6, 10]
    assert [p.cls for p in lay.parts] == [_cls(a, "a.weight", 0), _cls(a, "b.weight", 0)]
    assert sorted(c.size for c in a.prunable()) == [6, 10]


def test_reshape_into_heads_refines_the_class_into_a_product() -> None:
    """A (B, 12) -> (B, 3, 4) reshape splits the 12 features into heads x head_dim: the
    linear's output dim becomes a row-major product of two classes."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(5, 12), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.fc(x).reshape(x.shape[0], 3, 4)).sum(1)

    _, a = _analysis(M(), torch.randn(2, 5))
    lay = a.param_layouts["fc.weight"][0]
    assert lay.kind == "prod" and [p.size for p in lay.parts] == [3, 4]
    assert lay.parts[1].cls == _cls(a, "out.weight", 1)


def test_an_op_without_a_rule_pins_what_it_touches_and_is_reported() -> None:
    """Never a guess: the class through the unknown op keeps every index, the report names the
    node, and a class elsewhere stays prunable."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(_mystery(self.a(x))).relu())

    _, a = _analysis(M(), torch.randn(3, 4))
    (u,) = a.unsupported
    assert u.node == "_mystery" and "_mystery" in u.message() and "register_rule" in u.message()
    assert not _info(a, _cls(a, "a.weight", 0)).prunable
    assert _info(a, _cls(a, "b.weight", 0)).prunable  # b's output never meets the unknown op


def test_analyze_without_shapes_asks_for_example_inputs() -> None:
    with pytest.raises(ValueError, match="pass example_inputs"):
        analyze(fx.symbolic_trace(nn.Linear(2, 2)))
