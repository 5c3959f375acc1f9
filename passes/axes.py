"""Union-find over index spaces ("axes"), with refinement.

An *axis* is an ordered index space of size n. Two axes are *unified* when index i of one
must be removed exactly when index i of the other is. An axis may be *refined* into a
row-major product of smaller axes (a reshape into heads, a channel shuffle, a flatten of
C x H x W) or into a concatenation (cat, split, slicing). The refinement lives on the
union-find root, so every member of a class shares it; unifying two refined axes aligns
their refinements (refining further where the two disagree), and where no common
refinement exists both sides are pinned rather than guessed.

Private to the passes: only dense class ids and ``Layout`` trees leave this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import torch

__all__ = ["Axes", "Layout", "AxisError", "coords", "kept_positions"]

PROD = "prod"
CAT = "cat"


class AxisError(Exception):
    """Two axes cannot be related as a rule asked (a bug in a rule, or an odd graph)."""


@dataclass(frozen=True)
class Layout:
    """How the indices of one tensor dimension are built from classes.

    ``kind`` is ``"leaf"`` (one class, ``cls``), ``"prod"`` (row-major product of
    ``parts``) or ``"cat"`` (concatenation of ``parts``).

    Example:
        >>> Layout("prod", 12, parts=(Layout("leaf", 3, cls=0), Layout("leaf", 4, cls=1)))
        Layout(kind='prod', size=12, cls=None, parts=(...))
    """

    kind: str
    size: int
    cls: int | None = None
    parts: tuple["Layout", ...] = ()

    def classes(self) -> Iterator[int]:
        """Every class id that occurs in this layout (with repetition)."""
        if self.kind == "leaf":
            assert self.cls is not None
            yield self.cls
        for p in self.parts:
            yield from p.classes()

    def __repr__(self) -> str:  # compact: c3, (c1*c2), [c4|c5]
        if self.kind == "leaf":
            return f"c{self.cls}"
        sep = "*" if self.kind == PROD else "|"
        inner = sep.join(repr(p) for p in self.parts)
        return f"({inner})" if self.kind == PROD else f"[{inner}]"


class Axes:
    """Union-find over axes with product/concat refinement and pin/approx marks."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._refine: dict[int, tuple[str, tuple[int, ...]]] = {}
        #: (axis, reason, node name): classes under these axes keep every index.
        self.pins: list[tuple[int, str, str]] = []
        #: (axis, reason, node name): classes under these axes are prunable only approximately.
        self.approx: list[tuple[int, str, str]] = []
        self._node = ""  # node whose rule is running, for messages

    # -- basic union-find ------------------------------------------------------------------
    def new(self, n: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(int(n))
        return len(self._parent) - 1

    def size(self, a: int) -> int:
        return self._size[a]

    def find(self, a: int) -> int:
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def __len__(self) -> int:
        return len(self._parent)

    def refinement(self, a: int) -> tuple[str, tuple[int, ...]] | None:
        return self._refine.get(self.find(a))

    # -- marks -------------------------------------------------------------------------------
    def pin(self, a: int, reason: str) -> None:
        self.pins.append((a, reason, self._node))

    def mark_approx(self, a: int, reason: str) -> None:
        self.approx.append((a, reason, self._node))

    # -- relations ---------------------------------------------------------------------------
    def unify(self, a: int, b: int) -> None:
        """Index i of ``a`` goes together with index i of ``b``."""
        stack = [(a, b)]
        while stack:
            x, y = stack.pop()
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            if self._size[rx] != self._size[ry]:
                raise AxisError(f"cannot unify axes of sizes {self._size[rx]} and {self._size[ry]}")
            fx, fy = self._refine.get(rx), self._refine.get(ry)
            self._parent[ry] = rx
            if fy is None:
                continue
            del self._refine[ry]
            if fx is None:
                self._refine[rx] = fy
                continue
            pairs = self._align(rx, fx, fy)
            if pairs is None:
                # No common refinement: the relation cannot be recorded, so nothing under
                # either side may be pruned.
                why = f"no common refinement of {fx[0]}{self._sizes(fx[1])} and {fy[0]}{self._sizes(fy[1])}"
                self.pin(rx, why)
                for c in fy[1]:
                    self.pin(c, why)
                continue
            stack.extend(pairs)

    def product(self, parts: list[int]) -> int:
        """A new axis whose indices are the row-major product of ``parts``."""
        return self._compose(PROD, parts)

    def concat(self, parts: list[int]) -> int:
        """A new axis whose indices are ``parts`` one after another."""
        return self._compose(CAT, parts)

    def split_product(self, a: int, sizes: list[int]) -> list[int]:
        """Refine ``a`` into a row-major product of fresh axes of ``sizes``; returns them."""
        if math.prod(sizes) != self._size[a]:
            raise AxisError(f"cannot split an axis of size {self._size[a]} into product {sizes}")
        parts = [self.new(s) for s in sizes]
        self.unify(a, self.product(parts))
        return parts

    def split_concat(self, a: int, sizes: list[int]) -> list[int]:
        """Refine ``a`` into consecutive fresh axes of ``sizes``; returns them."""
        if sum(sizes) != self._size[a]:
            raise AxisError(f"cannot split an axis of size {self._size[a]} into pieces {sizes}")
        parts = [self.new(s) for s in sizes]
        self.unify(a, self.concat(parts))
        return parts

    # -- reading back ------------------------------------------------------------------------
    def tree(self, a: int) -> tuple:
        """``("leaf", root)`` or ``(kind, (subtree, ...))`` for axis ``a``."""
        r = self.find(a)
        f = self._refine.get(r)
        if f is None:
            return ("leaf", r)
        return (f[0], tuple(self.tree(c) for c in f[1]))

    def leaves(self, a: int) -> Iterator[int]:
        r = self.find(a)
        f = self._refine.get(r)
        if f is None:
            yield r
            return
        for c in f[1]:
            yield from self.leaves(c)

    # -- internals ---------------------------------------------------------------------------
    def _sizes(self, axes: tuple[int, ...]) -> list[int]:
        return [self._size[c] for c in axes]

    def _compose(self, kind: str, parts: list[int]) -> int:
        if kind == PROD:
            parts = [p for p in parts if self._size[p] != 1]
            total = math.prod(self._size[p] for p in parts)
        else:
            parts = [p for p in parts if self._size[p] != 0]
            total = sum(self._size[p] for p in parts)
        if len(parts) == 1:
            return parts[0]
        a = self.new(total)
        if parts:
            self._refine[a] = (kind, tuple(parts))
        return a

    def _flat(self, kind: str, children: tuple[int, ...]) -> list[int]:
        """Children with nested refinements of the same kind expanded (associativity)."""
        out: list[int] = []
        for c in children:
            f = self._refine.get(self.find(c))
            if f is not None and f[0] == kind:
                out.extend(self._flat(kind, f[1]))
            else:
                out.append(c)
        return out

    def _align(
        self, root: int, fx: tuple[str, tuple[int, ...]], fy: tuple[str, tuple[int, ...]]
    ) -> list[tuple[int, int]] | None:
        """Pairs of axes to unify so that refinements ``fx`` and ``fy`` agree; None if impossible."""
        if fx[0] != fy[0]:
            return None
        kind = fx[0]
        xs, ys = self._flat(kind, fx[1]), self._flat(kind, fy[1])
        sx, sy = self._sizes(tuple(xs)), self._sizes(tuple(ys))
        if sx == sy:
            self._refine[root] = (kind, tuple(xs))
            return list(zip(xs, ys))
        bx, by = _bounds(kind, sx), _bounds(kind, sy)
        common = sorted(set(bx) | set(by))
        if kind == PROD and any(hi % lo for lo, hi in zip(common, common[1:])):
            return None  # e.g. (2, 6) against (3, 4): no mixed radix refines both
        if kind == PROD:  # boundaries run from the minor end
            xs, ys = xs[::-1], ys[::-1]
        px = self._cut(kind, xs, bx, common)
        py = self._cut(kind, ys, by, common)
        self._refine[root] = (kind, tuple(px))
        return list(zip(px, py))

    def _cut(self, kind: str, axes: list[int], bounds: list[int], common: list[int]) -> list[int]:
        """Refine each axis in ``axes`` at the ``common`` boundaries it spans."""
        out: list[int] = []
        lo = common[0]
        for a, hi in zip(axes, bounds[1:]):
            inner = [b for b in common if lo < b <= hi]
            if len(inner) == 1:
                out.append(a)
            else:
                edges = [lo] + inner
                if kind == PROD:
                    # bounds are cumulative products from the least significant side
                    sizes = [e2 // e1 for e1, e2 in zip(edges, edges[1:])][::-1]
                    out.extend(reversed(self.split_product(a, sizes)))
                else:
                    sizes = [e2 - e1 for e1, e2 in zip(edges, edges[1:])]
                    out.extend(self.split_concat(a, sizes))
            lo = hi
        return out[::-1] if kind == PROD else out


def _bounds(kind: str, sizes: list[int]) -> list[int]:
    """Cumulative boundaries: sums from the start for cat; products from the minor end for prod."""
    out = [0 if kind == CAT else 1]
    seq = sizes if kind == CAT else sizes[::-1]
    for s in seq:
        out.append(out[-1] + s if kind == CAT else out[-1] * s)
    return out


@lru_cache(maxsize=None)
def coords(layout: Layout) -> tuple[tuple[int, torch.Tensor], ...]:
    """For each class occurrence in ``layout``: (class id, index of every position of the dim
    within that class, or -1 where the position lies outside that part of a concatenation)."""
    n = layout.size
    if layout.kind == "leaf":
        assert layout.cls is not None
        return ((layout.cls, torch.arange(n)),)
    out: list[tuple[int, torch.Tensor]] = []
    pos = torch.arange(n)
    if layout.kind == PROD:
        stride = n
        for part in layout.parts:
            stride //= part.size
            coord = (pos // stride) % part.size
            out.extend((c, m[coord]) for c, m in coords(part))
    else:
        offset = 0
        for part in layout.parts:
            inside = (pos >= offset) & (pos < offset + part.size)
            local = (pos - offset).clamp(0, max(part.size - 1, 0))
            out.extend((c, torch.where(inside, m[local] if part.size else local, -1)) for c, m in coords(part))
            offset += part.size
    return tuple(out)


def kept_positions(layout: Layout, keep: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """Positions of a dim that survive, given a boolean keep mask per class (classes absent
    from ``keep`` keep everything). None when every position survives."""
    mask: torch.Tensor | None = None
    for c, m in coords(layout):
        k = keep.get(c)
        if k is None:
            continue
        ok = torch.where(m >= 0, k[m.clamp(min=0)], True)
        mask = ok if mask is None else mask & ok
    if mask is None or bool(mask.all()):
        return None
    return mask.nonzero().flatten()
