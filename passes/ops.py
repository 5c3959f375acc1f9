"""Every op fxprune knows, registered in one stated order from this one place.

``registry`` holds the records (``OpSpec``: rule, torch spellings, ATen overloads, rewrite
hook, module update, zero behaviour, block role, FLOP formulas) and the registration API; the
content modules fill them when imported, in this order:

1. ``rules``: the core ops (element-wise, convs, linear, norms, views, reductions, ...);
2. ``rules_attention``: SDPA, ``nn.MultiheadAttention``, torchvision's Swin, ``roll``, with
   their rewrite hooks, module updates and FLOP formulas;
3. ``rules_rnn_gnn``: RNNs, top-k, gathers, scatters, ``arange``, and ``when=``
   specializations of the core ``getitem`` and ``sum`` (tried before the base rules);
4. ``aten``: the ATen overloads of the records above whose arguments bind as they are, and the
   ops only ``torch.export`` graphs have. It comes last because it adds spellings to records
   of the other three (adding a spelling to a record that does not exist yet raises).

No registration replaces another (a duplicate raises), so apart from (4) the order changes
nothing. ``rewrite`` adds the rewrite hooks and module updates of the core records. The passes
that need the full tables (``dependency``, ``rewrite``, ``zeros``, ``blocks``) import this
module; no content module imports a pass, so the import graph has no cycle.
"""

# the stated order, not the alphabet
# isort: off
from . import rules  # noqa: F401  (first: the core records)
from . import rules_attention  # noqa: F401
from . import rules_rnn_gnn  # noqa: F401
from . import aten  # noqa: F401  (last: adds ATen spellings to the records above)

# isort: on

__all__: list[str] = []
