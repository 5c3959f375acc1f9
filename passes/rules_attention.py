"""Attention rules: ``scaled_dot_product_attention``, ``nn.MultiheadAttention``, ``torch.roll``,
and the functions torchvision's Swin keeps as leaves (``torch.fx.wrap``).

Every rule states what the op does with heads and channels; none is keyed on a model.

- The head index is a batch dim of the attention matmuls: it is unified, never contracted, so
  whole heads prune exactly. Each rule records it as ``"heads"`` (``Ctx.record``) so the
  planner can tell heads from head_dim (``make_plan(heads=...)``).
- head_dim is contracted between q and k. ``_contract`` defers the exactness question to the
  zero-tracking in ``passes/zeros.py``: exact when q or k is provably zero on the removed
  indices in the masked model (both come from linear layers whose rows are zeroed).
- A rewrite that changes head_dim keeps the original softmax scale (an explicit ``scale=``),
  so the pruned model equals the masked original.

Imported from ``passes/ops.py``, after the core rules; its rewrite hooks, module updates and FLOP
formulas are facets of the same records, registered here.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .rules import (
    Ctx,
    Val,
    _broadcast,
    _contract,
    _dim,
    _tie,
    register_flops,
    register_module,
    register_module_update,
    register_rewrite,
    register_rule,
)

__all__: list[str] = []


# ------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ------------------------------------------------------------------------------------------
def _attention_core(ctx: Ctx, q: Val, k: Val, v: Val, mask: Any, enable_gqa: bool = False) -> tuple[int, ...]:
    """q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev).

    Batch dims (batch, heads) are one class across q, k, v and the output; E is contracted
    between q and k; S is the keys (softmax normalizes over it: approximate); Ev passes
    through. With grouped-query attention (``enable_gqa``) q's head dim is (kv heads, copies).
    """
    _contract(ctx, q, -1, k, -1)
    ctx.unify(k.axes[-2], v.axes[-2])
    ctx.approx(k.axes[-2], "softmax over the keys of an attention")
    qb, kb, vb = list(q.axes[:-2]), list(k.axes[:-2]), list(v.axes[:-2])
    qs = list(q.shape[:-2])
    if enable_gqa and len(qb) >= 1 and q.shape[-3] != k.shape[-3]:
        hkv, rep = k.shape[-3], q.shape[-3] // k.shape[-3]
        g, _ = ctx.ax.split_product(qb[-1], [hkv, rep])
        ctx.unify(g, kb[-1])
        ctx.unify(g, vb[-1])
        kb, vb = kb[:-1], vb[:-1]
        batch_q = _broadcast(ctx, [Val(tuple(qb[:-1]), tuple(qs[:-1])), Val(tuple(kb), k.shape[:-3]),
                                   Val(tuple(vb), v.shape[:-3])], tuple(ctx.out_shape()[:-3]))  # fmt: skip
        batch = batch_q + (qb[-1],)
    else:
        batch = _broadcast(ctx, [Val(tuple(qb), tuple(qs)), Val(tuple(kb), k.shape[:-2]), Val(tuple(vb), v.shape[:-2])],
                           tuple(ctx.out_shape()[:-2]))  # fmt: skip
    if isinstance(mask, Val):  # broadcast against the scores (..., L, S)
        scores = Val(batch + (q.axes[-2], k.axes[-2]), tuple(ctx.out_shape()[:-2]) + (q.shape[-2], k.shape[-2]))
        _broadcast(ctx, [mask, scores], scores.shape)
    if len(batch) >= 1:
        ctx.record("heads", batch[-1])
    ctx.record("head_dim", q.axes[-1])
    return batch + (q.axes[-2], v.axes[-1])


@register_rule("sdpa", F.scaled_dot_product_attention, zeros="attention")
def _sdpa(
    ctx: Ctx, query: Val, key: Val, value: Val, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: Any = False, scale: Any = None, enable_gqa: bool = False,
) -> Any:  # fmt: skip
    """F.scaled_dot_product_attention: see ``_attention_core``. Without ``scale`` the op uses
    1/sqrt(E); the rewrite passes the original value explicitly when E is pruned."""
    return _attention_core(ctx, query, key, value, attn_mask, enable_gqa)


def _register_sdpa_rewrite() -> None:
    @register_rewrite("sdpa")
    def _rw_sdpa(rw: Any, node: fx.Node, args: tuple, kwargs: dict, graph: fx.Graph, taint: set) -> Any:
        q = node.args[0] if node.args else node.kwargs["query"]
        if not rw.changed(q)[-1]:
            return None
        if (len(node.args) > 6 and node.args[6] is not None) or node.kwargs.get("scale") is not None:
            return None  # an explicit scale is a constant (or frozen, if computed from sizes)
        e = rw.old_shape(q)[-1]
        value = 1.0 / math.sqrt(e)
        if len(args) > 6:
            return None, tuple(args[:6]) + (value,) + tuple(args[7:]), kwargs
        return None, tuple(args), dict(kwargs, scale=value)


# ------------------------------------------------------------------------------------------
# nn.MultiheadAttention (and fxprune.modules.PrunedMultiheadAttention)
# ------------------------------------------------------------------------------------------
def _mha(
    ctx: Ctx, mod: Any, fqn: str, query: Val, key: Val, value: Val, key_padding_mask: Any = None,
    need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True, is_causal: bool = False,
) -> dict:  # fmt: skip
    """Packed in-projection: ``in_proj_weight`` (3 * H * D, E) rows are (q|k|v, head, offset),
    ``out_proj.weight`` (E_out, H * D) columns are (head, offset). The residual dim E is the
    input's last dim; heads H and head_dim D are classes of their own. The q/k/v block index
    keeps all three blocks."""
    if getattr(mod, "in_proj_weight", None) is None:
        raise ValueError("nn.MultiheadAttention with separate q/k/v weights (kdim/vdim) is not described")
    if getattr(mod, "bias_k", None) is not None or getattr(mod, "add_zero_attn", False):
        raise ValueError("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is not described")
    w = ctx.param(f"{fqn}.in_proj_weight")
    b = ctx.param(f"{fqn}.in_proj_bias") if getattr(mod, "in_proj_bias", None) is not None else None
    ow = ctx.param(f"{fqn}.out_proj.weight")
    ob = ctx.param(f"{fqn}.out_proj.bias") if mod.out_proj.bias is not None else None
    result = _mha_core(ctx, mod.num_heads, mod.head_dim, w, b, ow, ob, query, key, value, key_padding_mask,
                       attn_mask, average_attn_weights, bool(getattr(mod, "batch_first", False)))  # fmt: skip
    return {"result": result}


@register_rule("mha_functional", F.multi_head_attention_forward)
def _mha_functional(
    ctx: Ctx, query: Val, key: Val, value: Val, embed_dim_to_check: int, num_heads: int, in_proj_weight: Any,
    in_proj_bias: Any, bias_k: Any, bias_v: Any, add_zero_attn: bool, dropout_p: float, out_proj_weight: Val,
    out_proj_bias: Any, training: bool = True, key_padding_mask: Any = None, need_weights: bool = True,
    attn_mask: Any = None, use_separate_proj_weight: bool = False, q_proj_weight: Any = None,
    k_proj_weight: Any = None, v_proj_weight: Any = None, static_k: Any = None, static_v: Any = None,
    average_attn_weights: bool = True, is_causal: bool = False,
) -> Any:  # fmt: skip
    """``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls, and what Dynamo
    keeps as one op): the same relations as the module, inputs (L, B, E) or (L, E)."""
    if use_separate_proj_weight or not isinstance(in_proj_weight, Val):
        raise ValueError("multi_head_attention_forward with separate q/k/v weights is not described")
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise ValueError("multi_head_attention_forward with bias_k/bias_v, add_zero_attn or static k/v is not described")
    d = in_proj_weight.shape[0] // 3 // num_heads
    b = in_proj_bias if isinstance(in_proj_bias, Val) else None
    ob = out_proj_bias if isinstance(out_proj_bias, Val) else None
    return _mha_core(ctx, num_heads, d, in_proj_weight, b, out_proj_weight, ob, query, key, value,
                     key_padding_mask, attn_mask, average_attn_weights, False)  # fmt: skip


def _mha_core(
    ctx: Ctx, h: int, d: int, w: Val, b: Val | None, ow: Val, ob: Val | None, query: Val, key: Val, value: Val,
    key_padding_mask: Any, attn_mask: Any, average_attn_weights: bool, batch_first: bool,
) -> list[Any]:  # fmt: skip
    """The relations of multi-head attention with a packed in-projection; returns the axes of
    (output, attention weights or None)."""
    if isinstance(attn_mask, Val) and attn_mask.ndim == 3:
        raise ValueError("a 3-D attn_mask (batch * heads, L, S) is not described")
    three, heads, hd = ctx.ax.new(3), ctx.ax.new(h), ctx.ax.new(d)
    ctx.pin(three, "q/k/v blocks of a packed in-projection")
    rows = ctx.ax.product([three, heads, hd])
    ctx.unify(w.axes[0], rows)
    _tie(ctx, b, [rows])
    ctx.unify(ow.axes[1], ctx.ax.product([heads, hd]))
    out_e = ctx.ax.new(ow.shape[0])
    ctx.unify(ow.axes[0], out_e)
    _tie(ctx, ob, [out_e])
    for x in (query, key, value):
        ctx.unify(x.axes[-1], w.axes[1])
    if query.ndim == 3:
        bd, sd = (0, 1) if batch_first else (1, 0)
        ctx.unify(query.axes[bd], key.axes[bd])
        ctx.unify(key.axes[bd], value.axes[bd])
        ctx.unify(key.axes[sd], value.axes[sd])
        ctx.approx(key.axes[sd], "softmax over the keys of an attention")
        out = list(query.axes)
        lq, sk = query.axes[sd], key.axes[sd]
    else:
        ctx.unify(key.axes[0], value.axes[0])
        ctx.approx(key.axes[0], "softmax over the keys of an attention")
        out = list(query.axes)
        lq, sk = query.axes[0], key.axes[0]
    out[-1] = out_e
    # q and k come from rows of in_proj_weight (zeroed when head_dim is pruned): exact
    ctx.record("heads", heads)
    ctx.record("head_dim", hd)
    weights_used = any(u.target is operator.getitem and u.args[1] == 1 for u in ctx.node.users)
    result: list[Any] = [tuple(out), None]
    if isinstance(ctx.spec, (tuple, list)) and len(ctx.spec) > 1 and ctx.spec[1] is not None:
        wshape = tuple(ctx.spec[1].shape)
        if weights_used and average_attn_weights:
            ctx.approx(heads, "attention weights averaged over heads")
        if len(wshape) == (4 if query.ndim == 3 else 3):  # per-head weights
            hdim = 1 if query.ndim == 3 else 0
            wa = list(ctx.fresh(wshape))
            ctx.unify(wa[hdim], heads)
            wa[-2], wa[-1] = lq, sk
            if query.ndim == 3:
                wa[0] = query.axes[0 if batch_first else 1]
            result[1] = tuple(wa)
        else:
            wa = list(ctx.fresh(wshape))
            wa[-2], wa[-1] = lq, sk
            if query.ndim == 3:
                wa[0] = query.axes[0 if batch_first else 1]
            result[1] = tuple(wa)
    if isinstance(key_padding_mask, Val):
        ctx.unify(key_padding_mask.axes[-1], sk)
    if isinstance(attn_mask, Val):
        ctx.unify(attn_mask.axes[-1], sk)
        ctx.unify(attn_mask.axes[-2], lq)
    return result


@register_rule("mha", )
def _mha_rule(ctx: Ctx, result: Any) -> Any:
    """The module adapter (``_mha``) did the work; this returns its result."""
    return result


def _register_mha() -> None:
    from .modules import PrunedMultiheadAttention

    register_module("mha", nn.MultiheadAttention, PrunedMultiheadAttention)(_mha)


def _register_mha_update() -> None:
    from .modules import PrunedMultiheadAttention

    @register_module_update(nn.MultiheadAttention, PrunedMultiheadAttention)
    def _update_mha(rw: Any, node: fx.Node, m: Any) -> nn.Module | None:
        heads = rw.extra(node, "heads")
        hd = rw.extra(node, "head_dim")
        new_h = rw.new_size(heads) if heads is not None else m.num_heads
        new_d = rw.new_size(hd) if hd is not None else m.head_dim
        e_in = int(m.in_proj_weight.shape[1])
        if isinstance(m, PrunedMultiheadAttention):
            m.num_heads, m.head_dim, m.embed_dim = new_h, new_d, e_in
            m.out_dim = int(m.out_proj.weight.shape[0])
            return None
        if (new_h, new_d, e_in, m.out_proj.weight.shape[0]) == (m.num_heads, m.head_dim, m.embed_dim, m.embed_dim):
            return None
        return PrunedMultiheadAttention.from_module(m, new_h, new_d)


# ------------------------------------------------------------------------------------------
# roll and gather by an index tensor (relative-position tables)
# ------------------------------------------------------------------------------------------
@register_rule("roll", torch.roll, *[op for op in [getattr(getattr(torch.ops.aten, "roll", None), "default", None)] if op],
               methods=("roll",), zeros="moves")  # fmt: skip
def _roll(ctx: Ctx, input: Val, shifts: Any, dims: Any = None) -> Any:
    """Rolled dims move indices around: pinned. Every other dim passes through. ``dims``
    None (torch) or empty (``aten.roll.default``) rolls the flattened tensor."""
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        ctx.pin(input.axes, "rolled (flattened roll)")
        out = ctx.fresh(input.shape)
        ctx.pin(out, "rolled (flattened roll)")
        return out
    ds = [_dim(d, input.ndim) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    axes = list(input.axes)
    for d in ds:
        ctx.pin(input.axes[d], "rolled by torch.roll")
        axes[d] = ctx.ax.new(input.shape[d])
        ctx.pin(axes[d], "rolled by torch.roll")
    return tuple(axes)


# ------------------------------------------------------------------------------------------
# torchvision Swin: functions kept as leaves by torch.fx.wrap
# ------------------------------------------------------------------------------------------
def _register_torchvision_swin() -> None:
    try:
        from torchvision.models import swin_transformer as sw
    except ImportError:
        return
    from . import modules as fm

    @register_rule("relative_position_bias", sw._get_relative_position_bias)
    def _rel_bias(ctx: Ctx, relative_position_bias_table: Val, relative_position_index: Val, window_size: Any) -> Any:
        """table (num_rel, H)[index] viewed (N, N, H), permuted to (1, H, N, N): the heads dim
        follows the table's dim 1; the looked-up positions are pinned."""
        t = relative_position_bias_table
        ctx.pin(t.axes[0], "relative positions are looked up by index")
        one, _, n1, n2 = ctx.fresh(ctx.out_shape())
        ctx.pin([n1, n2], "relative positions are looked up by index")
        return (one, t.axes[1], n1, n2)

    @register_rule("patch_merging_pad", sw._patch_merging_pad)
    def _pm_pad(ctx: Ctx, x: Val) -> Any:
        """(..., H, W, C) -> (..., H/2, W/2, 4C): the four 2x2 neighbours of each channel,
        one after another on the last dim (one class, four times); space is pinned."""
        out = ctx.out_shape()
        ctx.pin(x.axes[-3:-1], "spatial dims regrouped by patch merging")
        sp = ctx.fresh(out[-3:-1])
        ctx.pin(sp, "spatial dims regrouped by patch merging")
        c = ctx.ax.concat([x.axes[-1]] * 4)
        return tuple(x.axes[:-3]) + sp + (c,)

    @register_rule("shifted_window_attention", sw.shifted_window_attention, fm.shifted_window_attention)
    def _swa(
        ctx: Ctx, input: Val, qkv_weight: Val, proj_weight: Val, relative_position_bias: Val, window_size: Any,
        num_heads: int, shift_size: Any, attention_dropout: float = 0.0, dropout: float = 0.0,
        qkv_bias: Val | None = None, proj_bias: Val | None = None, logit_scale: Val | None = None,
        training: bool = True, scale: float | None = None,
    ) -> Any:  # fmt: skip
        """Window attention over (B, H, W, C): qkv rows are (q|k|v, head, offset), proj
        columns (head, offset), the bias table's heads dim follows the heads. Space is padded,
        rolled and windowed: pinned. q and k come from zeroed weight rows, so head_dim is
        exact (cosine attention, with logit_scale, normalizes over it: approximate)."""
        d = qkv_weight.shape[0] // 3 // num_heads
        three, heads, hd = ctx.ax.new(3), ctx.ax.new(num_heads), ctx.ax.new(d)
        ctx.pin(three, "q/k/v blocks of a packed qkv projection")
        rows = ctx.ax.product([three, heads, hd])
        ctx.unify(qkv_weight.axes[0], rows)
        _tie(ctx, qkv_bias, [rows])
        ctx.unify(qkv_weight.axes[1], input.axes[-1])
        ctx.unify(proj_weight.axes[1], ctx.ax.product([heads, hd]))
        c_out = ctx.ax.new(proj_weight.shape[0])
        ctx.unify(proj_weight.axes[0], c_out)
        _tie(ctx, proj_bias, [c_out])
        ctx.unify(relative_position_bias.axes[-3], heads)
        if isinstance(logit_scale, Val):
            ctx.unify(logit_scale.axes[0], heads)
            ctx.approx(hd, "cosine attention normalizes q and k over head_dim")
        ctx.pin(input.axes[-3:-1], "spatial dims padded, rolled and windowed by window attention")
        sp = ctx.fresh(ctx.out_shape()[-3:-1])
        ctx.pin(sp, "spatial dims padded, rolled and windowed by window attention")
        ctx.record("heads", heads)
        ctx.record("head_dim", hd)
        return tuple(input.axes[:-3]) + sp + (c_out,)



