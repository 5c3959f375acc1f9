"""The op registry: one record (``OpSpec``) per canonical op, holding every facet of it.

A record holds the op's rule, its torch spellings (``F.conv2d``, ``torch.conv2d`` as
call_function targets; ``"view"`` as a call_method name; ``nn.Conv2d`` as a call_module class
with the adapter that binds the module's tensors), its ATen overloads (the spellings of a
``torch.export`` graph), its rewrite hook (re-derives size arguments), its module update (sets a
pruned module's size attributes), its zero behaviour (what zero-tracking, ``zeros.py``, may
conclude from its operands), its block role (``blocks.py``: an add or a difference whose
operand may be a removable branch) and its FLOP formulas (for ATen ops
``torch.utils.flop_counter`` does not count). Content modules fill the records through the
``register_*`` functions below; every pass asks the registry (``spec_of``, ``spec_for_node``,
``key_of``, ``lookup``, ``list_ops``) and keeps no table of its own.

A second registration of a key, a spelling, a hook or an update raises ``DuplicateOpError``
naming both definitions, unless ``replace=True``. A specialization is a ``when=`` variant of
the base rule, tried first.

This module imports nothing of fxprune but ``axes`` (through ``Ctx``).

Example:
    >>> from fxprune.passes.registry import spec_of
    >>> spec = spec_of(torch.flip)
    >>> spec.key, spec.zeros, torch.ops.aten.flip.default in spec.aten
    ('flip', 'moves', True)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .axes import Axes

__all__ = [
    "Val", "Ctx", "OpSpec", "DuplicateOpError", "ZERO_KINDS", "BLOCK_KINDS", "RULES",
    "register_rule", "register_spellings", "register_module", "register_method", "register_rewrite",
    "register_module_update", "register_flops", "install_flop_formulas", "aten_ops",
    "rule_for", "key_of", "spec_of", "module_update_of", "spec_for_node", "specs", "list_ops", "lookup", "has_module_rule", "op_name",
]  # fmt: skip


@dataclass(frozen=True)
class Val:
    """A tensor as a rule sees it: one axis per dim, its shape, and its FQN if it is a
    parameter or buffer."""

    axes: tuple[int, ...]
    shape: tuple[int, ...]
    param: str | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)


class Ctx:
    """What a rule may do: relate axes, refine them, pin them, reach module parameters."""

    def __init__(self, ax: Axes, node: Any, spec: Any, param: Callable[[str], Val]):
        self.ax = ax
        self.node = node
        self.spec = spec
        self._param = param
        #: named axes a rewrite hook needs later (e.g. a conv's group axis)
        self.records: dict[str, int] = {}

    def record(self, name: str, axis: int) -> None:
        self.records[name] = axis

    def param(self, fqn: str) -> Val:
        return self._param(fqn)

    @property
    def returns_tensor(self) -> bool:
        """Whether the node's result is one tensor (not a tuple, a size or a python value)."""
        return hasattr(self.spec, "shape")

    def out_shape(self, i: int | None = None) -> tuple[int, ...]:
        spec = self.spec if i is None else self.spec[i]
        return tuple(spec.shape)

    def fresh(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.ax.new(s) for s in shape)

    def unify(self, a: int, b: int) -> None:
        self.ax.unify(a, b)

    def pin(self, axes: Any, reason: str) -> None:
        for a in [axes] if isinstance(axes, int) else axes:
            self.ax.pin(a, reason)

    def approx(self, a: int, reason: str) -> None:
        self.ax.mark_approx(a, reason)


Rule = Callable[..., Any]

