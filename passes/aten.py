"""ATen spellings: the ops of a ``torch.export`` graph, mapped onto the rules of ``rules.py``.

``torch.export`` graphs call ATen overloads (``torch.ops.aten.linear.default``,
``aten.view.default``, ``aten.add.Tensor``, ...) instead of ``F.linear``, ``.view`` or
``operator.add``. Each overload is mapped here, in one place, to the canonical key of the
rule table:

- ``_SAME``: overloads whose arguments come in the same order as the rule's (the torch
  function's), so the rule binds them as they are.
- the rules below: overloads whose arguments differ (``aten.embedding(weight, indices)``,
  ``aten.slice.Tensor(x, dim, start, end, step)``, ``aten.batch_norm(x, weight, bias, mean,
  var, ...)``, ...), or ops only export graphs have (``aten.sym_size.int``,
  ``aten._assert_tensor_metadata``, ``aten.arange``, the grad-mode switches of an inlined
  ``torch.no_grad()`` region). Their size literals are re-derived by the hooks of the same
  keys in ``rewrite.py``.

An overload that is in neither has no rule: the analysis pins what it touches and names it.

Example:
    >>> from fxprune.passes.rules import _FUNCS
    >>> _FUNCS[torch.ops.aten.linear.default]
    'linear'
"""

from __future__ import annotations

from typing import Any

import torch

from .rules import (
    _FUNCS,
    Ctx,
    Val,
    _batch_norm,
    _broadcast,
    _conv,
    _dim,
    _embedding,
    _index,
    _layer_norm,
    _matmul,
    _pad,
    register_module,
    register_rule,
)

__all__ = ["ALIASES"]

aten = torch.ops.aten


def _ops(*names: str) -> list[Any]:
    """``"view.default"`` -> ``torch.ops.aten.view.default``; names this torch lacks are skipped."""
    out = []
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(aten, packet, None), overload or "default", None)
        if op is not None:
            out.append(op)
    return out


