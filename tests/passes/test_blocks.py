"""passes/blocks.py: residual and parallel branches found from graph semantics (an add whose
operand is a branch of the other), removed (``y = x + f(x)`` becomes ``y = x``) and zeroed at
the add. Every removal is checked numerically: the model with the branch output zeroed must equal
the model with the block removed. Depth pruning on top of it is tests/test_depth.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fxprune.passes.blocks import find_blocks, remove_blocks, zero_blocks
from models_blocks import net
from torch import nn

import fxprune
from fxprune.verify import relative_error

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(2, 3, 8, 8)


def _gm(model: nn.Module, x: torch.Tensor = X) -> torch.fx.GraphModule:
    return fxprune.analyze(model, x)


def test_finds_residual_and_parallel_branches_by_semantics() -> None:
    blocks = find_blocks(_gm(net()))
    kinds = {b.prefix: b.kind for b in blocks}
    assert kinds["plain"] == kinds["scaled"] == kinds["dropped"] == "residual"
    # the layer-scale parameter and the drop-path are part of their branches
    scaled = next(b for b in blocks if b.prefix == "scaled")
    assert "scaled.gamma" in scaled.params and "scaled.body.0.weight" in scaled.params
    dropped = next(b for b in blocks if b.prefix == "dropped")
    assert any("stochastic_depth" in n for n in dropped.nodes)
    # both sides of left(x) + right(x) can go, and so can each side of proj(x) + main(x)
    assert {b.prefix for b in blocks if b.kind == "parallel"} == {"left", "right", "proj", "main"}
    assert len({b.id for b in blocks}) == len(blocks)


def test_residual_pool_excludes_parallel() -> None:
    blocks = find_blocks(_gm(net()), kinds=("residual",))
    assert [b.kind for b in blocks] == ["residual"] * 3


@pytest.mark.parametrize("which", [0, 1, 2, 3, 5])
def test_removal_equals_zeroed_branch(which: int) -> None:
    """Masked (branch output zeroed at the add) equals removed, for each kind of branch."""
    model = net()
    gm = _gm(model)
    b = find_blocks(gm)[which]
    small = remove_blocks(gm, [b.id])
    masked = zero_blocks(gm, [b.id])
    with torch.no_grad():
        assert relative_error(small(X), masked(X)) == 0.0
        assert relative_error(small(X), gm(X)) > 1e-3  # the block did something
    params = dict(small.named_parameters())
    assert not any(p in params for p in b.params)
    assert fxprune.count_params(small) == fxprune.count_params(gm) - b.numel(gm)
    assert small.meta["fxprune.removed_blocks"] == (b.id,)


def test_both_sides_of_one_add_cannot_both_go() -> None:
    gm = _gm(net())
    left, right = [b.id for b in find_blocks(gm) if b.prefix in ("left", "right")]
    with pytest.raises(ValueError, match="overlap"):
        remove_blocks(gm, [left, right])


def test_block_inside_a_block_is_an_overlap() -> None:
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return x + (h + self.b(h))

    gm = _gm(Nested(), torch.randn(1, 4, 4, 4))
    blocks = find_blocks(gm, kinds=("residual",))
    assert len(blocks) == 2
    with pytest.raises(ValueError, match="overlap"):
        remove_blocks(gm, [b.id for b in blocks])


def test_not_blocks_constants_inplace_and_broadcast() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Parameter(torch.randn(1, 4, 4, 4))
            self.c, self.d = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.pos  # an added constant reads no activation
            y = x + self.c(x.relu_())  # the branch writes into x in place
            z = self.d(y)
            return z + y  # removing y would change the shape (broadcast)

    gm = _gm(M(), torch.randn(2, 4, 4, 4))
    assert [b.prefix for b in find_blocks(gm)] == ["d"]  # z + y: z may go (y has z + y's shape)


def test_inplace_consumer_of_the_add_keeps_the_block() -> None:
    class PostRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(x + self.c(x), inplace=True)  # without c, relu_ would write into x...
            return y + x  # ...which is read here

    x = torch.randn(2, 4, 4, 4)
    gm = _gm(PostRelu(), x)
    (b,) = find_blocks(gm)
    assert b.add == "add_1" and b.kind == "residual"  # only y + x: y's branch is relu(x + c(x))
    with torch.no_grad():
        assert relative_error(remove_blocks(gm, [b.id])(x), zero_blocks(gm, [b.id])(x)) == 0.0


def test_prefix_names_every_block_under_it() -> None:
    class Layer(nn.Module):  # a transformer-style layer: two residual branches
        def __init__(self) -> None:
            super().__init__()
            self.f, self.g = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.f(x)
            return x + self.g(x)

    gm = _gm(nn.Sequential(Layer(), Layer()), torch.randn(2, 4, 4, 4))
    assert len(find_blocks(gm)) == 4
    small = remove_blocks(gm, ["1"])
    assert len(small.meta["fxprune.removed_blocks"]) == 2 and not any(k.startswith("1.") for k in small.state_dict())