#: what zero-tracking (``zeros.py``) may conclude from an op's operands, in the masked model:
ZERO_KINDS = {
    "moves": "the result is zero where its first input is (views, data movement, f(0) = 0)",
    "product": "zero where any operand is",
    "quotient": "zero where the numerator is",
    "power": "zero where the base is, for a constant positive exponent",
    "sum": "zero where both operands are",
    "concat": "zero where every piece holding the class is",
    "linear": "zero in the output features when weight and bias are parameters",
    "conv": "zero in the output channels when weight and bias are parameters",
    "embedding": "zero in the embedding dim when the table is a parameter",
    "batch_norm": "zero in the channels when weight and bias are parameters",
    "matmul": "zero in an operand's non-contracted dims where that operand is",
    "attention": "zero in the value's batch and channel dims where the value is",
}
#: the role of an op in ``blocks.py``: ``y = a + b`` (either operand may be a branch) or
#: ``y = a - b`` (only ``b`` may); both with an optional ``alpha`` scaling ``b``
BLOCK_KINDS = ("add", "sub")


@dataclass(eq=False)
class OpSpec:
    """Everything fxprune knows about one canonical op (module docstring)."""

    key: str
    rule: Rule | None = None
    #: specializations ``(when, rule)``, newest first, tried before ``rule``
    variants: list[tuple[Callable[..., bool], Rule]] = field(default_factory=list)
    functions: list[Any] = field(default_factory=list)  # torch-level call_function targets
    aten: list[Any] = field(default_factory=list)  # ATen overloads (torch.export graphs)
    methods: list[str] = field(default_factory=list)  # call_method names
    modules: dict[type, Callable[..., dict]] = field(default_factory=dict)  # class -> adapter
    rewrite: Callable[..., Any] | None = None
    module_updates: dict[type, Callable[..., Any]] = field(default_factory=dict)  # class -> update
    zeros: str | None = None  # a ZERO_KINDS key, or None: zero-tracking answers no
    block: str | None = None  # a BLOCK_KINDS entry, or None
    flops: dict[Any, Callable[..., int]] = field(default_factory=dict)  # ATen op -> FLOP formula
    signature: inspect.Signature | None = None  # the rule's, without ``ctx``


_SPECS: dict[str, OpSpec] = {}
_FUNCS: dict[Any, str] = {}  # call_function target (torch function or ATen overload) -> key
_METHODS: dict[str, str] = {}
_MODULES: dict[type, str] = {}
#: key -> base rule (a view kept for callers that only need the rules)
RULES: dict[str, Rule] = {}


class DuplicateOpError(ValueError):
    """An op key, spelling, hook or update registered twice without ``replace=True``."""


def _defined_at(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _spec(key: str) -> OpSpec:
    if key not in _SPECS:
        _SPECS[key] = OpSpec(key)
    return _SPECS[key]


def aten_ops(*names: str) -> list[Any]:
    """``"view.default"`` -> ``torch.ops.aten.view.default``: ATen overloads by name, for
    ``register_rule``'s spellings (names this torch lacks are skipped)."""
    out = []
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload or "default", None)
        if op is not None:
            out.append(op)
    return out


def _is_aten(target: Any) -> bool:
    return isinstance(target, torch._ops.OpOverload)


def _check_claim(table: dict, spelling: Any, key: str, replace: bool, kind: str) -> None:
    old = table.get(spelling)
    if old is not None and old != key and not replace:
        raise DuplicateOpError(
            f"register_rule: the {kind} {getattr(spelling, '__name__', spelling)!r} already reaches rule {old!r} "
            f"({_defined_at(RULES.get(old))}); it cannot also reach {key!r} unless replace=True"
        )


def _claim(key: str, functions: tuple = (), methods: tuple = (), classes: dict | None = None) -> None:
    """Point each spelling at ``key``'s record (the checks were done before)."""
    spec = _spec(key)
    for f in functions:
        old = _FUNCS.get(f)
        if old is not None and old != key:  # replace=True: the spelling leaves its old record
            for lst in (_SPECS[old].functions, _SPECS[old].aten):
                if f in lst:
                    lst.remove(f)
        _FUNCS[f] = key
        lst = spec.aten if _is_aten(f) else spec.functions
        if f not in lst:
            lst.append(f)
    for m in methods:
        old = _METHODS.get(m)
        if old is not None and old != key and m in _SPECS[old].methods:
            _SPECS[old].methods.remove(m)
        _METHODS[m] = key
        if m not in spec.methods:
            spec.methods.append(m)
    for c, adapter in (classes or {}).items():
        old = _MODULES.get(c)
        if old is not None and old != key:
            _SPECS[old].modules.pop(c, None)
        _MODULES[c] = key
        spec.modules[c] = adapter


