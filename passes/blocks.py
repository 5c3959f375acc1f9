"""Blocks: removable branches of an add, found from graph semantics, and their removal.

A *block* is one operand ``b`` of an add node ``y = a + b`` (any spelling of an op whose
record says ``block="add"``: ``operator.add``/``iadd``, ``torch.add``, ``Tensor.add``/``add_``,
``aten.add.Tensor``, ...; and ``a - b``, ``block="sub"``) such that replacing ``y`` by ``a``
leaves a valid program:

- ``b`` is computed by a sub-DAG (the *branch*) that nothing outside it reads: every branch
  node's users are branch nodes (``b``'s only user is the add). Parameters read only by the
  branch belong to it; layer-scales (``gamma * f(x)``) and drop-path/stochastic depth at the
  end of the branch are ordinary branch nodes.
- ``a`` has the shape and dtype of ``y`` (no broadcast is lost).
- The branch's tensor inputs are ``a`` itself (kind ``"residual"``: ``y = x + f(x)``) or
  nodes upstream of ``a`` (kind ``"parallel"``: ``y = g(x) + f(x)``, e.g. a projection
  shortcut with the main path removed). A branch that reads no activation (an added
  constant such as a positional embedding) is not a block.
- No branch node writes in place into a tensor from outside the branch.

Nothing here looks at module classes or names: a block is named after the common FQN prefix
of the modules and attributes in its branch and its add node, ``"layer1.1/add_1"``.

requires: ``node.meta[SPEC]`` (``capture`` or ``propagate``).
ensures:  ``remove_blocks`` returns a new GraphModule (the input is untouched) in which every
          removed add's users read ``a``, the branch nodes are erased and the submodules,
          parameters and buffers nothing reads any more are deleted; ``lint()`` and
          ``recompile()`` done; ``gm.meta["fxprune.removed_blocks"]`` lists what was removed.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import fx, nn

from .dependency import TensorSpec
from .dependency import analyze as _analyze
from .keys import ANALYSIS, SPEC
from .registry import spec_of

__all__ = [
    "Block", "REMOVED", "find_blocks", "select_blocks", "remove_blocks", "zero_blocks", "gate_blocks",
    "pending_blocks", "apply_removed",
]  # fmt: skip

#: GraphModule.meta key: ids of the blocks removed from this graph (by ``remove_blocks``).
REMOVED = "fxprune.removed_blocks"

_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                  operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor}  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One removable branch: ``add`` computes ``keep (+|-) output``; removing the block makes
    the add's users read ``keep``.

    ``nodes`` are the branch's node names in graph order (``output`` is the last one),
    ``params`` the parameter and buffer FQNs that only the branch reads (removed with it).
    """

    id: str
    kind: str  # "residual" | "parallel"
    add: str
    operand: int  # position of the branch output in the add's args
    keep: str
    output: str
    nodes: tuple[str, ...]
    params: tuple[str, ...]
    prefix: str

    def numel(self, gm: nn.Module) -> int:
        """Parameters (not buffers) the block holds in ``gm``."""
        named = dict(gm.named_parameters(remove_duplicate=False))
        return sum(named[p].numel() for p in self.params if p in named)


# ------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------
def _add_operands(node: fx.Node) -> tuple[int, ...] | None:
    """Positions of the add's args that may be a removable branch, or None if not an add."""
    spec = spec_of(node.target) if node.op in ("call_function", "call_method") else None
    role = spec.block if spec is not None else None
    is_sub = role == "sub"
    if role is None or len(node.args) < 2 or set(node.kwargs) - {"alpha"}:
        return None
    if not all(isinstance(a, fx.Node) for a in node.args[:2]) or node.args[0] is node.args[1]:
        return None
    alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
    # a - b and a + alpha * b: only b can go (y = a); a + b: either side
    return (1,) if is_sub or alpha != 1 else (0, 1)


def _is_inplace(gm: fx.GraphModule, n: fx.Node) -> bool:
    """Does ``n`` write into its first argument?"""
    if n.op == "call_method":
        return isinstance(n.target, str) and n.target.endswith("_") and not n.target.startswith("_")
    if n.op == "call_function":
        schema = getattr(n.target, "_schema", None)  # aten overloads say which argument they write
        if schema is not None:
            return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        name = getattr(n.target, "__name__", "")
        return n.target in _INPLACE_FUNCS or n.kwargs.get("inplace") is True or (name.endswith("_") and not name.startswith("_"))
    if n.op == "call_module":
        return getattr(gm.get_submodule(str(n.target)), "inplace", False) is True
    return False


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        for m in n.all_input_nodes:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen


