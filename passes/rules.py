"""The core ops: element-wise, convolutions, linear, norms, pooling, views, reductions, indexing.

A *spelling* (``nn.Conv2d`` as call_module, ``F.conv2d`` / ``torch.conv2d`` as call_function,
``x.relu()`` as call_method, ``aten.conv2d.default`` in an export graph) reaches a canonical
op's record (``registry.OpSpec``), whose rule states how the dims of the op's operands and
results relate, through a ``Ctx``: it returns the output axes (a tuple, one axis per dim; a list
of such tuples for several outputs; None for a non-tensor result). The registry API lives in
``registry.py`` and is re-exported here for content modules and users.

An op with no spelling in any record has no rule: the analysis pins every class it touches and
names it in the report. Nothing is ever assumed to be element-wise.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import (  # the registry; rules.py re-exports it for content modules and users
    RULES,
    Ctx,
    DuplicateOpError,
    OpSpec,
    Val,
    aten_ops,
    has_module_rule,
    key_of,
    list_ops,
    lookup,
    op_name,
    register_flops,
    register_method,
    register_module,
    register_module_update,
    register_rewrite,
    register_rule,
    register_spellings,
    rule_for,
    spec_of,
)

__all__ = [
    "Val", "Ctx", "OpSpec", "register_rule", "register_spellings", "register_module", "register_method",
    "register_rewrite", "register_module_update", "register_flops", "has_module_rule", "lookup", "op_name", "RULES",
    "DuplicateOpError", "rule_for", "key_of", "spec_of", "list_ops", "aten_ops",
]  # fmt: skip


# ------------------------------------------------------------------------------------------
# helpers shared by rules
# ------------------------------------------------------------------------------------------
def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _dims(dim: Any, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, (list, tuple)):
        return sorted(_dim(d, ndim) for d in dim)
    return [_dim(dim, ndim)]


def _broadcast(ctx: Ctx, operands: list[Any], out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element-wise over broadcast operands: unify every operand dim that has the output's size."""
    vals = [v for v in operands if isinstance(v, Val)]
    out: list[int] = []
    n = len(out_shape)
    for d in range(n):
        size = out_shape[d]
        same = [v.axes[d - n + v.ndim] for v in vals if d - n + v.ndim >= 0 and v.shape[d - n + v.ndim] == size]
        if not same:
            out.append(ctx.ax.new(size))
            continue
        for a in same[1:]:
            ctx.unify(same[0], a)
        out.append(same[0])
    return tuple(out)


def _reshape(ctx: Ctx, x: Val, out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Relate dims across any reshape: group input and output dims into runs of equal
    product, and refine each run into the row-major product it is."""
    out: list[int | None] = [None] * len(out_shape)
    ins = [i for i, s in enumerate(x.shape) if s != 1]
    outs = [j for j, s in enumerate(out_shape) if s != 1]
    i = j = 0
    while i < len(ins) or j < len(outs):
        if i >= len(ins) or j >= len(outs):
            raise ValueError(f"reshape {x.shape} -> {out_shape}: element counts differ")
        run_in, run_out = [ins[i]], [outs[j]]
        pi, pj = x.shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                run_in.append(ins[i])
                pi *= x.shape[ins[i]]
                i += 1
            else:
                run_out.append(outs[j])
                pj *= out_shape[outs[j]]
                j += 1
        if len(run_in) == 1 and len(run_out) == 1:
            out[run_out[0]] = x.axes[run_in[0]]
            continue
        new = [ctx.ax.new(out_shape[k]) for k in run_out]
        ctx.unify(ctx.ax.product([x.axes[k] for k in run_in]), ctx.ax.product(new))
        for k, a in zip(run_out, new):
            out[k] = a
    return tuple(a if a is not None else ctx.ax.new(1) for a in out)


def _tie(ctx: Ctx, param: Val | None, axes: list[int | None]) -> None:
    """Tie a parameter's dims to data axes (None: leave that param dim alone)."""
    if param is None:
        return
    for pa, a in zip(param.axes, axes):
        if a is not None:
            ctx.unify(pa, a)


def _opt(ctx: Ctx, mod: nn.Module, fqn: str, name: str) -> Val | None:
    return ctx.param(f"{fqn}.{name}") if getattr(mod, name, None) is not None else None


# ------------------------------------------------------------------------------------------
# element-wise
# ------------------------------------------------------------------------------------------
# f(0) = 0 (and data movement): where the input is zero, so is the result (zero-tracking)
_UNARY_ZERO_FUNCS = [
    torch.relu, F.relu, F.relu6, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardtanh, F.leaky_relu, F.softsign, F.tanhshrink, F.hardshrink, F.softshrink, F.tanh, torch.tanh,
    torch.abs, torch.neg, operator.neg, operator.pos, torch.sqrt, torch.erf, torch.sin, torch.square,
    torch.sign, torch.floor, torch.ceil, torch.round, torch.trunc, torch.clone, torch.detach,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout, torch.relu_, torch.selu, torch.celu, torch.hardshrink, torch.tanh_, torch.neg_, torch.sqrt_,
    torch.abs_, torch.detach_, torch.alpha_dropout, torch.feature_alpha_dropout, torch.feature_dropout,
]  # fmt: skip
_UNARY_ZERO_METHODS = (
    "relu relu_ tanh tanh_ abs abs_ neg neg_ sqrt sqrt_ erf sin square sign floor ceil round trunc clone "
    "detach detach_ contiguous float half double bfloat16 to type_as cpu cuda hardtanh_ relu6 silu gelu hardshrink"
).split()
# the other one-in, one-out ops: f(0) may be non-zero (sigmoid, exp, cos, ones_like, ...)
_UNARY_FUNCS = [
    F.hardsigmoid, F.softplus, F.logsigmoid, F.threshold, F.rrelu, F.sigmoid, torch.sigmoid, torch.exp,
    torch.log, torch.rsqrt, torch.cos, torch.reciprocal, torch.nan_to_num, torch.zeros_like,
    torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like, torch.erfc,
    torch.log1p, torch.expm1, torch.sigmoid_, torch.frac, torch.logical_not, torch.bitwise_not,
    torch.isnan, torch.isinf, torch.isfinite, torch.exp2, torch.log2, torch.log10, torch.exp_, torch.log_,
    torch.zero_, torch.fill_, torch.rrelu,
]  # fmt: skip
_UNARY_METHODS = (
    "sigmoid sigmoid_ exp exp_ log log_ rsqrt cos reciprocal nan_to_num requires_grad_ zero_ fill_ exp2 log1p "
    "expm1 frac logical_not bitwise_not isnan isinf isfinite erfc log2 log10"
).split()


@register_rule("unary", *_UNARY_FUNCS, methods=tuple(_UNARY_METHODS))
def _unary(ctx: Ctx, input: Any, *args: Any, **kwargs: Any) -> Any:
    """Same index in, same index out: the output has the input's axes."""
    if not isinstance(input, Val):
        return None
    return input.axes


register_rule("unary_zero", *_UNARY_ZERO_FUNCS, methods=tuple(_UNARY_ZERO_METHODS), zeros="moves")(_unary)

_ACTIVATIONS = [
    nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid, nn.Threshold, nn.RReLU,
]  # fmt: skip
_ZERO_ACTIVATIONS = [
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Hardtanh, nn.Hardswish, nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
]  # fmt: skip


@register_module("unary", *_ACTIVATIONS)
def _unary_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any, *args: Any, **kwargs: Any) -> dict:
    return {"input": input}