def register_rule(
    key: str, *functions: Any, methods: tuple[str, ...] = (), replace: bool = False,
    when: Callable[..., bool] | None = None, zeros: str | None = None, block: str | None = None,
) -> Callable[[Rule], Rule]:  # fmt: skip
    """Add a rule under ``key``, reached from ``functions`` (call_function targets: torch
    functions and ATen overloads alike) and ``methods`` (call_method names). Arguments bind to
    the rule's own signature.

    A key, function or method name that already has a rule raises ``DuplicateOpError``
    naming both definitions, unless ``replace=True``. ``when=predicate`` adds a
    *specialization* of an existing ``key`` instead: ``predicate(ctx, *args, **kwargs)`` (the
    arguments as bound to the base rule) is tried first, and the specialized rule runs where it
    returns True, the base rule elsewhere. ``zeros=`` (a ``ZERO_KINDS`` key) says what
    zero-tracking (``passes/zeros.py``) may conclude through the op, e.g. ``"moves"`` for an op
    that only moves or keeps its first input's values (a view, a flip). ``block=`` (``"add"`` or
    ``"sub"``) makes its nodes candidates for depth pruning (``passes/blocks.py``).

    Example:
        >>> @register_rule("my_op", torch.ops.mylib.my_op.default)
        ... def _my_op(ctx, input, scale):
        ...     return input.axes  # relate input.axes to the output's axes; ctx.unify / ctx.pin
    """
    if zeros is not None and zeros not in ZERO_KINDS:
        raise ValueError(f"register_rule({key!r}, zeros={zeros!r}): one of {sorted(ZERO_KINDS)}")
    if block is not None and block not in BLOCK_KINDS:
        raise ValueError(f"register_rule({key!r}, block={block!r}): one of {BLOCK_KINDS}")

    def deco(fn: Rule) -> Rule:
        # every check before any change: a refused registration leaves the tables as they were
        for table, spellings, kind in ((_FUNCS, functions, "function"), (_METHODS, methods, "method")):
            for spelling in spellings:
                _check_claim(table, spelling, key, replace, kind)
        if when is not None:
            if key not in RULES:
                raise DuplicateOpError(f"register_rule({key!r}, when=...): no base rule {key!r} to specialize")
            _SPECS[key].variants.insert(0, (when, fn))
        else:
            if key in RULES and not replace:
                raise DuplicateOpError(
                    f"register_rule: {key!r} already has a rule ({_defined_at(RULES[key])}); the new one is "
                    f"{_defined_at(fn)}. Pass replace=True to replace it, or when=... to specialize it."
                )
            spec = _spec(key)
            if replace:
                spec.variants.clear()
            spec.rule = RULES[key] = fn
            spec.zeros, spec.block = zeros, block
            sig = inspect.signature(fn)
            spec.signature = sig.replace(parameters=list(sig.parameters.values())[1:])
        _claim(key, functions, methods)
        return fn

    return deco


def register_spellings(key: str, *functions: Any, methods: tuple[str, ...] = (), replace: bool = False) -> None:
    """More spellings (ATen overloads, usually) of ``key``'s existing rule, whose arguments bind
    to it as they are."""
    if key not in RULES:
        raise DuplicateOpError(f"register_spellings({key!r}): no rule {key!r}; register the rule first")
    for table, spellings, kind in ((_FUNCS, functions, "function"), (_METHODS, methods, "method")):
        for spelling in spellings:
            _check_claim(table, spelling, key, replace, kind)
    _claim(key, functions, methods)


