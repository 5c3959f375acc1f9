"""Rules for recurrent layers (nn.LSTM, nn.GRU, nn.RNN) and for the ops that graph and
point-cloud networks are built from: top-k, gathers by a tensor index (``x[idx]``,
``index_select``, ``gather``), scatters (message aggregation: ``scatter_add_``,
``scatter_reduce_``, also in their ``torch.export`` spellings), ``arange``, and a sum over a
product with a parameter (attention scores ``(h * a).sum(-1)``), which is a contraction.

Imported from ``passes/ops.py`` after the core rules (``getitem`` and ``sum`` here are
``when=`` specializations of the core rules, so the order among content modules does not
matter for them). Each op's torch and ATen spellings, module update (new ``hidden_size`` and
re-built flat weights after slicing) and FLOP formula are registered here, with its rule.

Recurrent layers: one class ``H`` holds the hidden units of every layer and both
directions. nn.LSTM has a single ``hidden_size``, and ``h_n`` stacks the states of every
layer and direction in one tensor, so unit i of one layer and direction goes with unit i of
every other. A gate-stacked dim (``weight_ih``, ``weight_hh``, biases: ``G * H`` rows with
G = 4 for LSTM, 3 for GRU) is the row-major product (gate, unit), the gate factor pinned.
Pruning unit j is exact whatever the initial state: every weight that reads unit j's state
(column j of ``weight_hh`` and of the next layer's ``weight_ih``) is zero in the masked
model, so unit j's own state reaches nothing inside the layer; outside it, ``output``,
``h_n`` and ``c_n`` carry the class like any other activation. The price of one class: every
layer keeps the same units (nn.LSTM could not hold different counts anyway).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn

from .rules import (
    Ctx,
    Val,
    _dim,
    _getitem,
    _reduce,
    register_flops,
    register_module,
    register_module_update,
    register_rule,
)

__all__: list[str] = []

def _aten(*names: str) -> list[Any]:
    """``"scatter_add_.default"`` -> ``torch.ops.aten.scatter_add_.default`` (names this
    torch lacks are skipped): the spellings of a ``torch.export`` graph."""
    out = []
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload or "default", None)
        if op is not None:
            out.append(op)
    return out


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


# ------------------------------------------------------------------------------------------
# recurrent layers
# ------------------------------------------------------------------------------------------
@register_module("rnn", nn.LSTM, nn.GRU, nn.RNN)
def _rnn_module(ctx: Ctx, mod: nn.RNNBase, fqn: str, input: Any, hx: Any = None) -> dict:
    params = {name: ctx.param(f"{fqn}.{name}") for name in mod._flat_weights_names}
    return {"input": input, "hx": hx, "mode": mod.mode, "num_layers": mod.num_layers,
            "bidirectional": mod.bidirectional, "batch_first": mod.batch_first,
            "hidden_size": mod.hidden_size, "proj_size": getattr(mod, "proj_size", 0),
            "params": params}  # fmt: skip


@register_rule("rnn")
def _rnn(
    ctx: Ctx, input: Any, hx: Any, mode: str, num_layers: int, bidirectional: bool, batch_first: bool,
    hidden_size: int, proj_size: int, params: dict[str, Val],
) -> Any:  # fmt: skip
    """nn.LSTM / nn.GRU / nn.RNN on a padded (not packed) sequence.

    Classes: ``H`` (hidden units, every layer and direction) and, for an LSTM with
    ``proj_size``, ``P`` (projected units; the state and output have P, the cell has H).
    Layer 0's input size follows the input's last dim; layer l > 0 reads ``[P | P]``
    (bidirectional) or ``P``. The time dim is mixed by the recurrence and pinned; the batch
    dim passes through to the output and the states.

    Example:
        >>> nn.LSTM(16, 32, 2, bidirectional=True)  # weight_ih_l1: (4*H, [P|P]), P = H here
    """
    if not isinstance(input, Val):
        raise ValueError("a PackedSequence (or non-tensor) input is not described; pad the sequence instead")
    gates = _GATES[mode]
    dirs = 2 if bidirectional else 1
    suffixes = ["", "_reverse"][:dirs]
    h = ctx.ax.new(hidden_size)
    p = ctx.ax.new(proj_size) if proj_size > 0 else h
    gate = ctx.ax.new(gates)
    if gates > 1:
        ctx.pin(gate, f"gate blocks of nn.{mode}")

    def stacked() -> int:  # (gate, unit) rows of a gate-stacked weight or bias
        return ctx.ax.product([gate, h])

    layer_out = ctx.ax.concat([p] * dirs) if dirs > 1 else p
    for layer in range(num_layers):
        layer_in = input.axes[-1] if layer == 0 else layer_out
        for sfx in suffixes:
            w_ih, w_hh = params[f"weight_ih_l{layer}{sfx}"], params[f"weight_hh_l{layer}{sfx}"]
            ctx.unify(w_ih.axes[0], stacked())
            ctx.unify(w_ih.axes[1], layer_in)
            ctx.unify(w_hh.axes[0], stacked())
            ctx.unify(w_hh.axes[1], p)
            for name in (f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"):
                if name in params:
                    ctx.unify(params[name].axes[0], stacked())
            w_hr = params.get(f"weight_hr_l{layer}{sfx}")
            if w_hr is not None:
                ctx.unify(w_hr.axes[0], p)
                ctx.unify(w_hr.axes[1], h)

    batched = input.ndim == 3
    time_dim = 1 if (batched and batch_first) else 0
    ctx.pin(input.axes[time_dim], f"time steps mixed by the nn.{mode} recurrence")
    out = list(input.axes)
    out[-1] = layer_out
    state = ctx.ax.new(num_layers * dirs)
    ctx.pin(state, f"layers x directions of the nn.{mode} state")
    lead = (state, input.axes[0 if batch_first else 1]) if batched else (state,)
    h_n, c_n = lead + (p,), lead + (h,)
    given = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    for v, axes in zip(given, (h_n, c_n)):
        if isinstance(v, Val):
            for a, b in zip(v.axes, axes):
                ctx.unify(a, b)
        elif v is not None:
            raise ValueError("an initial state that is not a tensor is not described")
    return [tuple(out), [h_n, c_n]] if mode == "LSTM" else [tuple(out), h_n]


@register_module_update(nn.LSTM, nn.GRU, nn.RNN)
def _update_rnn(rw: Any, node: Any, m: Any) -> None:
    """Sizes from the sliced weights; re-collect ``_flat_weights`` (the forward reads them)."""
    gates = _GATES[m.mode]
    m.input_size = m.weight_ih_l0.shape[1]
    m.hidden_size = m.weight_ih_l0.shape[0] // gates
    if getattr(m, "proj_size", 0) > 0:
        m.proj_size = m.weight_hr_l0.shape[0]
    m._init_flat_weights()


@register_flops("rnn", getattr(torch.ops.aten, "mkldnn_rnn_layer", None))
def _mkldnn_rnn_layer_flop(input_shape: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None,
                           **kwargs: Any) -> int:  # fmt: skip
    """On CPU, nn.LSTM runs as ``aten.mkldnn_rnn_layer``, which ``torch.utils.flop_counter``
    does not count (so ``count_macs`` and ``speedup=`` targets would miss every LSTM). The
    formula is the one the flop counter gives the decomposed GRU/RNN: two matmuls per step,
    ``(G*H x in)`` and ``(G*H x H)``, each 2 FLOPs per multiply-accumulate."""
    steps = input_shape[0] * input_shape[1] if len(input_shape) == 3 else input_shape[0]
    return 2 * steps * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


# ------------------------------------------------------------------------------------------
# selection and gathers (k-nearest neighbours, neighbour features)
# ------------------------------------------------------------------------------------------
@register_rule("topk", torch.topk, *_aten("topk.default"), methods=("topk",))
def _topk(ctx: Ctx, input: Val, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
    """(values, indices) of the k largest along ``dim``: that dim is a selection over all its
    entries (pinned, in and out); every other dim passes through."""
    d = _dim(dim, input.ndim)
    ctx.pin(input.axes[d], "top-k selects along this dim")
    sel = ctx.ax.new(ctx.out_shape(0)[d])
    ctx.pin(sel, "top-k result dim")
    out = input.axes[:d] + (sel,) + input.axes[d + 1:]
    return [out, out]


@register_rule("arange", torch.arange, *_aten("arange.default", "arange.start", "arange.start_step"))
def _arange(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
    """A new 1-D tensor whose values are its positions: nothing in it may be removed (torch and
    ATen spellings alike: the values do not depend on how the sizes are spelled)."""
    out = ctx.fresh(ctx.out_shape())
    ctx.pin(out, "values of torch.arange are positions")
    return out


def _arg_spec(ctx: Ctx, position: int, element: int | None = None) -> Any:
    """The propagated spec of the fx node at ``args[position]`` (``[element]`` of a tuple)."""
    a = ctx.node.args[position]
    if element is not None and isinstance(a, tuple):
        a = a[element]
    return a.meta.get("fxprune.spec") if hasattr(a, "meta") else None


def _tensor_index(ctx: Ctx, a: Any, b: Any) -> bool:
    """``x[idx]`` with a tensor among the index elements (the core rule describes the rest)."""
    return isinstance(a, Val) and any(isinstance(e, Val) for e in (b if isinstance(b, tuple) else (b,)))


@register_rule("getitem", when=_tensor_index)
def _getitem_gather(ctx: Ctx, a: Any, b: Any) -> Any:
    """Basic indexing as in ``rules._getitem``; in addition, one integer tensor index with
    every other element a full slice (``x[idx]``, ``x[idx, :]``, ``x[:, idx]``): the indexed
    dim is gathered from (pinned), the index's dims take its place, the rest pass through."""
    idx = b if isinstance(b, tuple) else (b,)
    tensors = [i for i, e in enumerate(idx) if isinstance(e, Val)]
    if not isinstance(a, Val) or not tensors:
        return _getitem(ctx, a, b)
    if len(tensors) > 1 or any(e != slice(None) for i, e in enumerate(idx) if i != tensors[0]):
        raise ValueError("advanced indexing other than one tensor index among full slices is not described")
    index = idx[tensors[0]]
    spec = _arg_spec(ctx, 1, tensors[0] if isinstance(b, tuple) else None)
    if getattr(spec, "dtype", None) not in (torch.int64, torch.int32, torch.int16, torch.int8):
        raise ValueError("indexing by a boolean mask (or a tensor of unknown dtype) is not described")
    d = tensors[0]
    ctx.pin(a.axes[d], "gathered from by a tensor index")
    return a.axes[:d] + index.axes + a.axes[d + 1:]