register_module("unary_zero", *_ZERO_ACTIVATIONS)(_unary_module)


@register_rule("elementwise", operator.floordiv, operator.mod, operator.eq, operator.ne, operator.lt, operator.le,
               operator.gt, operator.ge, operator.and_, operator.or_, operator.xor, torch.floor_divide,
               torch.maximum, torch.minimum, torch.fmod, torch.remainder, torch.eq, torch.ne, torch.lt, torch.le,
               torch.gt, torch.ge, torch.logical_and, torch.logical_or, torch.logical_xor, torch.atan2, torch.hypot,
               torch.fmax, torch.fmin, torch.bitwise_and, torch.bitwise_or, torch.masked_fill,
               methods=("floor_divide", "maximum", "minimum", "fmod", "remainder", "eq", "ne", "lt", "le", "gt", "ge",
                        "logical_and", "logical_or", "logical_xor", "atan2", "hypot", "fmax", "fmin", "bitwise_and",
                        "bitwise_or", "__rtruediv__", "masked_fill", "masked_fill_"))  # fmt: skip
def _elementwise(ctx: Ctx, input: Any, other: Any, *args: Any, **kwargs: Any) -> Any:
    """Broadcasting element-wise op: operand dims of the output's size are one class
    (this is what ties a squeeze-excitation gate to the channels it scales). The records
    below share this rule and differ in what zero-tracking and depth pruning know of them."""
    if not ctx.returns_tensor:
        return None  # python arithmetic on sizes
    return _broadcast(ctx, [input, other], ctx.out_shape())


# y = a + b: zero where both are; either operand may be a removable branch (blocks.py)
register_rule("add", operator.add, operator.iadd, torch.add, methods=("add", "add_", "__add__", "__radd__"),
              zeros="sum", block="add")(_elementwise)  # fmt: skip
# y = a - b: only b may be a removable branch
register_rule("sub", operator.sub, operator.isub, torch.sub, torch.subtract,
              methods=("sub", "sub_", "__sub__", "subtract"),
              zeros="sum", block="sub")(_elementwise)  # fmt: skip
# x.__rsub__(y) = y - x
register_rule("rsub", torch.rsub, methods=("__rsub__",), zeros="sum")(_elementwise)
register_rule("mul", operator.mul, operator.imul, torch.mul, torch.multiply,
              methods=("mul", "mul_", "__mul__", "__rmul__", "multiply"), zeros="product")(_elementwise)  # fmt: skip
# a / b with a first (``__rtruediv__`` divides by its first operand: it stays "elementwise")
register_rule("div", operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide,
              methods=("div", "div_", "true_divide", "__truediv__", "divide"), zeros="quotient")(_elementwise)  # fmt: skip
register_rule("pow", operator.pow, torch.pow, methods=("pow", "pow_"), zeros="power")(_elementwise)
# x.expand_as(y): x's values in y's shape; an expanded dim keeps its class only where y has it too
register_rule("expand_as", methods=("expand_as",), zeros="moves")(_elementwise)


@register_rule("where", torch.where, methods=("where",))
def _where(ctx: Ctx, condition: Any, input: Any = None, other: Any = None) -> Any:
    if input is None:
        return None  # torch.where(cond) returns indices: no rule describes that
    return _broadcast(ctx, [condition, input, other], ctx.out_shape())


@register_rule("clamp", torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, torch.clamp_, torch.clamp_min_,
               torch.clamp_max_, torch.clip_,
               methods=("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_"))  # fmt: skip
def _clamp(ctx: Ctx, input: Any, min: Any = None, max: Any = None) -> Any:
    """Element-wise; tensor bounds broadcast like operands (``clamp(x, min=t)`` with a
    per-channel ``t`` ties t's channels to x's). ``clamp_min(x, b)`` and ``clamp_max(x, b)``
    bind their one bound to ``min``: the relation is the same for either bound."""
    if not isinstance(input, Val):
        return None
    return _broadcast(ctx, [input, min, max], ctx.out_shape())