def register_method(key: str, *names: str) -> None:
    register_spellings(key, methods=names)


def register_module(key: str, *classes: type, replace: bool = False) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Map module classes (call_module) to rule ``key``; the decorated adapter returns the
    rule's keyword arguments: ``adapter(ctx, module, fqn, *args, **kwargs) -> dict``.

    Only the exact classes are matched: a subclass may override ``forward``, and guessing
    that it did not would be the silent error this project exists to avoid.
    """

    def deco(adapter: Callable[..., dict]) -> Callable[..., dict]:
        for c in classes:
            _check_claim(_MODULES, c, key, replace, "module class")
        _claim(key, classes={c: adapter for c in classes})
        return adapter

    return deco


def _set_facet(spec: OpSpec, name: str, fn: Any, replace: bool) -> None:
    old = getattr(spec, name)
    if old is not None and old is not fn and not replace:
        raise DuplicateOpError(
            f"{name} of {spec.key!r} is already {_defined_at(old)}; the new one is {_defined_at(fn)}. "
            "Pass replace=True to replace it."
        )
    setattr(spec, name, fn)


def register_rewrite(key: str, replace: bool = False) -> Callable:
    """Hook for op ``key``: ``fn(rw, node, args, kwargs, graph, taint)`` re-derives the node's
    size arguments. ``args``/``kwargs`` are already mapped into the new ``graph``; ``taint``
    holds the new-graph nodes whose value depends on a pruned size. Returns None (keep the
    node as it is) or ``(new_target_or_None, args, kwargs)``."""

    def deco(fn: Callable) -> Callable:
        _set_facet(_spec(key), "rewrite", fn, replace)
        return fn

    return deco


def register_module_update(*classes: type, replace: bool = False) -> Callable:
    """Hook for module classes (each with a module rule): ``fn(rw, node, module)`` sets its
    size attributes. It may return a new module instead (same tensors and state_dict names),
    which replaces it. Kept per class on the record the class reaches (``nn.Flatten`` and
    ``nn.Unflatten`` share a rule, not their attributes)."""

    def deco(fn: Callable) -> Callable:
        for c in classes:
            if c not in _MODULES:
                raise DuplicateOpError(f"register_module_update({c.__name__}): no module rule; register_module first")
            old = _SPECS[_MODULES[c]].module_updates.get(c)
            if old is not None and old is not fn and not replace:
                raise DuplicateOpError(
                    f"the module update of {c.__name__} is already {_defined_at(old)}; the new one is "
                    f"{_defined_at(fn)}. Pass replace=True to replace it."
                )
        for c in classes:
            _SPECS[_MODULES[c]].module_updates[c] = fn
        return fn

    return deco


def register_flops(key: str, *ops: Any) -> Callable:
    """FLOP formula for ATen ``ops`` that ``key``'s op runs as and ``torch.utils.flop_counter``
    does not count (CPU kernels, fused fast paths). Kept on the record; torch's global flop
    registry is only touched by ``install_flop_formulas`` (called on the first MAC count), so
    importing fxprune changes nothing in torch."""

    def deco(fn: Callable[..., int]) -> Callable[..., int]:
        spec = _spec(key)
        for op in ops:
            if op is not None:
                spec.flops[op] = fn
        return fn

    return deco


def install_flop_formulas() -> None:
    """Put every record's FLOP formulas into ``torch.utils.flop_counter``'s registry, where it
    has none for that op yet. Idempotent."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    for spec in _SPECS.values():
        for op, fn in spec.flops.items():
            if op not in flop_registry:
                register_flop_formula(op)(fn)


# ------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------
def rule_for(key: str, ctx: Any, args: tuple, kwargs: dict) -> Rule:
    """The rule that describes this call: the first specialization of ``key`` whose predicate
    holds, else the base rule."""
    spec = _SPECS[key]
    for when, fn in spec.variants:
        if when(ctx, *args, **kwargs):
            return fn
    return RULES[key]


