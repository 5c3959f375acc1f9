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
  (relu, gelu, silu, tanh, neg, ...); any op registered with ``moves_zeros=True``;
- an affine ``nn.BatchNorm*`` with ``c`` in its channel dim (weight and bias
  slices zeroed);
- a product with any tensor (one factor zero-sourced), a quotient with a zero-sourced
  numerator, a power with a constant positive exponent of a zero-sourced base, a sum or difference of zero-sourced tensors, a concatenation whose pieces
  holding ``c`` are all zero-sourced;
- ``matmul`` with ``c`` in a non-contracted dim of a zero-sourced operand; attention's output
  with ``c`` in the value's batch or channel dims and the value zero-sourced.

Example:
    >>> zt = ZeroTracker(gm, analysis.param_layouts)
    >>> zt(q_node, head_dim_class)
    True
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .aten import TORCH_EQUIVALENT as _ATEN
from .keys import DIMS
from .rules import ZERO_MOVES, key_of

__all__ = ["ZeroTracker"]

_MOVE_METHODS = {
    "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
    "contiguous", "expand", "expand_as", "repeat", "repeat_interleave", "movedim", "moveaxis", "swapaxes",
    "swapdims", "narrow", "unbind", "split", "chunk", "tensor_split", "split_with_sizes", "clone", "detach",
    "float", "half", "double", "bfloat16", "to", "type_as", "cpu", "cuda", "view_as", "reshape_as",
    "broadcast_to", "tile",
    # zero-preserving element-wise
    "relu", "relu_", "relu6", "gelu", "silu", "tanh", "tanh_", "neg", "neg_", "abs", "square", "sqrt",
    "sin", "erf", "sign", "trunc", "round", "floor", "ceil", "hardtanh", "hardtanh_",
}  # fmt: skip
_MOVE_FUNCS = {
    torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze, torch.permute,
    torch.transpose, torch.t, torch.movedim, torch.swapaxes, torch.swapdims, torch.narrow, torch.unbind,
    torch.split, torch.chunk, torch.tensor_split, torch.clone, torch.detach, torch.repeat_interleave,
    torch.broadcast_to, torch.roll,
    torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.mish, F.hardswish, F.hardtanh, F.leaky_relu, F.elu,
    F.selu, F.celu, F.softsign, F.tanhshrink, F.hardshrink, F.softshrink, torch.tanh, F.tanh, torch.neg,
    operator.neg, operator.pos, torch.abs, torch.square, torch.sqrt, torch.sin, torch.erf, torch.sign,
    torch.trunc, torch.round, torch.floor, torch.ceil, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout, torch.dropout,
}  # fmt: skip
_MOVE_MODULES = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SELU,
    nn.CELU, nn.Tanh, nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Flatten, nn.Unflatten,
)  # fmt: skip
_MUL = {operator.mul, operator.imul, torch.mul, torch.multiply, "mul", "mul_", "__mul__", "__rmul__"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide, "div", "div_",
        "true_divide", "__truediv__"}  # fmt: skip
_ADD = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, torch.subtract,
        "add", "add_", "sub", "sub_", "__add__", "__radd__", "__sub__", "__rsub__"}  # fmt: skip
_CAT = {torch.cat, torch.concat, torch.concatenate, torch.stack}
_LINEAR = {F.linear, torch._C._nn.linear}
_CONV = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d}
_MATMUL = {torch.matmul, operator.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm", "__matmul__"}
_POW = {operator.pow, torch.pow, "pow", "pow_", "__pow__"}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _aten_batch_norms() -> set:
    """ATen batch norms whose (weight, bias) are args 1 and 2 (torch.export graphs)."""
    found = set()
    for name, overload in (("batch_norm", "default"), ("_native_batch_norm_legit_no_training", "default"),
                           ("native_batch_norm", "default"), ("_native_batch_norm_legit_functional", "default")):  # fmt: skip
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None and hasattr(packet, overload):
            found.add(getattr(packet, overload))
    return found


_ATEN_BATCH_NORMS = _aten_batch_norms()
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
        op, t = node.op, node.target
        t = _ATEN.get(t, t) if op == "call_function" else t  # torch.export graphs: ATen spellings
        tensors = [a for a in node.all_input_nodes if _dims_of(a)]
        if op == "get_attr":
            return t in self.params
        if op == "call_module":
            mod = self.gm.get_submodule(t)
            if isinstance(mod, _MOVE_MODULES):
                return self(node.args[0], c, depth)
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                return self._channel_has(node, -1, c)
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                return self._channel_has(node, 1 if len(_dims_of(node)[0]) == mod.weight.dim() else 0, c)
            if isinstance(mod, _BATCH_NORMS) and mod.affine:
                # weight and bias slices zeroed: the output is 0 there, whatever the statistics
                return self._channel_has(node, 1 if len(_dims_of(node)[0]) > 1 else 0, c)
            return False
        if op not in ("call_function", "call_method"):
            return False
        if t is operator.getitem:
            src = node.args[0]
            if isinstance(node.args[1], fx.Node):  # gather by an index tensor: rows of the source
                return self(src, c, depth)
            return self(src, c, depth)
        if t in _MOVE_FUNCS or (op == "call_method" and t in _MOVE_METHODS) or key_of(node.target) in ZERO_MOVES:
            return self(node.args[0], c, depth)
        if t in _LINEAR:
            w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            return self._param(w) and self._optional_param(b) and self._channel_has(node, -1, c)
        if t in _CONV:
            w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            return self._param(w) and self._optional_param(b) and self._channel_has(node, 1, c)
        if t is F.batch_norm or node.target in _ATEN_BATCH_NORMS:
            # F.batch_norm(x, mean, var, weight, bias) / aten (x, weight, bias, ...): the
            # output is 0 where weight and bias are (whatever the statistics)
            wi = 3 if t is F.batch_norm else 1
            w = node.args[wi] if len(node.args) > wi else node.kwargs.get("weight")
            b = node.args[wi + 1] if len(node.args) > wi + 1 else node.kwargs.get("bias")
            return self._param(w) and self._param(b) and self._channel_has(node, 1, c)
        if t is F.embedding:
            w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            return self._param(w) and self._channel_has(node, -1, c)
        if t in _MUL:
            return any(self(a, c, depth) for a in tensors)
        if t in _DIV:
            return self(node.args[0], c, depth)
        if t in _POW:  # 0 ** p == 0 for a constant p > 0
            e = node.args[1] if len(node.args) > 1 else node.kwargs.get("exponent")
            return isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0 and self(node.args[0], c, depth)
        if t in _ADD:
            operands = [a for a in node.args[:2]]
            return all(isinstance(a, fx.Node) and self(a, c, depth) for a in operands)
        if t in _CAT:
            pieces = [a for a in node.all_input_nodes if _has(a, c)]
            return bool(pieces) and all(self(a, c, depth) for a in pieces)
        if t in _MATMUL:
            return self._matmul(node, c, depth)
        if t is F.scaled_dot_product_attention:
            v = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
            dims = _dims_of(v)
            if not dims or len(dims[0]) < 2:
                return False
            outside_keys = set().union(*(s for i, s in enumerate(dims[0]) if i != len(dims[0]) - 2))
            return c in outside_keys and self(v, c, depth)
        return False

    def _matmul(self, node: fx.Node, c: int, depth: int) -> bool:
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