def _branch(add: fx.Node, b: fx.Node, order: dict[fx.Node, int]) -> set[fx.Node] | None:
    """The nodes that become dead when ``add`` stops reading ``b``: ``b`` and every node all
    of whose users are dead, plus use-less nodes (e.g. an unused tuple element) that read
    only dead nodes. None when ``b`` itself stays alive."""
    if list(b.users) != [add] or sum(a is b for a in add.args) != 1:
        return None
    anc = _ancestors(b)
    cand = {n for n in anc if n.op not in ("placeholder", "output")} | {b}
    # use-less nodes hanging off candidates (``x, _ = attn(...)``: the unused element)
    cand |= {u for n in list(cand) for u in n.users if not u.users and u is not add and u.op != "output"}
    while True:
        dead: set[fx.Node] = set()
        for n in sorted(cand, key=order.__getitem__, reverse=True):  # users before their inputs
            if n is b or not n.users or all(u in dead for u in n.users):
                dead.add(n)
        lost = {z for z in dead if not z.users and z is not b and not all(i in dead for i in z.all_input_nodes)}
        if not lost:
            return dead if b in dead else None
        cand -= lost


def _is_tensor(n: fx.Node) -> bool:
    return isinstance(n.meta.get(SPEC), TensorSpec)


def _prefix(gm: fx.GraphModule, nodes: Iterable[fx.Node]) -> str:
    paths = []
    for n in nodes:
        if n.op == "call_module":
            paths.append(str(n.target).split("."))
        elif n.op == "get_attr":
            paths.append(str(n.target).split(".")[:-1])
        elif n.op in ("call_function", "call_method"):
            # the innermost module whose forward made this call (recorded by the tracer)
            stack = n.meta.get("nn_module_stack") or {}
            path = next(reversed(stack.values()), (None,))[0] if stack else None
            if isinstance(path, str) and path and all(p.isidentifier() or p.isdigit() for p in path.split(".")):
                paths.append(path.split("."))
    if not paths:
        return ""
    common = paths[0]
    for p in paths[1:]:
        i = 0
        while i < min(len(common), len(p)) and common[i] == p[i]:
            i += 1
        common = common[:i]
    return ".".join(common)


def _owned(gm: fx.GraphModule, dead: set[fx.Node]) -> tuple[str, ...]:
    """Parameter and buffer FQNs read by dead nodes and by no live node."""

    def reads(nodes: Iterable[fx.Node]) -> set[str]:
        out: set[str] = set()
        for n in nodes:
            if n.op == "call_module":
                mod = gm.get_submodule(str(n.target))
                out |= {f"{n.target}.{k}" for k, _ in mod.named_parameters(remove_duplicate=False)}
                out |= {f"{n.target}.{k}" for k, _ in mod.named_buffers(remove_duplicate=False)}
            elif n.op == "get_attr":
                out.add(str(n.target))
        return out

    # tied tensors: one object under several names counts as read when any name is
    ids = {}
    for k, t in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        ids[k] = id(t)
    live = {ids.get(k, k) for k in reads(n for n in gm.graph.nodes if n not in dead)}
    return tuple(sorted(k for k in reads(dead) if ids.get(k, k) not in live))