@register_rule("index_select", torch.index_select, *_aten("index_select.default"), methods=("index_select",))
def _index_select(ctx: Ctx, input: Val, dim: int, index: Val) -> Any:
    """Rows picked by an index: ``dim`` is gathered from (pinned); the others pass through."""
    d = _dim(dim, input.ndim)
    ctx.pin(input.axes[d], "gathered from by index_select")
    return input.axes[:d] + (index.axes[0] if index.ndim else ctx.ax.new(1),) + input.axes[d + 1:]


@register_rule("gather", torch.gather, *_aten("gather.default"), methods=("gather",))
def _gather(ctx: Ctx, input: Val, dim: int, index: Val, *, sparse_grad: bool = False) -> Any:
    """out[..., i, ...] = input[..., index[..., i, ...], ...] along ``dim``: that dim is
    gathered from (pinned); the output follows the index (position i of the result is index
    position i). Every other dim is one class across input, index and output where the index
    spans the input there; where it is smaller, the input is only partly read: both pinned."""
    d = _dim(dim, input.ndim)
    if index.ndim != input.ndim:
        raise ValueError("gather with an index of another rank than the input is not described")
    ctx.pin(input.axes[d], "gathered from by torch.gather")
    for i in range(input.ndim):
        if i == d:
            continue
        if index.shape[i] == input.shape[i]:
            ctx.unify(input.axes[i], index.axes[i])
        else:
            ctx.pin([input.axes[i], index.axes[i]], "gather reads part of this dim")
    return index.axes


