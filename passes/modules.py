"""Replacement modules and functions the rewrite uses where a library's own cannot express the
pruned shapes.

- ``PrunedMultiheadAttention``: ``nn.MultiheadAttention`` requires ``embed_dim == num_heads *
  head_dim``; once heads (or head_dim) are pruned the inner dim is smaller than the residual
  dim, which the torch module cannot represent. This module computes the same function with
  an inner dim of its own and the same state_dict keys (``in_proj_weight``, ``in_proj_bias``,
  ``out_proj.weight``, ``out_proj.bias``). It keeps the original softmax scale.
- ``shifted_window_attention``: torchvision's Swin function with the inner dim taken from the
  weights (torchvision's assumes it equals the input's channels) and an explicit ``scale``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PrunedMultiheadAttention", "multi_head_attention", "multi_head_attention_forward", "shifted_window_attention"]


class PrunedMultiheadAttention(nn.Module):
    """Multi-head attention whose inner dim (``num_heads * head_dim``) may differ from the
    residual dim (``embed_dim``), with a fixed softmax ``scale``.

    Same call signature, outputs and state_dict keys as ``nn.MultiheadAttention`` (packed
    in-projection, no ``bias_k``/``bias_v``, no ``add_zero_attn``).

    Example:
        >>> mha = nn.MultiheadAttention(64, 8, batch_first=True)
        >>> p = PrunedMultiheadAttention.from_module(mha, num_heads=8, head_dim=8)
        >>> x = torch.randn(2, 5, 64)
        >>> torch.allclose(p(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
        True
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, out_dim: int | None = None, *,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 scale: float | None = None) -> None:  # fmt: skip
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.out_dim = out_dim if out_dim is not None else embed_dim
        self.batch_first = batch_first
        self.dropout = dropout
        self.scale = scale if scale is not None else head_dim**-0.5
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, self.out_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    @classmethod
    def from_module(cls, m: Any, num_heads: int, head_dim: int) -> "PrunedMultiheadAttention":
        """Wrap the (already sliced) tensors of ``m`` without copying them, keeping its scale."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.embed_dim = int(m.in_proj_weight.shape[1])
        new.num_heads, new.head_dim = num_heads, head_dim
        new.out_dim = int(m.out_proj.weight.shape[0])
        new.batch_first = bool(getattr(m, "batch_first", False))
        new.dropout = float(getattr(m, "dropout", 0.0))
        new.scale = float(getattr(m, "scale", None) or m.head_dim**-0.5)
        new.in_proj_weight = m.in_proj_weight
        new.in_proj_bias = m.in_proj_bias
        new.out_proj = m.out_proj
        new.training = m.training
        return new

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = multi_head_attention(
            query, key, value, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
            self.out_proj.bias, scale=self.scale, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal,
            dropout_p=self.dropout, training=self.training,
        )  # fmt: skip
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"out_dim={self.out_dim}, batch_first={self.batch_first}, scale={self.scale:.6g}")  # fmt: skip


def multi_head_attention(
    query: Tensor, key: Tensor, value: Tensor, num_heads: int, in_proj_weight: Tensor,
    in_proj_bias: Optional[Tensor], out_proj_weight: Tensor, out_proj_bias: Optional[Tensor], *,
    scale: float, key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
    attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True, is_causal: bool = False,
    dropout_p: float = 0.0, training: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    """Multi-head attention on (L, B, E) or unbatched (L, E) inputs with a packed
    in-projection whose inner dim (``in_proj_weight.shape[0] // 3``) need not equal E, and a
    fixed softmax ``scale``. Same outputs as ``F.multi_head_attention_forward``.

    Example:
        >>> mha = nn.MultiheadAttention(16, 4)
        >>> x = torch.randn(5, 2, 16)
        >>> out, _ = multi_head_attention(x, x, x, 4, mha.in_proj_weight, mha.in_proj_bias,
        ...                               mha.out_proj.weight, mha.out_proj.bias, scale=0.5)
        >>> out.shape
        torch.Size([5, 2, 16])
    """
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    L, B, _ = query.shape
    S = key.shape[0]
    h = num_heads
    d = in_proj_weight.shape[0] // 3 // h
    w_q, w_k, w_v = in_proj_weight.chunk(3)
    b_q = b_k = b_v = None
    if in_proj_bias is not None:
        b_q, b_k, b_v = in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).reshape(L, B * h, d).transpose(0, 1)
    k = F.linear(key, w_k, b_k).reshape(S, B * h, d).transpose(0, 1)
    v = F.linear(value, w_v, b_v).reshape(S, B * h, d).transpose(0, 1)
    if not need_weights:
        # no weights to return: the fused kernel (flash / memory-efficient on a GPU). The
        # explicit softmax below materializes B*h*L*S scores, and on an H200 it made a pruned
        # ViT-B/16 slower than the original despite 1.6x fewer MACs
        causal = is_causal and attn_mask is None  # as below: an attn_mask given wins over is_causal
        if causal and key_padding_mask is not None:  # SDPA takes one or the other: make the causal mask
            attn_mask, causal = torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1), False
        out = F.scaled_dot_product_attention(
            q.view(B, h, L, d), k.view(B, h, S, d), v.view(B, h, S, d),
            attn_mask=_additive_mask(attn_mask, key_padding_mask, B, h, L, S, q.dtype),
            dropout_p=dropout_p if training else 0.0, is_causal=causal, scale=scale,
        )  # fmt: skip
        out = out.permute(2, 0, 1, 3).reshape(L, B, h * d)
        out = F.linear(out, out_proj_weight, out_proj_bias)
        return (out.squeeze(1) if not batched else out), None
    scores = torch.bmm(q * scale, k.transpose(1, 2)).view(B, h, L, S)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask.view(B, h, L, S) if attn_mask.dim() == 3 else attn_mask, float("-inf"))
        else:
            scores = scores + (attn_mask.view(B, h, L, S) if attn_mask.dim() == 3 else attn_mask)
    elif is_causal:
        causal_mask = torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1)
        scores = scores.masked_fill(causal_mask, float("-inf"))
    if key_padding_mask is not None:
        kpm = key_padding_mask.view(B, 1, 1, S)
        scores = scores.masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool else scores + kpm
    attn = scores.softmax(dim=-1)
    if training and dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    out = torch.matmul(attn, v.view(B, h, S, d))  # B, h, L, d
    out = out.permute(2, 0, 1, 3).reshape(L, B, h * d)
    out = F.linear(out, out_proj_weight, out_proj_bias)
    if not batched:
        out = out.squeeze(1)
    weights = None
    if need_weights:
        weights = attn.mean(dim=1) if average_attn_weights else attn
        if not batched:
            weights = weights.squeeze(0)
    return out, weights


def _additive_mask(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], B: int, h: int, L: int, S: int,
                   dtype: torch.dtype) -> Optional[Tensor]:  # fmt: skip
    """``nn.MultiheadAttention``'s masks (bool: True is masked out; float: added) as one float
    mask to add to the scores, broadcastable to (B, h, L, S), or None."""
    def additive(m: Tensor) -> Tensor:
        return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)

    out = None
    if attn_mask is not None:
        out = additive(attn_mask.view(B, h, L, S) if attn_mask.dim() == 3 else attn_mask)
    if key_padding_mask is not None:
        kpm = additive(key_padding_mask.view(B, 1, 1, S))
        out = kpm if out is None else out + kpm
    return out


def multi_head_attention_forward(
    query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
    in_proj_weight: Tensor, in_proj_bias: Optional[Tensor], bias_k: Optional[Tensor], bias_v: Optional[Tensor],
    add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor, out_proj_bias: Optional[Tensor],
    training: bool = True, key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
    attn_mask: Optional[Tensor] = None, use_separate_proj_weight: bool = False, q_proj_weight: Any = None,
    k_proj_weight: Any = None, v_proj_weight: Any = None, static_k: Any = None, static_v: Any = None,
    average_attn_weights: bool = True, is_causal: bool = False, *, scale: float,
) -> tuple[Tensor, Optional[Tensor]]:  # fmt: skip
    """``F.multi_head_attention_forward``'s signature (the rewrite swaps this in when heads or
    head_dim are pruned) computed by :func:`multi_head_attention`; ``embed_dim_to_check`` is
    ignored and the variants fxprune does not prune (separate q/k/v weights, bias_k/bias_v,
    add_zero_attn, static k/v) are refused."""
    if use_separate_proj_weight or bias_k is not None or bias_v is not None or add_zero_attn:
        raise ValueError("fxprune.modules.multi_head_attention_forward: only a packed in-projection is supported")
    if static_k is not None or static_v is not None:
        raise ValueError("fxprune.modules.multi_head_attention_forward: static_k/static_v are not supported")
    return multi_head_attention(
        query, key, value, num_heads, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, scale=scale,
        key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
        average_attn_weights=average_attn_weights, is_causal=is_causal, dropout_p=dropout_p, training=training,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# torchvision Swin window attention, with the inner dim taken from the weights
# (adapted from torchvision.models.swin_transformer.shifted_window_attention, BSD-3-Clause)
# ------------------------------------------------------------------------------------------
def shifted_window_attention(
    input: Tensor, qkv_weight: Tensor, proj_weight: Tensor, relative_position_bias: Tensor,
    window_size: list[int], num_heads: int, shift_size: list[int], attention_dropout: float = 0.0,
    dropout: float = 0.0, qkv_bias: Optional[Tensor] = None, proj_bias: Optional[Tensor] = None,
    logit_scale: Optional[Tensor] = None, training: bool = True, scale: Optional[float] = None,
) -> Tensor:  # fmt: skip
    """torchvision's ``shifted_window_attention`` where the q/k/v inner dim is
    ``qkv_weight.shape[0] // 3`` (torchvision assumes it equals the input's channels) and the
    output has ``proj_weight.shape[0]`` channels; ``scale`` (default 1/sqrt(head_dim)) is the
    softmax scale, so a pruned head_dim can keep the original one.

    Example:
        >>> x = torch.randn(1, 14, 14, 32)
        >>> y = shifted_window_attention(x, torch.randn(48, 32), torch.randn(32, 16),
        ...                              torch.zeros(1, 2, 49, 49), [7, 7], 2, [3, 3])
        >>> y.shape
        torch.Size([1, 14, 14, 32])
    """
    B, H, W, C = input.shape
    inner = qkv_weight.shape[0] // 3
    head_dim = inner // num_heads
    c_out = proj_weight.shape[0]
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = list(shift_size).copy()
    if window_size[0] >= pad_H:
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logit_scale = torch.clamp(logit_scale, max=math.log(100.0)).exp()
        attn = attn * logit_scale
    else:
        q = q * (scale if scale is not None else head_dim**-0.5)
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        attn_mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                attn_mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
        attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.linear(x, proj_weight, proj_bias)
    x = F.dropout(x, p=dropout, training=training)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], c_out)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, c_out)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    x = x[:, :H, :W, :].contiguous()
    return x


torch.fx.wrap("shifted_window_attention")