#: canonical rule key -> ATen overloads whose arguments bind to that rule as they are
_SAME: dict[str, list[str]] = {
    "unary": [
        "relu.default", "relu_.default", "gelu.default", "gelu_.default", "silu.default", "silu_.default",
        "sigmoid.default", "tanh.default", "neg.default", "rsqrt.default", "sqrt.default", "exp.default",
        "log.default", "abs.default", "cos.default", "sin.default", "erf.default", "clone.default",
        "contiguous.default", "alias.default", "detach.default", "detach_.default", "lift_fresh_copy.default",
        "dropout.default", "feature_dropout.default", "alpha_dropout.default", "to.dtype", "to.dtype_layout",
        "to.device", "to.other", "_to_copy.default", "type_as.default", "hardtanh.default", "hardtanh_.default",
        "hardswish.default", "hardswish_.default", "hardsigmoid.default", "leaky_relu.default", "elu.default",
        "mish.default", "softplus.default", "relu6.default", "zeros_like.default", "ones_like.default", "full_like.default",
        "empty_like.default", "square.default", "reciprocal.default", "sign.default", "logical_not.default",
        "bitwise_not.default", "isnan.default", "erfc.default", "log1p.default", "expm1.default",
        "tanh_.default", "sigmoid_.default", "exp2.default",
    ],
    "elementwise": [
        "add.Tensor", "add.Scalar", "add_.Tensor", "sub.Tensor", "sub.Scalar", "rsub.Scalar", "rsub.Tensor",
        "mul.Tensor", "mul.Scalar", "mul_.Tensor", "div.Tensor", "div.Scalar", "div.Tensor_mode",
        "div_.Tensor", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "floor_divide.default",
        "remainder.Scalar", "remainder.Tensor", "fmod.Scalar", "maximum.default", "minimum.default",
        "eq.Tensor", "eq.Scalar", "ne.Tensor", "ne.Scalar", "lt.Tensor", "lt.Scalar", "le.Tensor",
        "le.Scalar", "gt.Tensor", "gt.Scalar", "ge.Tensor", "ge.Scalar", "__and__.Tensor", "__or__.Tensor",
        "bitwise_and.Tensor", "bitwise_or.Tensor", "logical_and.default", "logical_or.default",
        "masked_fill.Scalar", "masked_fill.Tensor", "masked_fill_.Scalar",
    ],
    "clamp": ["clamp.default", "clamp.Tensor", "clamp_min.default", "clamp_max.default", "clamp_min.Tensor",
              "clamp_max.Tensor", "clamp_.default", "clip.default"],
    "norm": ["linalg_vector_norm.default", "norm.ScalarOpt_dim", "norm.Scalar"],
    "where": ["where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar"],
    "lerp": ["lerp.Tensor", "lerp.Scalar", "addcmul.default", "addcdiv.default"],
    "prelu": ["prelu.default", "_prelu_kernel.default"],
    "conv": ["conv1d.default", "conv2d.default", "conv3d.default"],
    "conv_transpose": ["conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input"],
    "linear": ["linear.default"],
    "matmul": ["matmul.default", "mm.default", "bmm.default"],
    "einsum": ["einsum.default"],
    "layer_norm": ["layer_norm.default", "rms_norm.default"],
    "group_norm": ["group_norm.default"],
    "softmax": ["softmax.int", "_softmax.default", "log_softmax.int", "_log_softmax.default"],
    "glu": ["glu.default"],
    "pool1d": ["adaptive_avg_pool1d.default", "avg_pool1d.default", "max_pool1d.default"],
    "pool2d": ["adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default", "avg_pool2d.default",
               "max_pool2d.default", "adaptive_max_pool2d.default"],
    "pool3d": ["adaptive_avg_pool3d.default", "avg_pool3d.default", "max_pool3d.default"],
    "interpolate": ["upsample_nearest1d.vec", "upsample_nearest2d.vec", "upsample_nearest3d.vec",
                    "upsample_bilinear2d.vec", "upsample_linear1d.vec", "upsample_bicubic2d.vec",
                    "upsample_trilinear3d.vec", "upsample_nearest2d.default", "upsample_bilinear2d.default"],
    "pixel_shuffle": ["pixel_shuffle.default"],
    "pixel_unshuffle": ["pixel_unshuffle.default"],
    "reduce": ["mean.dim", "mean.default", "sum.dim_IntList", "sum.default", "amax.default", "amin.default",
               "max.dim", "min.dim", "max.default", "min.default", "argmax.default", "argmin.default",
               "prod.dim_int", "logsumexp.default", "any.dim", "any.dims", "all.dim", "var.correction",
               "std.correction", "var.dim", "std.dim", "nansum.default"],
    "reshape": ["view.default", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
                "unflatten.int", "squeeze.default", "squeeze.dim", "squeeze.dims", "unsqueeze.default",
                "unsqueeze_.default", "squeeze_.dim", "view_as.default", "reshape_as.default"],
    "permute": ["permute.default"],
    "transpose": ["transpose.int", "swapaxes.default", "swapdims.default", "transpose_.default"],
    "t": ["t.default", "numpy_T.default"],
    "movedim": ["movedim.int", "movedim.intlist", "moveaxis.int"],
    "expand": ["expand.default", "broadcast_to.default", "expand_as.default"],
    "repeat": ["repeat.default"],
    "repeat_interleave": ["repeat_interleave.self_int"],
    "cat": ["cat.default", "concat.default", "concatenate.default"],
    "stack": ["stack.default"],
    "split": ["split.Tensor", "split_with_sizes.default", "chunk.default", "tensor_split.sections"],
    "unbind": ["unbind.int"],
    "narrow": ["narrow.default"],
    # the rule is in rules_attention.py (imported after this file): a key without a rule
    # pins what the op touches, like a missing spelling
    "sdpa": ["scaled_dot_product_attention.default"],
    "meta": ["sym_size.int", "sym_numel.default", "dim.default", "size.int", "item.default",
             "_local_scalar_dense.default"],
}  # fmt: skip

#: every mapped overload -> its rule key (filled below, and by the rules of this file)
ALIASES: dict[Any, str] = {}

for _key, _names in _SAME.items():
    for _op in _ops(*_names):
        _FUNCS[_op] = _key
        ALIASES[_op] = _key


def _register(key: str, *names: str) -> Any:
    """``register_rule`` for ATen overloads given by name (those this torch has)."""
    ops = _ops(*names)

    def deco(fn: Any) -> Any:
        register_rule(key, *ops)(fn)
        for op in ops:
            ALIASES[op] = key
        return fn

    return deco


