"""ATen spellings of the core, attention and recurrent records, and the ATen-only ops.

``torch.export`` graphs call ATen overloads (``torch.ops.aten.linear.default``,
``aten.view.default``, ``aten.add.Tensor``, ...) instead of ``F.linear``, ``.view`` or
``operator.add``. This module is imported last by ``ops.py``, so every record it adds
spellings to exists:

- ``_SAME``: overloads whose arguments come in the same order as a record's rule (the torch
  function's), added to that record (``register_spellings``): the same record, so the same
  rule, rewrite hook, zero behaviour and block role. A new op lists its ATen overloads in its
  own ``register_rule`` call instead (``torch.flip``, ``torch.roll``, ``torch.topk``).
- the rules below: ops only export graphs have, whose arguments differ from every torch
  spelling (``aten.slice.Tensor(x, dim, start, end, step)``, ``aten.select.int``, the decomposed
  batch and layer norms, ``aten.convolution``, ``aten.addmm``, ``aten.sym_size.int``,
  ``aten._assert_tensor_metadata``, the grad-mode switches of an inlined ``torch.no_grad()``
  region), each a record of its own.

An overload that is in neither has no rule: the analysis pins what it touches and names it.
``tests/passes/test_parity.py`` checks that every torch spelling with a same-named ATen
overload reaches the same record.

Example:
    >>> from fxprune.passes.registry import key_of
    >>> key_of(torch.ops.aten.linear.default)
    'linear'
"""

from __future__ import annotations

from typing import Any

import torch

from .rules import (
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
    register_spellings,
)

