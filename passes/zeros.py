"""Zero-tracking: is a tensor provably zero where a class's removed indices sit, in the masked
model (the original with the plan's parameter slices zeroed)?

This decides whether a contraction between two activations (q . k over head_dim) is exact:
the removed terms of the sum vanish when either operand is zero on the removed indices.

A node is *zero-sourced* in class ``c`` when every position whose coordinate in ``c`` is a
removed index holds zero in the masked model, whatever indices are removed. Sources and the
ops that keep the property (anything else answers no, which is the safe answer):

- a parameter read (``get_attr``) holding ``c``: the mask zeroes its slices (buffers are not
  masked, so they are not sources);
- ``nn.Linear``/``F.linear``, ``nn.Conv*``/``F.conv*``, ``nn.Embedding``/``F.embedding``
  with ``c`` in the output channel dim, when weight and bias are parameters (their slices
  along that dim are zeroed);
- data movement (views, permutes, transposes, indexing, split/unbind pieces, expand, repeat,
  contiguous, dtype casts, dropout, identity), and zero-preserving element-wise functions
  (relu, gelu, silu, tanh, neg, ...);
- an affine ``nn.BatchNorm*`` with ``c`` in its channel dim (weight and bias
  slices zeroed);
- a product with any tensor (one factor zero-sourced), a quotient with a zero-sourced
  numerator, a power with a constant positive exponent of a zero-sourced base, a sum or
  difference of zero-sourced tensors, a concatenation whose pieces holding ``c`` are all zero-sourced;
- ``matmul`` with ``c`` in a non-contracted dim of a zero-sourced operand; attention's output
  with ``c`` in the value's batch or channel dims and the value zero-sourced.

Each op's behaviour is a facet of its record (``register_rule(..., zeros=kind)``, the kinds in
``registry.ZERO_KINDS``): the tracker looks the node's record up and applies its kind; the
arguments it reads (weight, bias, value) are bound by the names of the record's rule, so every
spelling of the op (torch, method, ATen) is read alike.

Example:
    >>> zt = ZeroTracker(gm, analysis.param_layouts)
    >>> zt(q_node, head_dim_class)
    True
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import fx

from . import ops as _ops  # noqa: F401 - every record registered, in the stated order
from .keys import DIMS
from .registry import OpSpec, spec_for_node

__all__ = ["ZeroTracker"]

_MAX_DEPTH = 400  # deeper chains answer "no" (safe) rather than recurse without bound


def _dims_of(node: Any) -> list[tuple[set[int], ...]]:
    """Per tensor result of ``node``: the classes of each dim."""
    d = node.meta.get(DIMS) if isinstance(node, fx.Node) else None
    out: list[tuple[set[int], ...]] = []

    def visit(x: Any) -> None:
        if hasattr(x, "dims"):
            out.append(tuple(set(lay.classes()) for lay in x.dims))
        elif isinstance(x, tuple):
            for y in x:
                visit(y)

    visit(d)
    return out


def _has(node: Any, c: int) -> bool:
    return any(c in s for dims in _dims_of(node) for s in dims)


class ZeroTracker:
    """``tracker(node, c)``: whether ``node`` is zero-sourced in class ``c`` (module docstring)."""

    def __init__(self, gm: fx.GraphModule, param_layouts: dict[str, Any]):
        self.gm = gm
        self.params = {name for name, _ in gm.named_parameters(remove_duplicate=False)}
        self.param_layouts = param_layouts
        self.memo: dict[tuple[str, int], bool] = {}
        self.modules = dict(gm.named_modules(remove_duplicate=False))

    def __call__(self, node: Any, c: int, depth: int = 0) -> bool:
        if not isinstance(node, fx.Node) or depth > _MAX_DEPTH or not _has(node, c):
            return False
        key = (node.name, c)
        if key not in self.memo:
            self.memo[key] = False  # cycles cannot occur in a graph; this guards re-entry
            self.memo[key] = self._check(node, c, depth + 1)
        return self.memo[key]

    def _param(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and a.op == "get_attr" and a.target in self.params

    def _optional_param(self, a: Any) -> bool:
        return a is None or self._param(a)

    def _channel_has(self, node: fx.Node, dim: int, c: int) -> bool:
        dims = _dims_of(node)
        return bool(dims) and len(dims[0]) > 0 and c in dims[0][dim]

    def _check(self, node: fx.Node, c: int, depth: int) -> bool:
        if node.op == "get_attr":
            return node.target in self.params
        spec = spec_for_node(node, self.modules)
        if spec is None or spec.zeros is None:
            return False  # an op whose record says nothing about zeros: the safe answer
        if node.op == "call_module":
            return self._module(node, spec.zeros, self.gm.get_submodule(str(node.target)), c, depth)
        args = self._bound(spec, node) if spec.zeros in _NAMED else {}
        if args is None:
            return False
        return _KINDS[spec.zeros](self, node, args, c, depth)

    def _bound(self, spec: OpSpec, node: fx.Node) -> dict[str, Any] | None:
        """The node's arguments by the names of its record's rule (one spelling or another)."""
        sig = spec.signature
        if sig is None:  # no rule: nothing to bind by
            return None
        try:
            b = sig.bind(*node.args, **node.kwargs)
        except TypeError:
            return None
        named = dict(b.arguments)
        for p in sig.parameters.values():  # *args and **kwargs: by position and name
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                named.pop(p.name, None)
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                named.update(named.pop(p.name, {}))
        named["__args__"] = node.args
        return named

    def _module(self, node: fx.Node, kind: str, mod: Any, c: int, depth: int) -> bool:
        """A module holding the op's parameters: its weight and bias are parameters, so their
        slices are zeroed in the masked model."""
        if kind == "moves":
            return self(node.args[0], c, depth)
        if kind in ("linear", "embedding"):
            return self._channel_has(node, -1, c)
        if kind == "conv":
            return self._channel_has(node, 1 if len(_dims_of(node)[0]) == mod.weight.dim() else 0, c)
        if kind == "batch_norm" and getattr(mod, "affine", False):
            # weight and bias slices zeroed: the output is 0 there, whatever the statistics
            return self._channel_has(node, 1 if len(_dims_of(node)[0]) > 1 else 0, c)
        return False

    # one method per ZERO_KINDS entry; ``a``: the node's arguments by the rule's names
    def _moves(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return self(node.args[0], c, depth)

    def _product(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return any(self(x, c, depth) for x in node.all_input_nodes if _dims_of(x))

    def _quotient(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return self(node.args[0], c, depth)

    def _power(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:  # 0 ** p == 0 for a constant p > 0
        e = node.args[1] if len(node.args) > 1 else node.kwargs.get("exponent")
        return isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0 and self(node.args[0], c, depth)

    def _sum(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return all(isinstance(x, fx.Node) and self(x, c, depth) for x in node.args[:2])

    def _concat(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        pieces = [x for x in node.all_input_nodes if _has(x, c)]
        return bool(pieces) and all(self(x, c, depth) for x in pieces)

    def _linear(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return self._param(a.get("weight")) and self._optional_param(a.get("bias")) and self._channel_has(node, -1, c)

    def _conv(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return self._param(a.get("weight")) and self._optional_param(a.get("bias")) and self._channel_has(node, 1, c)

    def _embedding(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        return self._param(a.get("weight")) and self._channel_has(node, -1, c)

    def _batch_norm(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        # the output is 0 where weight and bias are (whatever the statistics)
        return self._param(a.get("weight")) and self._param(a.get("bias")) and self._channel_has(node, 1, c)

    def _attention(self, node: fx.Node, a: dict, c: int, depth: int) -> bool:
        dims = _dims_of(a.get("value"))
        if not dims or len(dims[0]) < 2:
            return False
        outside_keys = set().union(*(s for i, s in enumerate(dims[0]) if i != len(dims[0]) - 2))
        return c in outside_keys and self(a["value"], c, depth)

    def _matmul(self, node: fx.Node, args: dict, c: int, depth: int) -> bool:
        a, b = node.args[0], node.args[1]
        for x, contracted in ((a, -1), (b, -2)):
            dims = _dims_of(x)
            if not dims or len(dims[0]) < 2:
                continue
            ds = dims[0]
            k = len(ds) + contracted
            rest = set().union(*(s for i, s in enumerate(ds) if i != k))
            if c in rest and c not in ds[k] and self(x, c, depth):
                return True
        return False


_NAMED = {"linear", "conv", "embedding", "batch_norm", "attention"}  # kinds that read arguments by name
_KINDS = {
    "moves": ZeroTracker._moves, "product": ZeroTracker._product, "quotient": ZeroTracker._quotient,
    "power": ZeroTracker._power, "sum": ZeroTracker._sum, "concat": ZeroTracker._concat,
    "linear": ZeroTracker._linear, "conv": ZeroTracker._conv, "embedding": ZeroTracker._embedding,
    "batch_norm": ZeroTracker._batch_norm, "matmul": ZeroTracker._matmul, "attention": ZeroTracker._attention,
}  # fmt: skip