@register_rule("scatter", torch.scatter, torch.scatter_add, torch.scatter_reduce,
               *_aten("scatter.src", "scatter_.src", "scatter_add.default", "scatter_add_.default",
                      "scatter_reduce.two", "scatter_reduce_.two"),
               methods=("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_"))  # fmt: skip
def _scatter(ctx: Ctx, input: Val, dim: int, index: Val, src: Any, reduce: Any = None, **kwargs: Any) -> Any:
    """``out = input`` with ``src[..., i, ...]`` written (or added, or reduced) into position
    ``index[..., i, ...]`` along ``dim`` (message aggregation in graph networks). Along
    ``dim`` it is a scatter (pinned on every side); every other dim is element by element,
    one class across input, index, src and output. That needs index and src to span the
    input there (a smaller index is not described)."""
    d = _dim(dim, input.ndim)
    vals = [v for v in (index, src) if isinstance(v, Val)]
    if any(v.ndim != input.ndim or any(v.shape[i] != input.shape[i] for i in range(input.ndim) if i != d)
           for v in vals):  # fmt: skip
        raise ValueError("scatter with an index or src smaller than the input off the scatter dim is not described")
    ctx.pin([input.axes[d], *(v.axes[d] for v in vals)], "scattered along this dim")
    for v in vals:
        for i in range(input.ndim):
            if i != d:
                ctx.unify(input.axes[i], v.axes[i])
    return input.axes