__all__: list[str] = []

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
    "unary_zero": [
        "relu.default", "relu_.default", "gelu.default", "gelu_.default", "silu.default", "silu_.default",
        "tanh.default", "tanh_.default", "neg.default", "neg_.default", "sqrt.default", "sqrt_.default", "abs.default",
        "abs_.default", "sin.default", "erf.default", "square.default", "sign.default", "floor.default",
        "ceil.default", "round.default", "round.decimals", "trunc.default", "clone.default", "contiguous.default",
        "alias.default", "detach.default", "detach_.default", "lift_fresh_copy.default", "dropout.default",
        "feature_dropout.default", "alpha_dropout.default", "feature_alpha_dropout.default", "to.dtype",
        "to.dtype_layout", "to.device", "to.other", "to.prim_Device", "to.prim_dtype", "to.prim_other",
        "_to_copy.default", "type_as.default", "cpu.default", "cuda.default", "hardtanh.default", "hardtanh_.default",
        "hardswish.default", "hardswish_.default", "leaky_relu.default", "elu.default", "selu.default",
        "celu.default", "mish.default", "relu6.default", "hardshrink.default", "softshrink.default",
    ],
    "unary": [
        "sigmoid.default", "sigmoid_.default", "rsqrt.default", "exp.default", "exp_.default", "log.default",
        "log_.default", "cos.default", "hardsigmoid.default", "softplus.default", "log_sigmoid.default",
        "rrelu.default", "zeros_like.default", "ones_like.default", "full_like.default", "empty_like.default",
        "rand_like.default", "rand_like.generator", "randn_like.default", "randn_like.generator",
        "reciprocal.default", "logical_not.default", "bitwise_not.default", "isnan.default", "isinf.default",
        "isfinite.default", "erfc.default", "log1p.default", "expm1.default", "exp2.default", "log2.default",
        "log10.default", "frac.default", "nan_to_num.default", "requires_grad_.default", "zero_.default",
        "fill_.Scalar", "fill_.Tensor",
    ],
    "add": ["add.Tensor", "add.Scalar", "add_.Tensor", "add_.Scalar"],
    "sub": ["sub.Tensor", "sub.Scalar", "sub_.Tensor", "sub_.Scalar", "subtract.Tensor", "subtract.Scalar"],
    "rsub": ["rsub.Scalar", "rsub.Tensor"],
    "mul": ["mul.Tensor", "mul.Scalar", "mul_.Tensor", "mul_.Scalar", "multiply.Tensor", "multiply.Scalar"],
    "div": ["div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode", "div_.Tensor", "div_.Scalar",
            "div_.Tensor_mode", "div_.Scalar_mode", "divide.Tensor", "divide.Scalar", "divide.Tensor_mode",
            "divide.Scalar_mode", "true_divide.Tensor", "true_divide.Scalar"],
    "pow": ["pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "pow_.Scalar", "pow_.Tensor"],
    "elementwise": [
        "floor_divide.default", "floor_divide.Scalar", "remainder.Scalar", "remainder.Tensor",
        "remainder.Scalar_Tensor", "fmod.Scalar", "fmod.Tensor", "maximum.default", "minimum.default",
        "eq.Tensor", "eq.Scalar", "ne.Tensor", "ne.Scalar", "lt.Tensor", "lt.Scalar", "le.Tensor",
        "le.Scalar", "gt.Tensor", "gt.Scalar", "ge.Tensor", "ge.Scalar", "__and__.Tensor", "__or__.Tensor",
        "bitwise_and.Tensor", "bitwise_and.Scalar", "bitwise_and.Scalar_Tensor", "bitwise_or.Tensor",
        "bitwise_or.Scalar", "bitwise_or.Scalar_Tensor", "logical_and.default", "logical_or.default",
        "logical_xor.default", "atan2.default", "hypot.default", "fmax.default", "fmin.default",
        "masked_fill.Scalar", "masked_fill.Tensor", "masked_fill_.Scalar", "masked_fill_.Tensor",
    ],
    "clamp": ["clamp.default", "clamp.Tensor", "clamp_min.default", "clamp_max.default", "clamp_min.Tensor",
              "clamp_max.Tensor", "clamp_.default", "clamp_.Tensor", "clamp_min_.default", "clamp_min_.Tensor",
              "clamp_max_.default", "clamp_max_.Tensor", "clip.default", "clip.Tensor", "clip_.default",
              "clip_.Tensor"],
    "norm": ["linalg_vector_norm.default", "norm.ScalarOpt_dim", "norm.Scalar", "norm.ScalarOpt_dim_dtype",
             "norm.ScalarOpt_dtype"],
    "where": ["where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar", "where.default"],
    "lerp": ["lerp.Tensor", "lerp.Scalar", "addcmul.default", "addcdiv.default"],
    "prelu": ["prelu.default", "_prelu_kernel.default"],
    "conv": ["conv1d.default", "conv2d.default", "conv3d.default", "conv1d.padding", "conv2d.padding",
             "conv3d.padding"],
    "conv_transpose": ["conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input"],
    "linear": ["linear.default"],
    "matmul": ["matmul.default", "mm.default", "bmm.default"],
    "einsum": ["einsum.default"],
    "torch.batch_norm": ["batch_norm.default"],
    "torch.instance_norm": ["instance_norm.default"],
    "layer_norm": ["layer_norm.default", "rms_norm.default"],
    "group_norm": ["group_norm.default"],
    "softmax": ["softmax.int", "_softmax.default", "log_softmax.int", "_log_softmax.default"],
    "glu": ["glu.default"],
    "pad": ["pad.default"],
    "pool1d": ["adaptive_avg_pool1d.default", "avg_pool1d.default", "max_pool1d.default",
               "adaptive_max_pool1d.default"],
    "pool2d": ["adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default", "avg_pool2d.default",
               "max_pool2d.default", "adaptive_max_pool2d.default"],
    "pool3d": ["adaptive_avg_pool3d.default", "avg_pool3d.default", "max_pool3d.default",
               "adaptive_max_pool3d.default"],
    "interpolate": ["upsample_nearest1d.vec", "upsample_nearest2d.vec", "upsample_nearest3d.vec",
                    "upsample_bilinear2d.vec", "upsample_linear1d.vec", "upsample_bicubic2d.vec",
                    "upsample_trilinear3d.vec", "upsample_nearest2d.default", "upsample_bilinear2d.default"],
    "pixel_shuffle": ["pixel_shuffle.default"],
    "pixel_unshuffle": ["pixel_unshuffle.default"],
    "reduce": ["mean.dim", "mean.default", "sum.dim_IntList", "sum.default", "amax.default", "amin.default",
               "max.dim", "min.dim", "max.default", "min.default", "max.other", "min.other", "argmax.default",
               "argmin.default", "prod.dim_int", "prod.default", "logsumexp.default", "any.dim", "any.dims",
               "any.default", "all.dim", "all.dims", "all.default", "var.correction", "std.correction", "var.dim",
               "std.dim", "var.default", "std.default", "nansum.default", "nanmean.default"],
    "reshape": ["view.default", "view.dtype", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
                "unflatten.int", "squeeze.default", "squeeze.dim", "squeeze.dims", "unsqueeze.default",
                "unsqueeze_.default", "squeeze_.dim", "squeeze_.default", "squeeze_.dims", "view_as.default",
                "reshape_as.default"],
    "permute": ["permute.default"],
    "transpose": ["transpose.int", "swapaxes.default", "swapdims.default", "transpose_.default"],
    "t": ["t.default", "numpy_T.default"],
    "movedim": ["movedim.int", "movedim.intlist", "moveaxis.int", "moveaxis.intlist"],
    "expand": ["expand.default"],
    "broadcast_to": ["broadcast_to.default"],
    "expand_as": ["expand_as.default"],
    "repeat": ["repeat.default", "tile.default"],
    "repeat_interleave": ["repeat_interleave.self_int", "repeat_interleave.self_Tensor"],
    "cat": ["cat.default", "concat.default", "concatenate.default"],
    "stack": ["stack.default"],
    "split": ["split.Tensor", "split.default", "split.sizes", "split_with_sizes.default", "chunk.default",
              "tensor_split.sections", "tensor_split.indices", "tensor_split.tensor_indices_or_sections"],
    "unbind": ["unbind.int"],
    "narrow": ["narrow.default"],
    "sdpa": ["scaled_dot_product_attention.default"],
    "meta": ["sym_size.int", "sym_numel.default", "dim.default", "size.int", "size.default", "item.default",
             "_local_scalar_dense.default", "numel.default", "element_size.default", "get_device.default",
             "is_contiguous.default", "is_contiguous.memory_format", "len.Tensor"],
    "scatter": ["scatter.value", "scatter.reduce", "scatter.value_reduce", "scatter_.value", "scatter_.reduce",
                "scatter_.value_reduce"],
}  # fmt: skip

