"""Dependency analysis: every tensor dim of every node gets a ``Layout`` of channel classes.

requires: ``node.meta[SPEC]`` on every node (``propagate`` writes it from example inputs).
writes:   ``node.meta[DIMS]`` (a ``NodeDims``, or a tuple of them for multi-tensor results)
          and ``gm.meta[ANALYSIS]`` (an ``Analysis``). No graph edits.
ensures:  every parameter dim the rules relate to data has a layout; every class touching a
          graph input, a graph output, or an op without a rule is pinned, with the reason.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx
from torch.fx.node import map_aggregate

from . import ops as _ops  # noqa: F401 - every rule registered, in its stated order
from .axes import Axes, AxisError, Layout
from .keys import ANALYSIS, CAPTURE, DIMS, SPEC
from .rules import Ctx, Val, lookup, op_name, rule_for

__all__ = [
    "TensorSpec", "NodeDims", "ClassInfo", "Unsupported", "Analysis", "propagate", "analyze",
]  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor a node produced on the example inputs."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class NodeDims:
    """Layouts of one tensor's dims."""

    dims: tuple[Layout, ...]


@dataclass(frozen=True)
class ClassInfo:
    """One channel class (DepGraph's group before planning): indices removed together."""

    id: int
    size: int
    params: tuple[tuple[str, int], ...]  # (parameter or buffer FQN, dim) whose layout holds it
    pinned: str | None  # why it keeps every index, or None
    approx: str | None  # why pruning it is approximate, or None
    data: bool = True  # occurs in some tensor's dim (False: only in weights, e.g. kernel taps)
    weighted: bool = True  # some member is an nn.Parameter (not only buffers or constants)

    @property
    def prunable(self) -> bool:
        return self.pinned is None and self.weighted and self.size > 1


@dataclass(frozen=True)
class Unsupported:
    """An op the analysis had no rule for (or whose rule failed): its classes are pinned."""

    node: str
    op: str
    code: str
    reason: str

    def message(self) -> str:
        return (
            f"fxprune.analyze: {self.code} {self.reason}; the channels it touches stay whole. "
            f"Add @fxprune.register_rule for {self.op} to prune through it."
        )


@dataclass
class Analysis:
    """What ``analyze`` found: classes, parameter layouts, unsupported ops."""

    classes: tuple[ClassInfo, ...]
    param_layouts: dict[str, tuple[Layout, ...]]
    unsupported: tuple[Unsupported, ...]
    capture: str = "symbolic_trace"
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def prunable(self) -> list[ClassInfo]:
        return [c for c in self.classes if c.prunable]


# ------------------------------------------------------------------------------------------
# shape propagation
# ------------------------------------------------------------------------------------------
def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), value.dtype)
    if isinstance(value, torch.Size):
        return tuple(int(s) for s in value)
    if isinstance(value, (list, tuple)):
        return type(value)(_spec(v) for v in value) if type(value) in (list, tuple) else tuple(_spec(v) for v in value)
    if isinstance(value, (int, float, bool, str, type(None), torch.dtype, torch.device)):
        return value
    return f"<{type(value).__name__}>"