def _register_swin_rewrite() -> None:
    try:
        import torchvision.models.swin_transformer  # noqa: F401
    except ImportError:
        return
    from . import modules as fm

    @register_rewrite("shifted_window_attention")
    def _rw_swa(rw: Any, node: fx.Node, args: tuple, kwargs: dict, graph: fx.Graph, taint: set) -> Any:
        """torchvision's function assumes the inner dim equals the input's channels; when heads,
        head_dim or channels change, call fxprune's version, which takes them from the weights
        and keeps the original scale."""
        heads, hd = rw.extra(node, "heads"), rw.extra(node, "head_dim")
        x = node.args[0]
        if rw.kept(heads) is None and rw.kept(hd) is None and not any(rw.changed(x)) and not any(rw.changed(node)):
            return None
        names = ["input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads",
                 "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias", "logit_scale", "training"]
        bound = dict(zip(names, args))
        bound.update(kwargs)
        bound["num_heads"] = rw.new_size(heads)
        if bound.get("scale") is None:
            bound["scale"] = float(hd.size) ** -0.5
        return fm.shifted_window_attention, (), bound


def _register_mha_functional_rewrite() -> None:
    from . import modules as fm

    names = list(inspect.signature(F.multi_head_attention_forward).parameters)

    @register_rewrite("mha_functional")
    def _rw_mha(rw: Any, node: fx.Node, args: tuple, kwargs: dict, graph: fx.Graph, taint: set) -> Any:
        """When heads, head_dim or the residual dim change, call fxprune's version, which takes
        the inner dim from the weights and keeps the original scale."""
        heads, hd = rw.extra(node, "heads"), rw.extra(node, "head_dim")
        if rw.kept(heads) is None and rw.kept(hd) is None and not any(rw.changed(node.args[0])):
            return None
        if len(args) > len(names):
            raise ValueError(f"multi_head_attention_forward called with {len(args)} positional arguments")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        bound["num_heads"] = rw.new_size(heads)
        bound["scale"] = float(hd.size) ** -0.5
        return fm.multi_head_attention_forward, (), bound