# ------------------------------------------------------------------------------------------
# overloads whose arguments differ from the torch function's
# ------------------------------------------------------------------------------------------
@_register("aten.embedding", "embedding.default")
def _aten_embedding(ctx: Ctx, weight: Val, indices: Val, *args: Any) -> Any:
    """``aten.embedding(weight, indices, ...)``: F.embedding with the operands swapped."""
    return _embedding(ctx, indices, weight)


@_register("aten.slice", "slice.Tensor")
def _aten_slice(ctx: Ctx, input: Val, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Any:
    """``x[..., start:end:step]`` on ``dim`` (``end`` may be 2**63 - 1 for "to the end")."""
    d = _dim(dim, input.ndim)
    return _index(ctx, input, (slice(None),) * d + (slice(start, end, step),))


@_register("aten.select", "select.int")
def _aten_select(ctx: Ctx, input: Val, dim: int, index: int) -> Any:
    """``x[..., index]`` on ``dim``: that dim goes away; the selected index is pinned."""
    d = _dim(dim, input.ndim)
    return _index(ctx, input, (slice(None),) * d + (index,))


@_register("aten.index", "index.Tensor")
def _aten_index(ctx: Ctx, input: Val, indices: Any) -> Any:
    """``x[i0, i1, ...]`` with index tensors on the leading dims (a gather): the indexed dims
    and the broadcast index dims are pinned; the trailing dims pass through."""
    idx = list(indices)
    if not idx or any(i is None or not isinstance(i, Val) for i in idx):
        raise ValueError("index.Tensor with None (skipped) dims or non-tensor indices is not described")
    out_shape = ctx.out_shape()
    k = len(idx)
    lead = ctx.fresh(out_shape[: len(out_shape) - (input.ndim - k)])
    ctx.pin(list(input.axes[:k]) + list(lead), "gathered by an index tensor")
    for i in idx:
        ctx.pin(i.axes, "used as an index")
    return lead + input.axes[k:]


@_register("aten.index_select", "index_select.default")
def _aten_index_select(ctx: Ctx, input: Val, dim: int, index: Val) -> Any:
    """``x.index_select(dim, index)``: a gather along ``dim``, pinned on both sides."""
    d = _dim(dim, input.ndim)
    new = ctx.ax.new(ctx.out_shape()[d])
    ctx.pin([input.axes[d], new, *index.axes], "gathered by index_select")
    return input.axes[:d] + (new,) + input.axes[d + 1 :]


@_register("aten.batch_norm", "batch_norm.default")
def _aten_batch_norm(ctx: Ctx, input: Val, weight: Any = None, bias: Any = None, running_mean: Any = None,
                     running_var: Any = None, *args: Any) -> Any:  # fmt: skip
    """``aten.batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)``."""
    return _batch_norm(ctx, input, running_mean, running_var, weight, bias, training=bool(args[0]) if args else False)


@_register("aten.batch_norm_tuple", "_native_batch_norm_legit_no_training.default",
           "_native_batch_norm_legit_functional.default", "native_batch_norm.default")  # fmt: skip
def _aten_native_batch_norm(ctx: Ctx, input: Val, weight: Any = None, bias: Any = None, running_mean: Any = None,
                            running_var: Any = None, *args: Any) -> Any:  # fmt: skip
    """The decomposed batch norms return (out, saved statistics...): the out follows the
    input; the statistics are per channel (or empty in eval mode)."""
    training = bool(args[0]) if args and "no_training" not in str(ctx.node.target) else False
    out = _batch_norm(ctx, input, running_mean, running_var, weight, bias, training=training)
    rest = []
    c = input.axes[1] if input.ndim > 1 else input.axes[0]
    for spec in ctx.spec[1:]:
        shape = tuple(spec.shape)
        if shape == (input.shape[1 if input.ndim > 1 else 0],):
            rest.append((c,))
        else:
            rest.append(ctx.fresh(shape))
    return [out, *rest]


@_register("aten.native_layer_norm", "native_layer_norm.default")
def _aten_native_layer_norm(ctx: Ctx, input: Val, normalized_shape: Any, weight: Any = None, bias: Any = None,
                            eps: Any = None) -> Any:  # fmt: skip
    """``native_layer_norm`` returns (out, mean, rstd); the statistics have size 1 in the
    normalized dims and follow the input elsewhere."""
    out = _layer_norm(ctx, input, normalized_shape, weight, bias, eps)
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    lead = input.axes[: input.ndim - k]
    stats = [lead + ctx.fresh((1,) * k) for _ in ctx.spec[1:]]
    return [out, *stats]


@_register("aten.convolution", "convolution.default")
def _aten_convolution(ctx: Ctx, input: Val, weight: Val, bias: Any, stride: Any, padding: Any, dilation: Any,
                      transposed: bool, output_padding: Any, groups: int) -> Any:  # fmt: skip
    """``aten.convolution(..., transposed, output_padding, groups)``: groups is the 9th argument."""
    return _conv(ctx, input, weight, bias, groups=groups, transposed=transposed)


_TRANSPOSES = tuple(_ops("t.default", "permute.default", "transpose.int", "numpy_T.default"))


def _weight_view(ctx: Ctx, i: int, v: Val) -> Val:
    """``v`` (argument ``i`` of the node), marked as a parameter when it is a transpose of a
    get_attr (a decomposed linear's ``W.t()``): its removed slices are the parameter's, zeroed
    in the masked model, so contracting with it is exact."""
    arg = ctx.node.args[i] if i < len(ctx.node.args) else None
    src = getattr(arg, "args", (None,))[0] if getattr(arg, "target", None) in _TRANSPOSES else None
    if v.param is None and getattr(src, "op", None) == "get_attr" and v.ndim == 2:
        return Val(v.axes, v.shape, src.target)
    return v


@_register("aten.addmm", "addmm.default")
def _aten_addmm(ctx: Ctx, input: Any, mat1: Val, mat2: Val, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * mat1 @ mat2`` (a decomposed linear has ``mat2 = W.t()``)."""
    prod = _matmul(ctx, _weight_view(ctx, 1, mat1), _weight_view(ctx, 2, mat2))
    return _broadcast(ctx, [input, Val(prod, ctx.out_shape())], ctx.out_shape())


@_register("aten.constant_pad_nd", "constant_pad_nd.default")
def _aten_constant_pad_nd(ctx: Ctx, input: Val, pad: Any, value: Any = 0) -> Any:
    return _pad(ctx, input, pad, "constant", value)


@_register("aten.cumsum", "cumsum.default", "cumprod.default", "logcumsumexp.default", "cummax.default",
           "cummin.default")  # fmt: skip
def _aten_cumulative(ctx: Ctx, input: Val, dim: int, *args: Any, **kwargs: Any) -> Any:
    """A running reduction along ``dim``: that dim mixes its indices and is pinned."""
    ctx.pin(input.axes[_dim(dim, input.ndim)], "cumulative reduction over")
    return input.axes if ctx.returns_tensor else [input.axes for _ in ctx.spec]


@_register("aten.diff", "diff.default")
def _aten_diff(ctx: Ctx, input: Val, n: int = 1, dim: int = -1, *args: Any) -> Any:
    """Differences of neighbours along ``dim``: that dim is pinned, the others pass through."""
    d = _dim(dim, input.ndim)
    new = ctx.ax.new(ctx.out_shape()[d])
    ctx.pin([input.axes[d], new], "differences along")
    return input.axes[:d] + (new,) + input.axes[d + 1 :]


# ------------------------------------------------------------------------------------------
# tensor creation: fresh axes (sizes re-derived on rewrite), or positions (pinned)
# ------------------------------------------------------------------------------------------
@_register("aten.create", "zeros.default", "ones.default", "empty.memory_format", "full.default",
           "rand.default", "randn.default", "scalar_tensor.default")  # fmt: skip
def _aten_create(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
    """A new tensor from a size list (the first argument): fresh axes."""
    return ctx.fresh(ctx.out_shape())


@_register(
    "aten.new_create", "new_zeros.default", "new_ones.default", "new_empty.default", "new_full.default"
)
def _aten_new_create(ctx: Ctx, input: Any, *args: Any, **kwargs: Any) -> Any:
    """``x.new_*(size, ...)``: fresh axes; the size list is the second argument."""
    return ctx.fresh(ctx.out_shape())


@_register("aten.arange", "arange.default", "arange.start", "arange.start_step")
def _aten_arange(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
    """The values are the positions themselves: pruning would renumber them, so pinned."""
    out = ctx.fresh(ctx.out_shape())
    ctx.pin(out, "arange: values are positions")
    return out


# ------------------------------------------------------------------------------------------
# checks and grad-mode switches: no tensor result, no relation
# ------------------------------------------------------------------------------------------
@_register("aten.assert", "_assert_tensor_metadata.default", "_assert_scalar.default", "_assert_async.msg",
           "_assert_async.default", "sym_constrain_range_for_size.default", "sym_constrain_range.default")  # fmt: skip
def _aten_assert(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
    """Checks of dtypes, devices and (symbolic) sizes. Size arguments of
    ``_assert_tensor_metadata`` are dropped on rewrite, since pruned sizes change."""
    return None


@register_rule("grad_mode", torch.is_grad_enabled, torch._C._set_grad_enabled)
def _grad_mode(ctx: Ctx, *args: Any) -> Any:
    """``torch.is_grad_enabled()`` / ``torch._C._set_grad_enabled(mode)``: the bounds of an
    inlined ``torch.no_grad()`` region (see ``fxprune.capture``)."""
    return None


def _register_guards() -> None:
    """The input-shape guards of an unlifted ``ExportedProgram`` (``_guards_fn``): a check."""
    try:
        from torch.export._unlift import GuardsFn
    except ImportError:  # older torch: no guards module
        return

    @register_module("aten.assert", GuardsFn)
    def _guards(ctx: Ctx, mod: Any, fqn: str, *args: Any, **kwargs: Any) -> dict:
        return {}


_register_guards()


@_register("aten.gather", "gather.default")
def _aten_gather(ctx: Ctx, input: Val, dim: int, index: Val, *args: Any, **kwargs: Any) -> Any:
    """``out[..., j, ...] = input[..., index[..., j, ...], ...]`` along ``dim``: that dim is
    pinned on every side. The other dims are positional: the output follows ``index`` there,
    and ``input`` where it has the same size (a larger input dim is only partly read: pinned)."""
    d = _dim(dim, input.ndim)
    ctx.pin([input.axes[d], index.axes[d]], "gathered along (gather)")
    for k in range(input.ndim):
        if k == d:
            continue
        if input.shape[k] == index.shape[k]:
            ctx.unify(input.axes[k], index.axes[k])
        else:
            ctx.pin([input.axes[k], index.axes[k]], "gather reads part of this dim")
    return index.axes


# ------------------------------------------------------------------------------------------
# for passes that match torch-level targets (zeros.py): the torch function each ATen
# overload stands for, where the arguments those passes read sit in the same positions
# ------------------------------------------------------------------------------------------
def _torch_equivalents() -> dict[Any, Any]:
    import torch.nn.functional as F

    table: dict[Any, Any] = {}

    def put(target: Any, *names: str) -> None:
        for op in _ops(*names):
            table[op] = target

    # data movement and zero-preserving element-wise ops: the result is zero where input 0 is
    put(torch.clone, "view.default", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
        "unflatten.int", "squeeze.default", "squeeze.dim", "squeeze.dims", "unsqueeze.default", "permute.default",
        "transpose.int", "t.default", "contiguous.default", "expand.default", "repeat.default",
        "repeat_interleave.self_int", "movedim.int", "narrow.default", "unbind.int", "split.Tensor",
        "split_with_sizes.default", "chunk.default", "clone.default", "detach.default", "alias.default",
        "to.dtype", "to.dtype_layout", "to.device", "_to_copy.default", "slice.Tensor", "select.int",
        "dropout.default", "lift_fresh_copy.default", "relu.default", "gelu.default", "silu.default",
        "tanh.default", "neg.default", "abs.default", "square.default", "sqrt.default", "sin.default",
        "erf.default", "sign.default", "hardtanh.default", "leaky_relu.default", "elu.default", "mish.default",
        "hardswish.default")  # fmt: skip
    put(torch.mul, "mul.Tensor", "mul.Scalar")
    put(torch.div, "div.Tensor", "div.Scalar")
    put(torch.pow, "pow.Tensor_Scalar")
    put(torch.add, "add.Tensor", "add.Scalar", "sub.Tensor", "sub.Scalar")
    put(torch.cat, "cat.default")
    put(F.linear, "linear.default")
    put(torch.conv1d, "conv1d.default")
    put(torch.conv2d, "conv2d.default")
    put(torch.conv3d, "conv3d.default")
    put(torch.matmul, "matmul.default", "mm.default", "bmm.default")
    put(F.scaled_dot_product_attention, "scaled_dot_product_attention.default")
    return table


#: ATen overload -> the torch function of the same meaning and argument positions (aten
#: ops whose arguments differ, e.g. ``aten.embedding(weight, indices)``, are left out)
TORCH_EQUIVALENT: dict[Any, Any] = _torch_equivalents()