class _Propagate(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        n.meta[SPEC] = _spec(result)
        return result


def propagate(gm: fx.GraphModule, example_inputs: tuple) -> Any:
    """Run ``gm`` on ``example_inputs`` (no grad, eval mode, modes restored) and record every
    node's spec in ``node.meta[SPEC]``. Returns the outputs."""
    modes = {name: m.training for name, m in gm.named_modules()}
    gm.eval()
    try:
        with torch.no_grad():
            return _Propagate(gm).run(*example_inputs)
    finally:
        for name, m in gm.named_modules():
            m.training = modes[name]


# ------------------------------------------------------------------------------------------
# the analysis
# ------------------------------------------------------------------------------------------
def _is_tensor_spec(s: Any) -> bool:
    return isinstance(s, TensorSpec)


class _Analyzer:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.ax = Axes()
        self.params: dict[str, tuple[int, ...]] = {}
        self.tensors: dict[str, torch.Tensor] = dict(gm.named_parameters(remove_duplicate=False))
        self.tensors.update(dict(gm.named_buffers(remove_duplicate=False)))
        self.modules = dict(gm.named_modules(remove_duplicate=False))
        #: every (fqn, tensor) under each module, for the check that a module rule saw them all
        self.owned: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for fqn, t in self.tensors.items():
            parts = fqn.split(".")
            for i in range(len(parts)):
                self.owned.setdefault(".".join(parts[:i]), []).append((fqn, t))
        # tied weights: one tensor, several names -> one set of axes
        self.canon: dict[str, str] = {}
        seen: dict[int, str] = {}
        for name, t in self.tensors.items():
            self.canon[name] = seen.setdefault(id(t), name)
        self.env: dict[str, Any] = {}
        self.records: dict[str, dict[str, int]] = {}
        self.unsupported: list[Unsupported] = []
        # contractions between two activations, decided by zero-tracking in finish():
        # (node name, contracted axis, operand node, operand node)
        self.contractions: list[tuple[str, int, fx.Node, fx.Node]] = []
        # reductions unchanged by zeros (sums, norms), decided by zero-tracking in finish():
        # (node name, reduced axis, operand node, "pin" or "approx" when not zero, reason)
        self.zero_reductions: list[tuple[str, int, fx.Node, str, str]] = []

    # parameters and buffers share one set of axes per tensor object
    def param(self, fqn: str) -> Val:
        key = self.canon.get(fqn, fqn)
        t = self.tensors.get(key)
        if t is None:
            t = self.gm.get_parameter(fqn) if "." in fqn else getattr(self.gm, fqn)
        if key not in self.params:
            self.params[key] = tuple(self.ax.new(s) for s in t.shape)
        return Val(self.params[key], tuple(t.shape), key)

    def fresh_value(self, spec: Any) -> Any:
        if _is_tensor_spec(spec):
            return Val(tuple(self.ax.new(s) for s in spec.shape), spec.shape)
        if isinstance(spec, (list, tuple)):
            return type(spec)(self.fresh_value(s) for s in spec)
        return spec

    def pin_value(self, v: Any, reason: str) -> None:
        for val in _vals(v):
            for a in val.axes:
                self.ax.pin(a, reason)

    def wrap(self, out: Any, spec: Any) -> Any:
        """Rule result (axes tuple / list of tuples / None) -> Val structure, shape-checked."""
        if out is None:
            if _has_tensor(spec):
                raise ValueError("the rule gave no layout for a tensor result")
            return spec
        if isinstance(out, list):
            return type(spec)(self.wrap(o, s) for o, s in zip(out, spec))
        if not _is_tensor_spec(spec):
            raise ValueError("the rule gave a layout for a non-tensor result")
        sizes = tuple(self.ax.size(a) for a in out)
        if sizes != tuple(spec.shape):
            raise ValueError(f"rule layout sizes {sizes} differ from the result's shape {spec.shape}")
        return Val(tuple(out), spec.shape)

    def run(self) -> None:
        gm, ax = self.gm, self.ax
        for node in gm.graph.nodes:
            ax._node = node.name
            spec = node.meta.get(SPEC)
            if node.op == "placeholder":
                v = self.fresh_value(spec)
                self.pin_value(v, f"graph input {node.name}")
            elif node.op == "get_attr":
                t = _fetch_attr(gm, node.target)
                v = self.param(node.target) if isinstance(t, torch.Tensor) else spec
            elif node.op == "output":
                self.pin_value(map_aggregate(node.args, self._lookup), "graph output")
                continue
            else:
                v = self.call(node, spec)
            self.env[node.name] = v

    def _lookup(self, a: Any) -> Any:
        return self.env[a.name] if isinstance(a, fx.Node) else a

    def call(self, node: fx.Node, spec: Any) -> Any:
        args: Any = map_aggregate(node.args, self._lookup)
        kwargs: Any = map_aggregate(node.kwargs, self._lookup)
        # picking from a tuple/list result is structural, not an op
        if node.target is operator.getitem and not isinstance(args[0], Val) and isinstance(args[0], (list, tuple)):
            return args[0][args[1]]
        ctx = Ctx(self.ax, node, spec, self.param)
        ctx.defer_contraction = lambda a, da, b, db: self._defer_contraction(node, a, da, b, db)  # type: ignore[attr-defined]
        ctx.defer_zero = lambda v, d, kind, why: self._defer_zero(node, v, d, kind, why)  # type: ignore[attr-defined]
        reason = None
        try:
            found = lookup(node, self.modules, args, kwargs, ctx)
            if found is None:
                reason = "has no rule"
            else:
                key, a, kw = found
                out = self.wrap(rule_for(key, ctx, a, kw)(ctx, *a, **kw), spec)
                self._pin_untouched_module_params(node)
                if ctx.records:
                    self.records[node.name] = dict(ctx.records)
                return out
        except (AxisError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            reason = f"could not be described ({type(e).__name__}: {e})"
        # no rule, or the rule could not describe this call: pin everything it touches
        op = op_name(node, self.gm)
        self.unsupported.append(Unsupported(node.name, op, node.format_node() or node.name, reason))
        why = f"{op} at {node.name} {reason}"
        self.pin_value((args, kwargs), why)
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(node.target))
            for name, _ in list(mod.named_parameters()) + list(mod.named_buffers()):
                self.pin_value(self.param(f"{node.target}.{name}"), why)
        out = self.fresh_value(spec)
        self.pin_value(out, why)
        return out

    def _defer_contraction(self, node: fx.Node, a: Val, da: int, b: Val, db: int) -> bool:
        """Record a contraction between two activations for zero-tracking; False (the rule
        marks it approximate) when an operand is not one of the node's inputs."""
        na, nb = self._operand(node, a), self._operand(node, b)
        if na is None or nb is None:
            return False
        self.contractions.append((node.name, a.axes[da], na, nb))
        return True

    def _operand(self, node: fx.Node, v: Val) -> fx.Node | None:
        """The input node of ``node`` whose value ``v`` is (None: ``v`` is not an input)."""
        return next((n for n in node.all_input_nodes if self.env.get(n.name) is v), None)

    def _defer_zero(self, node: fx.Node, v: Val, d: int, kind: str, reason: str) -> bool:
        """Record a zero-safe reduction of ``v`` over dim ``d`` for zero-tracking; False (the
        rule applies ``kind`` now) when ``v`` is not one of the node's inputs."""
        operand = self._operand(node, v)
        if operand is None:
            return False
        self.zero_reductions.append((node.name, v.axes[d], operand, kind, reason))
        return True

    def _pin_untouched_module_params(self, node: fx.Node) -> None:
        """A module rule must account for every tensor of its module; any it did not is
        pinned, so the rewrite never slices a tensor the module's code reads whole."""
        if node.op != "call_module":
            return
        target = str(node.target)  # a call_module's target is its qualified name
        mod = self.modules[target]
        for fqn, t in self.owned.get(target, ()):
            if self.canon.get(fqn, fqn) not in self.params and t.dim() > 0:
                name = fqn[len(target) + 1:]
                self.pin_value(self.param(fqn), f"{type(mod).__name__} tensor {name} not described by its rule")

    # -- results ------------------------------------------------------------------------------
    def finish(self) -> Analysis:
        ax = self.ax
        ids: dict[int, int] = {}
        sizes: list[int] = []
        memo: dict[int, Layout] = {}

        def layout(a: int) -> Layout:
            r = ax.find(a)
            got = memo.get(r)
            if got is not None:
                return got
            f = ax.refinement(r)
            if f is None:
                if r not in ids:
                    ids[r] = len(ids)
                    sizes.append(ax.size(r))
                lay = Layout("leaf", ax.size(r), cls=ids[r])
            else:
                lay = Layout(f[0], ax.size(r), parts=tuple(layout(c) for c in f[1]))
            memo[r] = lay
            return lay

        def node_dims(v: Any) -> Any:
            if isinstance(v, Val):
                return NodeDims(tuple(layout(a) for a in v.axes))
            if isinstance(v, (list, tuple)):
                return tuple(node_dims(x) for x in v)
            return None

        in_data: set[int] = set()
        for node in self.gm.graph.nodes:
            if node.name in self.env:
                node.meta[DIMS] = dims = node_dims(self.env[node.name])
                for nd in _flat_dims(dims):
                    for lay in nd.dims:
                        in_data.update(lay.classes())
        param_layouts = {k: tuple(layout(a) for a in axes) for k, axes in self.params.items()}
        # aliases of tied tensors read the same layouts
        for name, key in self.canon.items():
            if key in param_layouts:
                param_layouts[name] = param_layouts[key]

        def first_reason(marks: list[tuple[int, str, str]]) -> dict[int, str]:
            """For each class under a marked axis, the first mark's reason and node."""
            out: dict[int, str] = {}
            for a, reason, where in marks:
                for leaf in ax.leaves(a):
                    c = ids.get(ax.find(leaf))
                    if c is not None and c not in out:
                        out[c] = f"{reason} ({where})" if where and where not in reason else reason
            return out

        if self.contractions or self.zero_reductions:  # exact where an operand is zero on the removed indices
            from .zeros import ZeroTracker

            zt = ZeroTracker(self.gm, param_layouts)
            for where, axis, na, nb in self.contractions:
                for leaf in ax.leaves(axis):
                    c = ids.get(ax.find(leaf))
                    if c is not None and not (zt(na, c) or zt(nb, c)):
                        ax.approx.append((leaf, "contracted between two activations, neither provably zero on the "
                                                "removed indices (matmul/einsum/attention)", where))  # fmt: skip
            for where, axis, operand, kind, reason in self.zero_reductions:
                for leaf in ax.leaves(axis):
                    c = ids.get(ax.find(leaf))
                    if c is not None and not zt(operand, c):
                        (ax.pins if kind == "pin" else ax.approx).append((leaf, reason, where))
        pinned, approx = first_reason(ax.pins), first_reason(ax.approx)
        members: dict[int, list[tuple[str, int]]] = {}
        for key, lays in param_layouts.items():
            if self.canon.get(key, key) != key:
                continue
            for d, lay in enumerate(lays):
                for c in set(lay.classes()):
                    members.setdefault(c, []).append((key, d))
        classes = tuple(
            ClassInfo(c, sizes[c], tuple(members.get(c, ())), pinned.get(c), approx.get(c), c in in_data,
                      any(isinstance(self.tensors.get(k), torch.nn.Parameter) for k, _ in members.get(c, ())))
            for c in range(len(sizes))
        )
        extra = {n: {k: layout(a) for k, a in r.items()} for n, r in self.records.items()}
        return Analysis(classes, param_layouts, tuple(self.unsupported), extra=extra)


def _vals(v: Any) -> list[Val]:
    out: list[Val] = []

    def visit(x: Any) -> Any:
        if isinstance(x, Val):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    visit(v)
    return out


def _flat_dims(d: Any) -> list[NodeDims]:
    if isinstance(d, NodeDims):
        return [d]
    if isinstance(d, tuple):
        return [x for y in d for x in _flat_dims(y)]
    return []


def _has_tensor(spec: Any) -> bool:
    if _is_tensor_spec(spec):
        return True
    if isinstance(spec, (list, tuple)):
        return any(_has_tensor(s) for s in spec)
    return False


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def analyze(gm: fx.GraphModule, example_inputs: tuple | None = None) -> fx.GraphModule:
    """Annotate ``gm`` with channel classes. Writes ``node.meta[DIMS]`` and
    ``gm.meta[ANALYSIS]``; returns ``gm`` (no graph edits).

    Example:
        >>> gm = analyze(torch.fx.symbolic_trace(model), (torch.randn(1, 3, 32, 32),))
        >>> [c.size for c in gm.meta[ANALYSIS].prunable()]
        [16, 32]
    """
    import time

    t0 = time.perf_counter()
    if example_inputs is not None:
        propagate(gm, example_inputs)
    missing = [n.name for n in gm.graph.nodes if SPEC not in n.meta and n.op != "output"]
    if missing:
        raise ValueError(
            f"fxprune.analyze: nodes {missing[:3]} have no {SPEC}; pass example_inputs so shapes "
            "can be propagated"
        )
    a = _Analyzer(gm)
    a.run()
    result = a.finish()
    result.seconds = time.perf_counter() - t0
    result.capture = gm.meta.get(CAPTURE, "user GraphModule")
    gm.meta[ANALYSIS] = result
    return gm