# ------------------------------------------------------------------------------------------
# sum over a dim of a product with a parameter: a contraction (attention scores a . h)
# ------------------------------------------------------------------------------------------
_MUL = (operator.mul, torch.mul, "mul", "__mul__", "__rmul__", *_aten("mul.Tensor"))
_SUM = (torch.sum, "sum")


def _param_factor_axes(ctx: Ctx) -> list[tuple[int | None, ...]]:
    """Axes (aligned to the product's dims) of every parameter factor of the product the
    summed tensor comes straight from; empty when it is not such a product."""
    src = ctx.node.args[0] if ctx.node.args else None
    if src is None or not hasattr(src, "op") or src.op not in ("call_function", "call_method") or src.target not in _MUL:
        return []
    out_ndim = len(src.meta["fxprune.spec"].shape)
    gm = ctx.node.graph.owning_module
    found = []
    for f in src.args[:2]:
        # only an nn.Parameter is zeroed in the masked model (buffers are not)
        if hasattr(f, "op") and f.op == "get_attr" and isinstance(_attr(gm, f.target), nn.Parameter):
            v = ctx.param(f.target)
            found.append((None,) * (out_ndim - v.ndim) + v.axes)
    return found


def _attr(root: Any, target: str) -> Any:
    for part in target.split("."):
        root = getattr(root, part, None)
    return root


_SUMS = (torch.sum, "sum", *_aten("sum.dim_IntList"))


def _is_sum(ctx: Ctx, input: Any, *args: Any, **kwargs: Any) -> bool:
    return ctx.node.target in _SUMS


@register_rule("reduce", when=_is_sum)
def _sum(ctx: Ctx, input: Val, *args: Any, **kwargs: Any) -> Any:
    """``(x * w).sum(d)`` with ``w`` a parameter spanning ``d``: a contraction with a
    parameter, like a linear layer. Removing index i of ``d`` zeroes ``w``'s slice i in the
    masked model, so the summand there is zero and the sum is unchanged: exact, not pinned.
    (A non-finite ``x`` at a removed index would make ``0 * x`` non-zero; activations are
    assumed finite.) Any other sum is a reduction (``rules._reduce``: pinned)."""
    if not isinstance(input, Val) or (args and isinstance(args[0], Val)):
        return _reduce(ctx, input, *args, **kwargs)
    dim = kwargs.get("dim", args[0] if args and not isinstance(args[0], bool) else None)
    keepdim = kwargs.get("keepdim", args[1] if len(args) > 1 else False)
    if dim is None or kwargs.get("dtype") is not None:
        return _reduce(ctx, input, *args, **kwargs)
    dims = [_dim(d, input.ndim) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
    factors = _param_factor_axes(ctx)
    covered = all(
        any((x := f[d]) is not None and ctx.ax.find(x) == ctx.ax.find(input.axes[d]) for f in factors) for d in dims
    )
    if not factors or not covered:
        return _reduce(ctx, input, *args, **kwargs)
    return tuple(ctx.ax.new(1) if d in dims else a for d, a in enumerate(input.axes) if keepdim or d not in dims)

