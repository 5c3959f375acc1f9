"""Every op fxprune knows, registered in one stated order from this one place.

``rules`` holds the tables and the registration API (a rule, its torch spellings, module
rules, rewrite hooks, module updates); the content modules fill them when imported:

1. ``rules``: the core rules (element-wise, convs, linear, norms, views, reductions, ...);
2. ``aten``: the ATen spellings of those rules (torch.export graphs) and ATen-only ops;
3. ``rules_attention``: SDPA, ``nn.MultiheadAttention``, torchvision's Swin, ``roll``;
4. ``rules_rnn_gnn``: RNNs and graph-network gathers and scatters. It must stay last: it
   replaces the core ``getitem`` and ``sum`` rules with versions that also know index tensors
   and sums over a product with a parameter (they fall back to the core rules otherwise).

The passes that need the full tables (``dependency``, ``rewrite``) import this module; no
content module imports a pass, so the import graph has no cycle.
"""

from . import (
    aten,  # noqa: F401  (after rules)
    rules,  # noqa: F401
    rules_attention,  # noqa: F401
    rules_rnn_gnn,  # noqa: F401  (last: see above)
)

__all__: list[str] = []
