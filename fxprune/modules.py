"""The replacement modules the rewrite swaps in (``PrunedMultiheadAttention``, ...). They live
in ``fxprune.passes.modules`` (the passes use them and import nothing from ``fxprune``); this
module keeps the public import path."""

from .passes.modules import (
    PrunedMultiheadAttention,
    multi_head_attention,
    multi_head_attention_forward,
    shifted_window_attention,
)

__all__ = ["PrunedMultiheadAttention", "multi_head_attention", "multi_head_attention_forward", "shifted_window_attention"]