def find_blocks(gm: fx.GraphModule, kinds: Sequence[str] = ("residual", "parallel")) -> list[Block]:
    """Every removable branch of every add in ``gm``, in graph order.

    Example:
        >>> gm = fxprune.capture(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> [b.id for b in find_blocks(gm, kinds=("residual",))][:2]
        ['layer1.0/add', 'layer1.1/add_1']
    """
    bad = set(kinds) - {"residual", "parallel"}
    if bad:
        raise ValueError(f"find_blocks: unknown kinds {sorted(bad)}; use 'residual' and/or 'parallel'")
    missing = [n.name for n in gm.graph.nodes if n.op != "output" and SPEC not in n.meta]
    if missing:
        raise ValueError(
            f"find_blocks: nodes {missing[:3]} have no {SPEC}; capture the model with fxprune.capture "
            "(or run fxprune.propagate) so shapes are known"
        )
    found: list[Block] = []
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    for add in gm.graph.nodes:
        positions = _add_operands(add)
        if positions is None or not _is_tensor(add):
            continue
        for pos in positions:
            b, a = add.args[pos], add.args[1 - pos]
            if not (_is_tensor(a) and _is_tensor(b)) or a.meta[SPEC] != add.meta[SPEC]:
                continue  # y = a would change the shape or dtype
            dead = _branch(add, b, index)
            if dead is None:
                continue
            ext = {i for n in dead for i in n.all_input_nodes if i not in dead and i.op != "get_attr" and _is_tensor(i)}
            if not ext:
                continue  # reads no activation: an added constant, not a branch
            if ext == {a}:
                kind = "residual"
            elif ext <= _ancestors(a):
                kind = "parallel"
            else:
                continue
            if kind not in kinds:
                continue
            # removal must not change a tensor someone else reads
            if any(_is_inplace(gm, n) and n.args and isinstance(n.args[0], fx.Node) and n.args[0] not in dead for n in dead):
                continue
            others = any(u is not add and u not in dead for u in a.users)
            if _is_inplace(gm, add) and pos == 1 and others:
                continue  # a.add_(f(a)) with a read elsewhere: a's value would change
            if others and any(_is_inplace(gm, u) and u.args and u.args[0] is add for u in add.users):
                continue  # relu_(a + f(a)) would become relu_(a), changing a for its other readers
            order = [n for n in gm.graph.nodes if n in dead]
            prefix = _prefix(gm, order)
            bid = f"{prefix}/{add.name}" if prefix else add.name
            found.append(Block(bid, kind, add.name, pos, a.name, b.name, tuple(n.name for n in order),
                               _owned(gm, dead), prefix))  # fmt: skip
    # one add may have two removable sides: tell them apart
    ids = [b.id for b in found]
    return [dataclasses.replace(b, id=f"{b.id}[{b.operand}]") if ids.count(b.id) > 1 else b for b in found]


def _conflict(x: Block, y: Block) -> bool:
    """Two blocks that cannot both be removed: the same add, or one inside the other."""
    return x.add == y.add or x.add in y.nodes or y.add in x.nodes or bool(set(x.nodes) & set(y.nodes))


def select_blocks(blocks: Sequence[Block], ids: Iterable[str]) -> list[Block]:
    """The blocks named by ``ids``: a full id, an add node's name, or a module prefix, which
    names every block with that prefix (``"encoder.layers.encoder_layer_3"``: both residual
    branches of a transformer layer), or else every block under that module.

    Raises:
        ValueError: an id names no block, or two named blocks overlap.
    """
    by_id = {b.id: b for b in blocks}
    out: list[Block] = []
    for i in ids:
        hits = [by_id[i]] if i in by_id else [c for c in blocks if i in (c.prefix, c.add)]
        hits = hits or [c for c in blocks if c.prefix.startswith(i + ".")]  # every block under a module
        if not hits:
            known = ", ".join(c.id for c in blocks[:8]) + (" ..." if len(blocks) > 8 else "")
            raise ValueError(
                f"block {i!r} is not a removable block of this model; removable blocks: {known or 'none'} "
                "(fxprune.find_blocks lists them)"
            )
        for b in hits:
            if b in out:
                continue
            for c in out:
                if _conflict(b, c):
                    raise ValueError(
                        f"blocks {c.id!r} and {b.id!r} overlap (same add, or one inside the other); remove one of them"
                    )
            out.append(b)
    return out


# ------------------------------------------------------------------------------------------
# transforms (each on a copy)
# ------------------------------------------------------------------------------------------
def _copy(gm: fx.GraphModule) -> fx.GraphModule:
    """Deep copy with node metas, without the (stale after an edit) analysis."""
    memo: dict[int, Any] = {}
    a = gm.meta.get(ANALYSIS)
    if a is not None:
        memo[id(a)] = None
    out = copy.deepcopy(gm, memo)
    out.meta.pop(ANALYSIS, None)
    return out


def _drop_unused_attrs(gm: fx.GraphModule) -> None:
    """Delete submodules, parameters and buffers no node reads."""
    gm.delete_all_unused_submodules()
    mods = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    attrs = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}

    def used(fqn: str) -> bool:
        return any(fqn == t or fqn.startswith(t + ".") for t in mods | attrs)

    for fqn, _ in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        if not used(fqn):
            owner, _, name = fqn.rpartition(".")
            mod = gm.get_submodule(owner) if owner else gm
            if hasattr(mod, name):
                delattr(mod, name)