@register_flops("mha", getattr(torch.ops.aten, "_native_multi_head_attention", None))
def _native_mha_flop(q: Any, k: Any, v: Any, embed_dim: int, num_head: int, qkv_w: Any, qkv_b: Any,
                     proj_w: Any, proj_b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:  # fmt: skip
    """``nn.MultiheadAttention``'s inference fast path runs ``aten._native_multi_head_attention``,
    which ``torch.utils.flop_counter`` does not count, so ``count_macs`` missed every attention
    of torchvision's ViT and a pruned ViT (whose attention runs as counted matmuls) could show
    *more* MACs than the original. The formula counts the same matmuls: the q/k/v and output
    projections and the two attention products, 2 FLOPs per multiply-accumulate."""
    batch = math.prod(q[:-2]) if len(q) > 2 else 1
    lq, sk, e = q[-2], k[-2], q[-1]
    inner = qkv_w[0] // 3
    macs = batch * (lq * e * inner + 2 * sk * e * inner + 2 * lq * sk * inner + lq * inner * proj_w[0])
    return 2 * macs


@register_flops("sdpa", getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None))
def _cpu_sdpa_flop(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """On the CPU, ``F.scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which ``torch.utils.flop_counter``
    does not count (it knows the CUDA kernels), so ``count_macs`` of a model using SDPA missed
    its attention on the CPU. Counted like the CUDA kernels: the two products q k^T and
    p v, 2 FLOPs per multiply-accumulate."""
    batch = math.prod(q[:-2])
    lq, d, sk, dv = q[-2], q[-1], k[-2], v[-1]
    return 2 * batch * (lq * sk * d + lq * sk * dv)


_register_mha()
_register_torchvision_swin()
_register_sdpa_rewrite()
_register_mha_update()
_register_mha_functional_rewrite()
_register_swin_rewrite()
