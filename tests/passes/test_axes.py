"""The union-find over axes: unification, refinement alignment, and pinning on conflict."""

import torch
from fxprune.passes.axes import Axes, Layout, kept_positions


def _sizes(ax: Axes, tree: tuple) -> list:
    kind, rest = tree
    if kind == "leaf":
        return [ax.size(rest)]
    return [kind, [_sizes(ax, t) for t in rest]]


def test_products_align_on_a_common_mixed_radix() -> None:
    """(6, 4) and (2, 12) over the same 24 indices refine to (2, 3, 4) on both sides."""
    ax = Axes()
    a, b = ax.new(24), ax.new(24)
    ax.split_product(a, [6, 4])
    ax.split_product(b, [2, 12])
    ax.unify(a, b)
    assert _sizes(ax, ax.tree(a)) == ["prod", [[2], [3], [4]]]
    assert ax.tree(a) == ax.tree(b)
    assert not ax.pins


def test_concats_align_on_common_boundaries() -> None:
    ax = Axes()
    a, b = ax.new(64), ax.new(64)
    ax.split_concat(a, [32, 32])
    ax.split_concat(b, [16, 48])
    ax.unify(a, b)
    assert _sizes(ax, ax.tree(a)) == ["cat", [[16], [16], [32]]]


def test_incompatible_products_pin_both_sides() -> None:
    """(2, 6) against (3, 4): no mixed radix refines both, so nothing under either may go."""
    ax = Axes()
    a, b = ax.new(12), ax.new(12)
    pa = ax.split_product(a, [2, 6])
    pb = ax.split_product(b, [3, 4])
    ax.unify(a, b)
    pinned = {ax.find(leaf) for p, _, _ in ax.pins for leaf in ax.leaves(p)}
    assert {ax.find(p) for p in pa + pb} <= pinned


def test_refinement_is_shared_by_the_whole_class() -> None:
    ax = Axes()
    a, b = ax.new(8), ax.new(8)
    ax.unify(a, b)
    ax.split_product(a, [2, 4])
    assert ax.tree(b) == ax.tree(a) and ax.tree(b)[0] == "prod"


def test_kept_positions_of_a_product_and_a_concat() -> None:
    """Position p of (g, c) survives when both coordinates survive; a concat offsets parts."""
    g, c, d = Layout("leaf", 2, cls=0), Layout("leaf", 3, cls=1), Layout("leaf", 2, cls=2)
    prod = Layout("prod", 6, parts=(g, c))
    keep = {1: torch.tensor([True, False, True])}
    assert kept_positions(prod, keep).tolist() == [0, 2, 3, 5]
    cat = Layout("cat", 8, parts=(prod, d))
    keep[2] = torch.tensor([False, True])
    assert kept_positions(cat, keep).tolist() == [0, 2, 3, 5, 7]
    assert kept_positions(cat, {}) is None