def remove_blocks(gm: fx.GraphModule, ids: Iterable[str], *, analyze: bool = True) -> fx.GraphModule:
    """A new GraphModule without the named blocks: each add's users read its kept operand,
    the branch is erased with the submodules, parameters and buffers only it read. With
    ``analyze=True`` the result is re-analyzed (shapes are unchanged, so no inputs are needed),
    ready for ``make_plan``. ``gm`` is not modified.

    Example:
        >>> gm = fxprune.analyze(torchvision.models.resnet18(), x)
        >>> small = remove_blocks(gm, ["layer1.1", "layer3.1"])
        >>> small.meta["fxprune.removed_blocks"]
        ('layer1.1/add_1', 'layer3.1/add_5')
    """
    if isinstance(ids, str):
        ids = [ids]
    out = _copy(gm)
    blocks = select_blocks(find_blocks(out), ids)
    nodes = {n.name: n for n in out.graph.nodes}
    for b in blocks:
        add = nodes[b.add]
        keep = add.args[1 - b.operand]  # the current node: an earlier removal may have replaced it
        add.replace_all_uses_with(keep)
        out.graph.erase_node(add)
        for name in reversed(b.nodes):
            out.graph.erase_node(nodes[name])
    _drop_unused_attrs(out)
    out.graph.lint()
    out.recompile()
    out.meta[REMOVED] = tuple(gm.meta.get(REMOVED, ())) + tuple(b.id for b in blocks)
    if analyze:
        _analyze(out)
    return out


def zero_blocks(gm: fx.GraphModule, ids: Iterable[str]) -> fx.GraphModule:
    """A copy of ``gm`` in which each named block's branch output is replaced by zeros
    (``torch.zeros_like``) at its add: the *masked* model of a depth pruning. The branch still
    runs and keeps its parameters."""
    out = _copy(gm)
    blocks = select_blocks(find_blocks(out), ids)
    nodes = {n.name: n for n in out.graph.nodes}
    for b in blocks:
        add, br = nodes[b.add], nodes[b.output]
        with out.graph.inserting_after(br):
            z = out.graph.call_function(torch.zeros_like, (br,))
        z.meta[SPEC] = br.meta.get(SPEC)  # not the rest: e.g. "is_wrapped" would make codegen patch zeros_like
        add.replace_input_with(br, z)
    out.graph.lint()
    out.recompile()
    return out


def gate_blocks(gm: fx.GraphModule, blocks: Sequence[Block]) -> tuple[fx.GraphModule, dict[str, torch.Tensor]]:
    """A copy of ``gm`` in which each block's branch output is multiplied by a scalar gate
    (a buffer, 1.0): setting a gate to 0 removes the block numerically, and the gradient of a
    loss with respect to a gate is ``sum(dL/db * b)`` (the first-order Taylor term).
    Returns the copy and ``{block id: gate tensor}``."""
    out = _copy(gm)
    nodes = {n.name: n for n in out.graph.nodes}
    gates: dict[str, torch.Tensor] = {}
    for i, b in enumerate(blocks):
        br, add = nodes[b.output], nodes[b.add]
        name = f"_fxprune_gate_{i}"
        g = torch.ones((), dtype=br.meta[SPEC].dtype)
        out.register_buffer(name, g)
        gates[b.id] = g
        with out.graph.inserting_after(br):
            ga = out.graph.get_attr(name)
        with out.graph.inserting_after(ga):
            m = out.graph.call_function(operator.mul, (br, ga))
        add.replace_input_with(br, m)
    out.graph.lint()
    out.recompile()
    return out, gates


# ------------------------------------------------------------------------------------------
# plans with removed blocks
# ------------------------------------------------------------------------------------------
def pending_blocks(gm: fx.GraphModule, removed: Sequence[str]) -> tuple[str, ...]:
    """The ids in ``removed`` that ``gm`` still has (``gm`` may already lack some of them).

    Raises:
        ValueError: ``gm`` lacks blocks that ``removed`` does not name (it was made for
            another plan).
    """
    done = tuple(gm.meta.get(REMOVED, ()))
    extra = [b for b in done if b not in removed]
    if extra:
        raise ValueError(
            f"this graph already has blocks {extra[:3]} removed, which the plan does not list; "
            "apply the plan to the graph it was made from"
        )
    return tuple(b for b in removed if b not in done)


def apply_removed(gm: fx.GraphModule, removed: Sequence[str]) -> fx.GraphModule:
    """``gm`` itself when it already lacks every block in ``removed``; else a re-analyzed copy
    without them (the graph a plan with ``removed_blocks`` was made on)."""
    todo = pending_blocks(gm, removed)
    return remove_blocks(gm, todo, analyze=True) if todo else gm