@register_rule("lerp", torch.lerp, torch.addcmul, torch.addcdiv, methods=("lerp", "addcmul", "addcdiv"))
def _ternary(ctx: Ctx, input: Any, a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
    return _broadcast(ctx, [input, a, b], ctx.out_shape())


@register_rule("prelu", F.prelu, torch.prelu, methods=("prelu",))
def _prelu(ctx: Ctx, input: Val, weight: Val) -> Any:
    """PReLU: one slope per channel (dim 1), or a single shared slope."""
    if weight.shape[0] > 1:
        _tie(ctx, weight, [input.axes[1 if input.ndim > 1 else 0]])
    return input.axes


@register_module("prelu", nn.PReLU)
def _prelu_module(ctx: Ctx, mod: nn.PReLU, fqn: str, input: Any) -> dict:
    return {"input": input, "weight": ctx.param(f"{fqn}.weight")}


# ------------------------------------------------------------------------------------------
# parameterized layers
# ------------------------------------------------------------------------------------------
@register_rule("conv", F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d, zeros="conv")
def _conv(
    ctx: Ctx, input: Val, weight: Val, bias: Val | None = None, stride: Any = 1,
    padding: Any = 0, dilation: Any = 1, groups: int = 1, transposed: bool = False,
) -> Any:  # fmt: skip
    """Convolution. In and out channels are different axes (the paper's sch(f-) != sch(f+));
    with groups g, both are a product (group, channel-in-group) sharing the group axis, so
    pruning whole groups or the same offsets in every group are both exact. Spatial dims are
    mixed by the kernel and pinned."""
    k = weight.ndim - 2
    batched = input.ndim == k + 2
    c_in = input.axes[1 if batched else 0]
    out_shape = ctx.out_shape()
    c_out_size = out_shape[1 if batched else 0]
    w_in, w_out = (0, 1) if transposed else (1, 0)  # weight dims holding in/out channels
    c_out = ctx.ax.new(c_out_size)
    if groups == 1:
        ctx.unify(weight.axes[w_in], c_in)
        ctx.unify(weight.axes[w_out], c_out)
    else:
        g = ctx.ax.new(groups)
        ctx.record("groups", g)
        per_in = ctx.ax.new(input.shape[1 if batched else 0] // groups)
        per_out = ctx.ax.new(c_out_size // groups)
        ctx.unify(c_in, ctx.ax.product([g, per_in]))
        ctx.unify(c_out, ctx.ax.product([g, per_out]))
        if transposed:  # weight (C_in, C_out/g, ...)
            ctx.unify(weight.axes[0], ctx.ax.product([g, per_in]))
            ctx.unify(weight.axes[1], per_out)
        else:  # weight (C_out, C_in/g, ...)
            ctx.unify(weight.axes[0], ctx.ax.product([g, per_out]))
            ctx.unify(weight.axes[1], per_in)
    _tie(ctx, bias, [c_out])
    ctx.pin(weight.axes[2:], "convolution kernel dims")
    spatial_in = input.axes[-k:]
    spatial_out = ctx.fresh(out_shape[-k:])
    ctx.pin(spatial_in + spatial_out, "spatial dims mixed by a convolution")
    return ((input.axes[0], c_out) if batched else (c_out,)) + spatial_out


@register_rule("conv_transpose", F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def _conv_transpose(
    ctx: Ctx, input: Val, weight: Val, bias: Val | None = None, stride: Any = 1,
    padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1,
) -> Any:  # fmt: skip
    return _conv(ctx, input, weight, bias, groups=groups, transposed=True)


@register_module("conv", nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input, "weight": ctx.param(f"{fqn}.weight"), "bias": _opt(ctx, mod, fqn, "bias"),
            "groups": mod.groups}  # fmt: skip


@register_module("conv_transpose", nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any, output_size: Any = None) -> dict:
    return {"input": input, "weight": ctx.param(f"{fqn}.weight"), "bias": _opt(ctx, mod, fqn, "bias"),
            "groups": mod.groups}  # fmt: skip


@register_rule("linear", F.linear, torch._C._nn.linear, zeros="linear")
def _linear(ctx: Ctx, input: Val, weight: Val, bias: Val | None = None) -> Any:
    """y = x W^T + b: in and out features are different axes, tied to W's dims."""
    if weight.ndim == 2:
        out = ctx.ax.new(weight.shape[0])
        ctx.unify(weight.axes[1], input.axes[-1])
        ctx.unify(weight.axes[0], out)
        _tie(ctx, bias, [out])
        return input.axes[:-1] + (out,)
    ctx.unify(weight.axes[0], input.axes[-1])  # 1-D weight: a dot product
    return input.axes[:-1]


@register_module("linear", nn.Linear)
def _linear_module(ctx: Ctx, mod: nn.Linear, fqn: str, input: Any) -> dict:
    return {"input": input, "weight": ctx.param(f"{fqn}.weight"), "bias": _opt(ctx, mod, fqn, "bias")}


def _contract(ctx: Ctx, a: Val, da: int, b: Val, db: int) -> None:
    """Operand dims contracted together: one class. Exact when a parameter is on one side
    (its slices are zeroed); between two activations the removed products need not vanish
    in the masked model, unless one operand is provably zero on the removed indices: the
    analysis decides that at the end by zero-tracking (``passes/zeros.py``), through
    ``ctx.defer_contraction`` when the analyzer provides it; otherwise approximate."""
    ctx.unify(a.axes[da], b.axes[db])
    if a.param is None and b.param is None:
        defer = getattr(ctx, "defer_contraction", None)
        if defer is None or not defer(a, da, b, db):
            ctx.approx(a.axes[da], "contracted between two activations (matmul/einsum)")


@register_rule("matmul", torch.matmul, operator.matmul, torch.mm, torch.bmm,
               methods=("matmul", "mm", "bmm", "__matmul__"), zeros="matmul")  # fmt: skip
def _matmul(ctx: Ctx, input: Val, other: Val) -> Any:
    a, b = input, other
    out_shape = ctx.out_shape()
    if a.ndim == 1 and b.ndim == 1:
        _contract(ctx, a, 0, b, 0)
        return ()
    if b.ndim == 1:
        _contract(ctx, a, -1, b, 0)
        return a.axes[:-1]
    if a.ndim == 1:
        _contract(ctx, a, 0, b, -2)
        return b.axes[:-2] + (b.axes[-1],)
    _contract(ctx, a, -1, b, -2)
    batch_shape = out_shape[:-2]
    batch = _broadcast(ctx, [Val(a.axes[:-2], a.shape[:-2]), Val(b.axes[:-2], b.shape[:-2])], batch_shape)
    if batch and a.param is None and b.param is None:
        ctx.record("heads", batch[-1])  # attention: the dim before the matrices is the heads
    return batch + (a.axes[-2], b.axes[-1])


@register_rule("einsum", torch.einsum)
def _einsum(ctx: Ctx, equation: str, *operands: Any) -> Any:
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if "..." in eq or not rhs and "->" not in eq:
        raise ValueError("einsum with ellipsis or implicit output is not described")
    letter: dict[str, tuple[Val, int]] = {}
    contracted: set[str] = set()
    for term, v in zip(terms, operands):
        for d, ch in enumerate(term):
            if ch in letter:
                first, fd = letter[ch]
                if v.shape[d] == first.shape[fd]:
                    if ch not in rhs:
                        _contract(ctx, first, fd, v, d)
                    else:
                        ctx.unify(first.axes[fd], v.axes[d])
            else:
                letter[ch] = (v, d)
            if ch not in rhs:
                contracted.add(ch)
    for ch in contracted:  # summed over but seen once: a reduction
        v, d = letter[ch]
        if sum(t.count(ch) for t in terms) == 1:
            ctx.pin(v.axes[d], "summed over by einsum")
    return tuple(letter[ch][0].axes[letter[ch][1]] for ch in rhs)


@register_rule("embedding", F.embedding, zeros="embedding")
def _embedding(ctx: Ctx, input: Val, weight: Val, *args: Any, **kwargs: Any) -> Any:
    """Rows are looked up by index, so the vocabulary dim is pinned; the embedding dim is free."""
    ctx.pin(weight.axes[0], "embedding rows are looked up by index")
    return input.axes + (weight.axes[1],)


@register_module("embedding", nn.Embedding)
def _embedding_module(ctx: Ctx, mod: nn.Embedding, fqn: str, input: Any) -> dict:
    return {"input": input, "weight": ctx.param(f"{fqn}.weight")}


# ------------------------------------------------------------------------------------------
# normalization
# ------------------------------------------------------------------------------------------
@register_rule("batch_norm", F.batch_norm, zeros="batch_norm")
def _batch_norm(
    ctx: Ctx, input: Val, running_mean: Val | None, running_var: Val | None, weight: Val | None = None,
    bias: Val | None = None, *args: Any, **kwargs: Any,
) -> Any:  # fmt: skip
    """Per-channel statistics: every per-channel tensor follows dim 1. With batch statistics
    (``training=True``, or no running statistics) the mean and variance of each channel are
    taken over every other dim, so those dims' classes are approximate: timm's StdConv2d
    standardizes a conv weight this way, over its input channels."""
    c = input.axes[1] if input.ndim > 1 else input.axes[0]
    for p in (running_mean, running_var, weight, bias):
        if isinstance(p, Val):
            _tie(ctx, p, [c])
    training = kwargs.get("training", args[0] if args else False)
    if training or not isinstance(running_mean, Val):
        for a in input.axes:
            if a != c:
                ctx.approx(a, "batch_norm batch statistics (training=True) reduce over it")
    return input.axes


@register_rule("torch.batch_norm", torch.batch_norm, zeros="batch_norm")
def _torch_batch_norm(
    ctx: Ctx, input: Val, weight: Any = None, bias: Any = None, running_mean: Any = None, running_var: Any = None,
    training: bool = False, *args: Any, **kwargs: Any,
) -> Any:  # fmt: skip
    """``torch.batch_norm(input, weight, bias, running_mean, running_var, training, ...)``:
    F.batch_norm's relations with torch's argument order."""
    return _batch_norm(ctx, input, running_mean, running_var, weight, bias, training=training)


@register_module("batch_norm", nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def _batch_norm_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input, "running_mean": _opt(ctx, mod, fqn, "running_mean"),
            "running_var": _opt(ctx, mod, fqn, "running_var"), "weight": _opt(ctx, mod, fqn, "weight"),
            "bias": _opt(ctx, mod, fqn, "bias")}  # fmt: skip


@register_rule("instance_norm", F.instance_norm)
def _instance_norm(
    ctx: Ctx, input: Val, running_mean: Val | None = None, running_var: Val | None = None,
    weight: Val | None = None, bias: Val | None = None, *args: Any, **kwargs: Any,
) -> Any:  # fmt: skip
    """Statistics per (sample, channel) over space: channels stay independent."""
    return _batch_norm(ctx, input, running_mean, running_var, weight, bias)


@register_rule("torch.instance_norm", torch.instance_norm)
def _torch_instance_norm(
    ctx: Ctx, input: Val, weight: Any = None, bias: Any = None, running_mean: Any = None, running_var: Any = None,
    *args: Any, **kwargs: Any,
) -> Any:  # fmt: skip
    """``torch.instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, ...)``
    (ATen's order): F.instance_norm's relations. It used to bind to F.instance_norm's order,
    reading the weight as the running mean."""
    return _instance_norm(ctx, input, running_mean, running_var, weight, bias)


@register_module("instance_norm", nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return _batch_norm_module(ctx, mod, fqn, input)


@register_rule("group_norm", F.group_norm, torch.group_norm)
def _group_norm(ctx: Ctx, input: Val, num_groups: int, weight: Val | None = None, bias: Val | None = None,
                eps: float = 1e-5, *args: Any) -> Any:  # fmt: skip
    """Statistics per group: channels = (group, channel-in-group). Whole groups prune exactly;
    channels within a group change the group's statistics, so that factor is approximate."""
    c = input.axes[1]
    per = input.shape[1] // num_groups
    g = ctx.ax.new(num_groups)
    ctx.record("groups", g)
    inner = ctx.ax.new(per)
    ctx.unify(c, ctx.ax.product([g, inner]))
    if per > 1:
        ctx.approx(inner, "group_norm statistics span the channels of a group")
    _tie(ctx, weight, [c])
    _tie(ctx, bias, [c])
    return input.axes


@register_module("group_norm", nn.GroupNorm)
def _group_norm_module(ctx: Ctx, mod: nn.GroupNorm, fqn: str, input: Any) -> dict:
    return {"input": input, "num_groups": mod.num_groups, "weight": _opt(ctx, mod, fqn, "weight"),
            "bias": _opt(ctx, mod, fqn, "bias")}  # fmt: skip


@register_rule("layer_norm", F.layer_norm, torch.layer_norm, F.rms_norm, torch.rms_norm)
def _layer_norm(ctx: Ctx, input: Val, normalized_shape: Any, weight: Val | None = None,
                bias: Val | None = None, eps: Any = None, *args: Any) -> Any:  # fmt: skip
    """Statistics over the last len(normalized_shape) dims: those dims are approximate."""
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    dims = input.axes[input.ndim - len(shape):]
    for a in dims:
        ctx.approx(a, "layer_norm statistics span this dim")
    for p in (weight, bias):
        if isinstance(p, Val):
            _tie(ctx, p, list(dims))
    return input.axes


@register_module("layer_norm", nn.LayerNorm, nn.RMSNorm)
def _layer_norm_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input, "normalized_shape": mod.normalized_shape,
            "weight": _opt(ctx, mod, fqn, "weight"), "bias": _opt(ctx, mod, fqn, "bias")}  # fmt: skip


@register_rule("local_response_norm", F.local_response_norm)
def _lrn(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
    """Each channel is scaled by its neighbours' energy: approximate along channels."""
    ctx.approx(input.axes[1], "local_response_norm mixes neighbouring channels")
    return input.axes


@register_module("local_response_norm", nn.LocalResponseNorm)
def _lrn_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input}


@register_rule("softmax", F.softmax, F.log_softmax, F.softmin, torch.softmax, torch.log_softmax,
               methods=("softmax", "log_softmax"))  # fmt: skip
def _softmax(ctx: Ctx, input: Val, dim: int | None = None, *args: Any, **kwargs: Any) -> Any:
    """Normalizes over ``dim``: removing entries changes the others, so approximate there."""
    d = _dim(dim if dim is not None else -1, input.ndim)
    ctx.approx(input.axes[d], "softmax normalizes over this dim")
    return input.axes


@register_module("softmax", nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)
def _softmax_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input, "dim": getattr(mod, "dim", -3)}


@register_rule("normalize", F.normalize)
def _normalize(ctx: Ctx, input: Val, p: float = 2.0, dim: int = 1, *args: Any, **kwargs: Any) -> Any:
    """``x / max(||x||_p over dim, eps)``: the norm changes when indices go (approximate),
    unless the input is provably zero on them (zero-tracking: then exact)."""
    d = _dim(dim, input.ndim)
    reason = "normalize divides by a norm over this dim"
    defer = getattr(ctx, "defer_zero", None)
    if not (isinstance(p, (int, float)) and p > 0 and defer is not None and defer(input, d, "approx", reason)):
        ctx.approx(input.axes[d], reason)
    return input.axes


@register_rule("glu", F.glu)
def _glu(ctx: Ctx, input: Val, dim: int = -1) -> Any:
    """a * sigmoid(b) with (a, b) the two halves of ``dim``: the halves are one class."""
    d = _dim(dim, input.ndim)
    half = input.shape[d] // 2
    a, b = ctx.ax.split_concat(input.axes[d], [half, half])
    ctx.unify(a, b)
    return input.axes[:d] + (a,) + input.axes[d + 1:]


@register_module("glu", nn.GLU)
def _glu_module(ctx: Ctx, mod: nn.GLU, fqn: str, input: Any) -> dict:
    return {"input": input, "dim": mod.dim}


# ------------------------------------------------------------------------------------------
# pooling, resampling, padding
# ------------------------------------------------------------------------------------------
def _spatial(ctx: Ctx, input: Val, k: int, what: str) -> Any:
    """Leading dims pass through; the last ``k`` (spatial) dims are mixed and pinned."""
    out_shape = ctx.out_shape()
    lead = input.axes[: input.ndim - k]
    sp_out = ctx.fresh(out_shape[len(lead):])
    ctx.pin(input.axes[input.ndim - k:] + sp_out, f"spatial dims mixed by {what}")
    return lead + sp_out


_POOL = {
    1: [F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d, torch.adaptive_max_pool1d, F.lp_pool1d,
        torch.max_pool1d, torch.avg_pool1d, torch.adaptive_avg_pool1d],
    2: [F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.lp_pool2d,
        torch.max_pool2d, torch._C._nn.avg_pool2d, torch._C._nn.adaptive_avg_pool2d],
    3: [F.max_pool3d, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d, F.lp_pool3d,
        torch.max_pool3d, torch._C._nn.avg_pool3d, torch._C._nn.adaptive_avg_pool3d],
}  # fmt: skip
_POOL_MODULES = {
    1: [nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d],
    2: [nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d],
    3: [nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d, nn.LPPool3d],
}


def _make_pool(k: int) -> None:
    @register_rule(f"pool{k}d", *_POOL[k])
    def _pool(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("return_indices") or not ctx.returns_tensor:
            raise ValueError("pooling that returns indices is not described")
        return _spatial(ctx, input, k, "pooling")

    @register_module(f"pool{k}d", *_POOL_MODULES[k])
    def _pool_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
        return {"input": input, "return_indices": getattr(mod, "return_indices", False)}


for _k in (1, 2, 3):
    _make_pool(_k)


@register_rule("interpolate", F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
def _interpolate(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
    return _spatial(ctx, input, input.ndim - 2, "interpolation")


@register_module("interpolate", nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _interpolate_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input}


@register_rule("pad", F.pad)
def _pad(ctx: Ctx, input: Val, pad: Any, mode: str = "constant", value: Any = None) -> Any:
    """Padded dims change content at their ends: pinned. The others pass through."""
    n = len(pad) // 2
    out_shape = ctx.out_shape()
    padded = [input.ndim - 1 - i for i in range(n) if pad[2 * i] or pad[2 * i + 1]]
    out = list(input.axes)
    for d in padded:
        ctx.pin(input.axes[d], f"padded by {mode} pad")
        out[d] = ctx.ax.new(out_shape[d])
        ctx.pin(out[d], f"padded by {mode} pad")
    return tuple(out)


@register_rule("pixel_shuffle", F.pixel_shuffle, torch.pixel_shuffle)
def _pixel_shuffle(ctx: Ctx, input: Val, upscale_factor: int) -> Any:
    """(C*r*r, H, W) -> (C, H*r, W*r): channel = (c, r1, r2) row-major; r1, r2 land in space."""
    r = upscale_factor
    n = input.ndim
    out_shape = ctx.out_shape()
    c, r1, r2 = ctx.ax.split_product(input.axes[n - 3], [out_shape[n - 3], r, r])
    sp = ctx.fresh(out_shape[n - 2:])
    ctx.pin([r1, r2, *input.axes[n - 2:], *sp], "pixel_shuffle moves these indices into space")
    return input.axes[: n - 3] + (c,) + sp


@register_rule("pixel_unshuffle", F.pixel_unshuffle, torch.pixel_unshuffle)
def _pixel_unshuffle(ctx: Ctx, input: Val, downscale_factor: int) -> Any:
    r = downscale_factor
    n = input.ndim
    out_shape = ctx.out_shape()
    r1, r2 = ctx.ax.new(r), ctx.ax.new(r)
    c_out = ctx.ax.product([input.axes[n - 3], r1, r2])
    sp = ctx.fresh(out_shape[n - 2:])
    ctx.pin([r1, r2, *input.axes[n - 2:], *sp], "pixel_unshuffle moves space into channels")
    return input.axes[: n - 3] + (c_out,) + sp


@register_module("pixel_shuffle", nn.PixelShuffle)
def _pixel_shuffle_module(ctx: Ctx, mod: nn.PixelShuffle, fqn: str, input: Any) -> dict:
    return {"input": input, "upscale_factor": mod.upscale_factor}


@register_module("pixel_unshuffle", nn.PixelUnshuffle)
def _pixel_unshuffle_module(ctx: Ctx, mod: nn.PixelUnshuffle, fqn: str, input: Any) -> dict:
    return {"input": input, "downscale_factor": mod.downscale_factor}


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------
_STATISTICS = ("mean", "var", "std")


@register_rule("reduce", torch.mean, torch.sum, torch.amax, torch.amin, torch.prod, torch.std,
               torch.var, torch.logsumexp, torch.nansum, torch.nanmean, torch.max, torch.min,
               torch.any, torch.all, torch.argmax, torch.argmin,
               methods=("mean", "sum", "amax", "amin", "prod", "std", "var", "logsumexp", "nansum", "nanmean",
                        "max", "min", "any", "all", "argmax", "argmin"))  # fmt: skip
def _reduce(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
    """Reduced dims mix all their indices and are pinned; kept dims pass through. A mean,
    var or std with ``keepdim=True`` is a normalization statistic: approximate instead."""
    if args and isinstance(args[0], Val):  # torch.max(a, b): element-wise
        return _broadcast(ctx, [input, args[0]], ctx.out_shape())
    dim = kwargs.get("dim", kwargs.get("axis"))
    rest = list(args)
    if dim is None and rest and not isinstance(rest[0], (str, float)) and rest[0] is not None:
        dim = rest.pop(0)
    keepdim = kwargs.get("keepdim", rest[0] if rest and isinstance(rest[0], bool) else False)
    name = ctx.node.target if isinstance(ctx.node.target, str) else getattr(ctx.node.target, "_opname", None) or getattr(ctx.node.target, "__name__", "")  # aten.mean.dim -> "mean"
    zero_safe = name in ("sum", "nansum") and kwargs.get("dtype") is None
    kept = _reduced(ctx, input, _dims(dim, input.ndim), keepdim, name if name in _STATISTICS else None, zero_safe)
    return kept if ctx.returns_tensor else [kept for _ in ctx.spec]  # (values, indices)


@register_rule("cumulative", torch.cumsum, torch.cumprod, torch.logcumsumexp, torch.cummax, torch.cummin,
               *aten_ops("cumsum.default", "cumprod.default", "logcumsumexp.default", "cummax.default",
                         "cummin.default", "cumsum_.default", "cumprod_.default"),
               methods=("cumsum", "cumprod", "logcumsumexp", "cummax", "cummin", "cumsum_", "cumprod_"))  # fmt: skip
def _cumulative(ctx: Ctx, input: Val, dim: int, *args: Any, **kwargs: Any) -> Any:
    """A running reduction along ``dim``: that dim mixes its indices and is pinned; the others
    pass through (``cummax``/``cummin``: values and indices alike)."""
    ctx.pin(input.axes[_dim(dim, input.ndim)], "cumulative reduction over")
    return input.axes if ctx.returns_tensor else [input.axes for _ in ctx.spec]


@register_rule("diff", torch.diff, *aten_ops("diff.default"), methods=("diff",))
def _diff(ctx: Ctx, input: Val, n: int = 1, dim: int = -1, prepend: Any = None, append: Any = None) -> Any:
    """Differences of neighbours along ``dim``: that dim is pinned, the others pass through."""
    if prepend is not None or append is not None:
        raise ValueError("diff with prepend/append is not described")
    d = _dim(dim, input.ndim)
    new = ctx.ax.new(ctx.out_shape()[d])
    ctx.pin([input.axes[d], new], "differences along")
    return input.axes[:d] + (new,) + input.axes[d + 1 :]


def _reduced(
    ctx: Ctx, input: Val, dims: list[int], keepdim: bool, statistic: str | None, zero_safe: bool = False
) -> tuple:
    """The axes left after reducing ``dims``. A ``statistic`` (mean, var, std, norm) kept
    and broadcast back over the dim (hand-written RMSNorm/LayerNorm, GRN) changes when indices
    go, like LayerNorm's: approximate, not pinned; any other reduction pins what it mixes.

    ``zero_safe``: the reduction is unchanged by entries that are zero (a sum, a sum of
    squares, a p-norm with p >= 0). Then, where the input is provably zero on the removed
    indices in the masked model (zero-tracking, decided at the end of the analysis through
    ``ctx.defer_zero``), removing them changes nothing and the dim stays exact."""
    approx = keepdim and statistic and ctx.returns_tensor
    defer = getattr(ctx, "defer_zero", None) if zero_safe else None
    for d in dims:
        kind, reason = ("approx", f"{statistic} statistic over this dim (a normalization)") if approx else ("pin", "reduced over")
        if defer is not None and defer(input, d, kind, reason):
            continue
        if kind == "approx":
            ctx.approx(input.axes[d], reason)
        else:
            ctx.pin(input.axes[d], reason)
    return tuple(ctx.ax.new(1) if d in dims else a for d, a in enumerate(input.axes) if keepdim or d not in dims)


@register_rule("norm", torch.norm, torch.linalg.vector_norm, methods=("norm",))
def _norm(ctx: Ctx, input: Val, p: Any = None, dim: Any = None, keepdim: bool = False, *args: Any,
          ord: Any = None, dtype: Any = None, out: Any = None) -> Any:  # fmt: skip
    """A vector norm over ``dim`` (all dims by default), a reduction: reduced dims mix their
    indices and are pinned, or, with ``keepdim=True`` (a statistic broadcast back: ConvNeXt-V2's
    GRN, ``x / x.norm(dim=1, keepdim=True)``), approximate like a mean or variance."""
    if not isinstance(input, Val) or (p is not None and not isinstance(p, (int, float))):
        raise ValueError("a matrix norm ('fro', 'nuc') or a tensor p is not described")
    order = ord if ord is not None else (p if p is not None else 2)
    return _reduced(ctx, input, _dims(dim, input.ndim), keepdim, "norm", zero_safe=order >= 0)


# ------------------------------------------------------------------------------------------
# views and layout
# ------------------------------------------------------------------------------------------
@register_rule("flip", torch.flip, *[op for op in [getattr(getattr(torch.ops.aten, "flip", None), "default", None)] if op],
               methods=("flip",), zeros="moves")  # fmt: skip
def _flip(ctx: Ctx, input: Val, dims: Any) -> Any:
    """Reverses the order along ``dims``: index i goes to n - 1 - i, which pruning would change,
    so those dims are pinned (in and out); every other dim passes through. It only moves
    values (zero-tracking follows it), has no size argument to re-derive and no FLOPs."""
    ds = {_dim(d, input.ndim) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
    out = list(input.axes)
    for d in sorted(ds):
        ctx.pin(input.axes[d], "reversed by flip")
        out[d] = ctx.ax.new(input.shape[d])
        ctx.pin(out[d], "reversed by flip")
    return tuple(out)


@register_rule("reshape", torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze,
               torch.unflatten, methods=("view", "reshape", "flatten", "squeeze", "unsqueeze",
                                         "unflatten", "view_as", "reshape_as", "squeeze_", "unsqueeze_"), zeros="moves")  # fmt: skip
def _view(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
    """Any reshape, flatten, squeeze or unsqueeze: see ``_reshape``. (A flatten of C x H x W
    gives each channel its H*W columns of the next linear.)"""
    return _reshape(ctx, input, ctx.out_shape())


@register_module("reshape", nn.Flatten, nn.Unflatten)
def _view_module(ctx: Ctx, mod: nn.Module, fqn: str, input: Any) -> dict:
    return {"input": input}


@register_rule("permute", torch.permute, methods=("permute",), zeros="moves")
def _permute(ctx: Ctx, input: Val, *dims: Any) -> Any:
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return tuple(input.axes[_dim(d, input.ndim)] for d in dims)


@register_rule("transpose", torch.transpose, torch.swapaxes, torch.swapdims,
               methods=("transpose", "swapaxes", "swapdims", "transpose_"), zeros="moves")  # fmt: skip
def _transpose(ctx: Ctx, input: Val, dim0: int, dim1: int) -> Any:
    axes = list(input.axes)
    a, b = _dim(dim0, input.ndim), _dim(dim1, input.ndim)
    axes[a], axes[b] = axes[b], axes[a]
    return tuple(axes)


@register_rule("t", torch.t, methods=("t",), zeros="moves")
def _t(ctx: Ctx, input: Val) -> Any:
    return input.axes[::-1]


@register_rule("movedim", torch.movedim, torch.moveaxis, methods=("movedim", "moveaxis"), zeros="moves")
def _movedim(ctx: Ctx, input: Val, source: Any, destination: Any) -> Any:
    def listed(v: Any) -> list[int]:  # keeps the given order, unlike _dims
        return [_dim(d, input.ndim) for d in (v if isinstance(v, (list, tuple)) else [v])]

    src, dst = listed(source), listed(destination)
    order: list[int | None] = [None] * input.ndim
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(d for d in range(input.ndim) if d not in src)
    return tuple(input.axes[o if o is not None else next(rest)] for o in order)


@register_rule("expand", methods=("expand",), zeros="moves")
def _expand(ctx: Ctx, input: Val, *sizes: Any, size: Any = None) -> Any:
    """Size-1 dims broadcast to n are copies: a fresh axis, which any class may absorb (the
    size literal is re-derived on rewrite; ``x.expand(size=...)`` too)."""
    out_shape = ctx.out_shape()
    n, k = len(out_shape), input.ndim
    out = []
    for d, size in enumerate(out_shape):
        i = d - (n - k)
        out.append(input.axes[i] if i >= 0 and input.shape[i] == size else ctx.ax.new(size))
    return tuple(out)


@register_rule("broadcast_to", torch.broadcast_to, methods=("broadcast_to",), zeros="moves")
def _broadcast_to(ctx: Ctx, input: Val, size: Any) -> Any:
    return _expand(ctx, input, size)


@register_rule("repeat", torch.tile, methods=("repeat", "tile"), zeros="moves")
def _repeat(ctx: Ctx, input: Val, *sizes: Any) -> Any:
    """Tiling: out dim = (copy, index) with the copy count pinned."""
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = tuple(sizes[0])
    out_shape = ctx.out_shape()
    n, k = len(out_shape), input.ndim
    out = []
    for d, r in enumerate(sizes):
        i = d - (n - k)
        if i < 0:
            a = ctx.ax.new(out_shape[d])
            ctx.pin(a, "new dim from repeat")
        elif r == 1:
            a = input.axes[i]
        else:
            rep = ctx.ax.new(r)
            ctx.pin(rep, "repeat count")
            a = ctx.ax.product([rep, input.axes[i]])
        out.append(a)
    return tuple(out)


@register_rule("repeat_interleave", torch.repeat_interleave, methods=("repeat_interleave",), zeros="moves")
def _repeat_interleave(ctx: Ctx, input: Val, repeats: Any, dim: int | None = None, **kwargs: Any) -> Any:
    """Each index repeated r times in place: out dim = (index, copy), copy count pinned."""
    if not isinstance(repeats, int) or dim is None:
        raise ValueError("repeat_interleave with tensor repeats or no dim is not described")
    d = _dim(dim, input.ndim)
    rep = ctx.ax.new(repeats)
    ctx.pin(rep, "repeat_interleave count")
    out = list(input.axes)
    out[d] = ctx.ax.product([input.axes[d], rep])
    return tuple(out)


@register_rule("cat", torch.cat, torch.concat, torch.concatenate, zeros="concat")
def _cat(ctx: Ctx, tensors: Any, dim: int = 0) -> Any:
    """Concatenation: the output dim is the inputs' dims one after another; all other dims
    are one class."""
    vals = [t for t in tensors if isinstance(t, Val) and not (t.ndim == 1 and t.shape[0] == 0)]
    d = _dim(dim, vals[0].ndim)
    out = list(vals[0].axes)
    for v in vals[1:]:
        for i in range(len(out)):
            if i != d:
                ctx.unify(out[i], v.axes[i])
    out[d] = ctx.ax.concat([v.axes[d] for v in vals])
    return tuple(out)


@register_rule("stack", torch.stack, zeros="concat")
def _stack(ctx: Ctx, tensors: Any, dim: int = 0) -> Any:
    vals = list(tensors)
    d = _dim(dim, vals[0].ndim + 1)
    base = list(vals[0].axes)
    for v in vals[1:]:
        for a, b in zip(base, v.axes):
            ctx.unify(a, b)
    new = ctx.ax.new(len(vals))
    ctx.pin(new, "new dim from stack")
    return tuple(base[:d] + [new] + base[d:])


def _split_out(ctx: Ctx, input: Val, d: int, sizes: list[int], keep_dim: bool = True) -> list:
    pieces = ctx.ax.split_concat(input.axes[d], sizes) if len(sizes) > 1 else [input.axes[d]]
    outs = []
    for p in pieces:
        axes = list(input.axes)
        if keep_dim:
            axes[d] = p
        else:
            del axes[d]
        outs.append(tuple(axes))
    return outs


_SPLIT_SPELLINGS = {"split_size_or_sections", "split_size", "split_sizes", "chunks", "indices",
                    "sections", "indices_or_sections", "tensor_indices_or_sections"}


@register_rule("split", torch.split, torch.chunk, torch.tensor_split, torch.split_with_sizes,
               methods=("split", "chunk", "split_with_sizes", "tensor_split"), zeros="moves")  # fmt: skip
def _split(ctx: Ctx, input: Val, split: Any = None, dim: int = 0, **spelled: Any) -> Any:
    """split / chunk along any dim: the input dim is the pieces one after another. The piece
    sizes come from the example outputs, so every keyword spelling of the pieces
    (``split_size_or_sections=``, ``chunks=``, ``indices=``, ``sections=``, ...) is accepted."""
    unknown = set(spelled) - _SPLIT_SPELLINGS
    if unknown:
        raise ValueError(f"split with arguments {sorted(unknown)} is not described")
    if isinstance(split, Val) or any(isinstance(v, Val) for v in spelled.values()):
        raise ValueError("split by a tensor of indices is not described")
    d = _dim(dim, input.ndim)
    sizes = [spec.shape[d] for spec in ctx.spec]
    return _split_out(ctx, input, d, sizes)


@register_rule("unbind", torch.unbind, methods=("unbind",), zeros="moves")
def _unbind(ctx: Ctx, input: Val, dim: int = 0) -> Any:
    d = _dim(dim, input.ndim)
    return _split_out(ctx, input, d, [1] * input.shape[d], keep_dim=False)


@register_rule("narrow", torch.narrow, methods=("narrow",), zeros="moves")
def _narrow(ctx: Ctx, input: Val, dim: int, start: int, length: int) -> Any:
    d = _dim(dim, input.ndim)
    n = input.shape[d]
    start = start + n if start < 0 else start
    return _index(ctx, input, (slice(None),) * d + (slice(start, start + length),))


def _index(ctx: Ctx, input: Val, idx: Any) -> Any:
    """Basic indexing (ints, slices, None, Ellipsis) on any dim. Advanced indexing gathers
    and is not described."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (Val, list)) or (not isinstance(i, (int, slice)) and i is not None and i is not Ellipsis)
           for i in idx):  # fmt: skip
        raise ValueError("advanced (tensor or list) indexing is not described")
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if Ellipsis in idx:
        e = idx.index(Ellipsis)
        idx = idx[:e] + (slice(None),) * (input.ndim - n_real) + idx[e + 1:]
    out: list[int] = []
    d = 0
    for i in idx:
        if i is None:
            out.append(ctx.ax.new(1))
            continue
        n = input.shape[d]
        a = input.axes[d]
        if isinstance(i, int):
            k = i + n if i < 0 else i
            if n > 1:  # the offset before it is re-derived on rewrite; the index itself stays
                pieces = ctx.ax.split_concat(a, [k, 1, n - k - 1])
                ctx.pin(pieces[1], "selected by an integer index")
        else:
            start, stop, step = i.indices(n)
            if step != 1:
                ctx.pin(a, "strided slice")
                b = ctx.ax.new(len(range(start, stop, step)))
                ctx.pin(b, "strided slice")
                out.append(b)
            elif (start, stop) == (0, n):
                out.append(a)
            else:
                stop = max(stop, start)
                out.append(ctx.ax.split_concat(a, [start, stop - start, n - stop])[1])
        d += 1
    out.extend(input.axes[d:])
    return tuple(out)


@register_rule("getitem", operator.getitem, zeros="moves")
def _getitem(ctx: Ctx, a: Any, b: Any) -> Any:
    if isinstance(a, Val):
        return _index(ctx, a, b)
    return None  # tuples, lists and sizes are handled by the analysis itself


# ------------------------------------------------------------------------------------------
# metadata reads and tensor creation
# ------------------------------------------------------------------------------------------
@register_rule("meta", builtins.getattr, builtins.len, torch.numel, torch.get_device,
               methods=("size", "dim", "numel", "is_contiguous", "type", "get_device", "element_size", "nelement",
                        "item"))  # fmt: skip
def _meta(ctx: Ctx, input: Any, *args: Any) -> Any:
    """Reads sizes, dtypes or devices: no tensor result, no relation. Sizes of pruned dims
    change at run time; the rewrite re-derives shape arguments that depend on them."""
    if isinstance(input, Val) and args and args[0] in ("T", "mT"):
        return input.axes[::-1] if args[0] == "T" else input.axes[:-2] + (input.axes[-1], input.axes[-2])
    if ctx.returns_tensor:
        raise ValueError(f"getattr {args[:1]} returns a tensor")
    return None


@register_rule("assert", torch._assert)
def _assert(ctx: Ctx, condition: Any, message: Any = None) -> Any:
    """A check with no result. A condition computed from pruned sizes is frozen to its
    original value on rewrite, like every scalar that is not a shape."""
    return None


_CREATE = [torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn, torch.full]


# new_tensor(data) takes data, not sizes: it has no rule (its classes are pinned)
@register_rule("create", *_CREATE, *aten_ops("zeros.default", "ones.default", "empty.memory_format", "full.default",
                                              "rand.default", "randn.default", "scalar_tensor.default",
                                              "new_zeros.default", "new_ones.default", "new_empty.default",
                                              "new_full.default", "rand.generator", "randn.generator"),
               torch.scalar_tensor, methods=("new_zeros", "new_ones", "new_empty", "new_full"))  # fmt: skip
def _create(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
    """A new tensor from sizes: fresh axes; its size arguments are re-derived on rewrite
    (``torch.zeros(2, 3)``, ``torch.zeros((2, 3))``, ``aten.zeros([2, 3])`` and ``x.new_zeros``
    / ``aten.new_zeros(x, [2, 3])`` alike)."""
    return ctx.fresh(ctx.out_shape())



# ------------------------------------------------------------------------------------------
# library ops that symbolic_trace keeps as calls (torch.fx.wrap'ed functions)
# ------------------------------------------------------------------------------------------
def _register_torchvision() -> None:
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # torchvision is optional for the passes themselves
        return

    @register_rule("stochastic_depth", stochastic_depth)
    def _stochastic_depth(ctx: Ctx, input: Val, p: float, mode: str, training: bool = True) -> Any:
        """Drop-path: each sample (mode "batch": the whole batch) is kept or zeroed and
        rescaled as a whole, so every other dim passes through index by index."""
        return input.axes


_register_torchvision()