def key_of(target: Any) -> str | None:
    """The rule key a call target reaches: a function (``torch.roll``, an ATen overload), a
    method name (``"roll"``) or a module class (``nn.Conv2d``); None where no rule does."""
    if isinstance(target, str):
        return _METHODS.get(target)
    if isinstance(target, type):
        return _MODULES.get(target)
    try:
        return _FUNCS.get(target)
    except TypeError:  # an unhashable target reaches nothing
        return None


def spec_of(target: Any) -> OpSpec | None:
    """The record a call target (as for ``key_of``) or a key reaches."""
    key = key_of(target)
    return _SPECS.get(key) if key is not None else None


def spec_for_node(node: Any, modules: Any) -> OpSpec | None:
    """The record of a call node. ``modules``: the GraphModule, or a ``{qualified name:
    module}`` mapping of its modules."""
    if node.op == "call_module":
        mod = modules[node.target] if isinstance(modules, dict) else modules.get_submodule(node.target)
        return spec_of(type(mod))
    if node.op in ("call_function", "call_method"):
        return spec_of(node.target)
    return None


def specs() -> dict[str, OpSpec]:
    """Every record, by key (a copy of the index; the records themselves are live)."""
    return dict(_SPECS)


def _name(f: Any) -> str:
    return str(getattr(f, "__name__", f)) if not _is_aten(f) else str(f)


def list_ops() -> dict[str, dict[str, Any]]:
    """Every rule key with the spellings that reach it (functions, ATen overloads, methods,
    module classes) and its other facets (rewrite hook, module update, zeros, block, FLOP
    formulas)."""
    return {
        k: {"functions": [_name(f) for f in s.functions], "aten": [_name(f) for f in s.aten],
            "methods": list(s.methods), "modules": [c.__name__ for c in s.modules], "rewrite": s.rewrite is not None,
            "module_updates": [c.__name__ for c in s.module_updates], "zeros": s.zeros, "block": s.block,
            "flops": [_name(op) for op in s.flops]}
        for k, s in _SPECS.items() if s.rule is not None
    }  # fmt: skip


def module_update_of(cls: type) -> Callable[..., Any] | None:
    """The module update registered for exactly ``cls``, if any."""
    spec = spec_of(cls)
    return spec.module_updates.get(cls) if spec is not None else None


def has_module_rule(cls: type) -> bool:
    """Whether instances of exactly ``cls`` are covered by a module rule (capture keeps them
    as leaf modules, so the rule is reached instead of the class being traced through)."""
    return cls in _MODULES


def lookup(node: Any, gm: Any, args: tuple, kwargs: dict, ctx: Ctx) -> tuple[str, tuple, dict] | None:
    """Canonical (key, rule args, rule kwargs) for a call node, or None when no rule covers it.
    ``gm``: the GraphModule, or a ``{qualified name: module}`` mapping of its modules."""
    if node.op == "call_module":
        mod = gm[node.target] if isinstance(gm, dict) else gm.get_submodule(node.target)
        key = _MODULES.get(type(mod))
        if key is None or _SPECS[key].rule is None:
            return None
        return key, (), _SPECS[key].modules[type(mod)](ctx, mod, node.target, *args, **kwargs)
    spec = spec_of(node.target) if node.op in ("call_function", "call_method") else None
    if spec is None or spec.rule is None or spec.signature is None:  # a rule always has one
        return None
    try:
        bound = spec.signature.bind(*args, **kwargs)
    except TypeError:
        return None  # a spelling with arguments this rule does not describe
    return spec.key, bound.args, bound.kwargs


def op_name(node: Any, gm: Any) -> str:
    """A readable name for the op of a node: ``nn.Conv2d``, ``torch.roll``, ``.view``."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__qualname__
    if node.op == "call_method":
        return f".{node.target}"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    return f"{mod}.{getattr(t, '__name__', str(t))}".lstrip(".")