for _key, _names in _SAME.items():
    register_spellings(_key, *_ops(*_names))


def _register(key: str, *names: str, zeros: str | None = None) -> Any:
    """``register_rule`` for ATen overloads given by name (those this torch has)."""
    ops = _ops(*names)

    def deco(fn: Any) -> Any:
        return register_rule(key, *ops, zeros=zeros)(fn)

    return deco


# ------------------------------------------------------------------------------------------
# overloads whose arguments differ from the torch function's
# ------------------------------------------------------------------------------------------
@register_rule("torch.embedding", torch.embedding, *_ops("embedding.default"))
def _aten_embedding(ctx: Ctx, weight: Val, indices: Val, *args: Any) -> Any:
    """``torch.embedding(weight, indices, ...)`` (ATen's order): F.embedding with the operands
    swapped."""
    return _embedding(ctx, indices, weight)


@_register("aten.slice", "slice.Tensor", zeros="moves")
def _aten_slice(ctx: Ctx, input: Val, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Any:
    """``x[..., start:end:step]`` on ``dim`` (``end`` may be 2**63 - 1 for "to the end")."""
    d = _dim(dim, input.ndim)
    return _index(ctx, input, (slice(None),) * d + (slice(start, end, step),))


@register_rule("aten.select", torch.select, *_ops("select.int"), methods=("select",), zeros="moves")
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


@register_rule("aten.batch_norm_tuple", torch.native_batch_norm, *_ops("_native_batch_norm_legit_no_training.default",
           "_native_batch_norm_legit_functional.default", "native_batch_norm.default"), zeros="batch_norm")  # fmt: skip
def _aten_native_batch_norm(ctx: Ctx, input: Val, weight: Any = None, bias: Any = None, running_mean: Any = None,
                            running_var: Any = None, *args: Any) -> Any:  # fmt: skip
    """The decomposed batch norms return (out, saved statistics...): the out follows the
    input; the statistics are per channel (or empty in eval mode)."""
    training = bool(args[0]) if args and "no_training" not in str(ctx.node.target) else False
    out = _batch_norm(ctx, input, running_mean, running_var, weight, bias, training=training)
    rest: list[Any] = []
    c = input.axes[1] if input.ndim > 1 else input.axes[0]
    for spec in ctx.spec[1:]:
        shape = tuple(spec.shape)
        if shape == (input.shape[1 if input.ndim > 1 else 0],):
            rest.append((c,))
        else:
            rest.append(ctx.fresh(shape))
    return [out, *rest]


@register_rule("aten.native_layer_norm", torch.native_layer_norm, *_ops("native_layer_norm.default"))
def _aten_native_layer_norm(ctx: Ctx, input: Val, normalized_shape: Any, weight: Any = None, bias: Any = None,
                            eps: Any = None) -> Any:  # fmt: skip
    """``native_layer_norm`` returns (out, mean, rstd); the statistics have size 1 in the
    normalized dims and follow the input elsewhere."""
    out = _layer_norm(ctx, input, normalized_shape, weight, bias, eps)
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    lead = input.axes[: input.ndim - k]
    stats = [lead + ctx.fresh((1,) * k) for _ in ctx.spec[1:]]
    return [out, *stats]


@register_rule("aten.convolution", torch.convolution, *_ops("convolution.default"))
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
    if v.param is None and src is not None and getattr(src, "op", None) == "get_attr" and v.ndim == 2:
        return Val(v.axes, v.shape, src.target)
    return v


@register_rule("aten.addmm", torch.addmm, *_ops("addmm.default"), methods=("addmm",))
def _aten_addmm(ctx: Ctx, input: Any, mat1: Val, mat2: Val, *, beta: Any = 1, alpha: Any = 1) -> Any:
    """``beta * input + alpha * mat1 @ mat2`` (a decomposed linear has ``mat2 = W.t()``)."""
    prod = _matmul(ctx, _weight_view(ctx, 1, mat1), _weight_view(ctx, 2, mat2))
    return _broadcast(ctx, [input, Val(prod, ctx.out_shape())], ctx.out_shape())


@register_rule("aten.constant_pad_nd", torch.constant_pad_nd, *_ops("constant_pad_nd.default"))
def _aten_constant_pad_nd(ctx: Ctx, input: Val, pad: Any, value: Any = 0) -> Any:
    return _pad(ctx, input, pad, "constant", value)


# ------------------------------------------------------------------------------------------
# checks and grad-mode switches: no tensor result, no relation
# ------------------------------------------------------------------------------------------
@register_rule("aten.assert", torch.sym_constrain_range, torch.sym_constrain_range_for_size,
               *_ops("_assert_tensor_metadata.default", "_assert_scalar.default", "_assert_async.msg",
                     "_assert_async.default", "sym_constrain_range_for_size.default", "sym_constrain_range.default"))  # fmt: skip
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
