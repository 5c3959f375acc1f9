"""fxprune as a ``torch.compile`` backend: ``torch.compile(model, backend="fxprune")``.

Dynamo hands a backend an ``fx.GraphModule`` in which modules are inlined as
``call_function`` nodes (``torch.conv2d``, ``F.batch_norm``, ``torch._C._nn.linear``) and
every parameter and buffer arrives as a *placeholder*, its real tensor in the example
inputs. Module names survive only in each placeholder's Dynamo source
(``L['self']._modules['layer1']._modules['0']._parameters['weight']``).

The backend *lifts* that graph: each placeholder whose source is a module's parameter or
buffer becomes a ``get_attr`` of a module tree that holds the tensor under its original
FQN (``layer1.0.weight``). The lifted graph is an ordinary GraphModule, so the same rule
table, plan and rewrite run on it, and plans made by ``fxprune.compile`` on the same model
apply to it (groups are matched by their member FQNs, not by ids).

Semantics (the backend is for inference):

- The compiled callable runs *pruned copies* of the weights taken at compile time.
- The pruning is decided once and cached by parameter identity: a recompile (a new batch
  size, a guard failure) re-applies the same plan to the new graph instead of deciding
  again, so every graph of one model keeps the same channels.
- If a weight changes after compiling (its version counter moves, e.g. an optimizer
  step), or another tensor is passed in its place, the compiled callable raises
  :class:`StaleWeightsError` instead of silently serving the old pruned copy. Call
  ``torch._dynamo.reset()`` and compile again.
- A graph break splits the model into several graphs. A channel class that crosses a
  break is a graph output on one side and a graph input on the other, so it is pinned on
  both sides and the report says so. ``fullgraph=True`` is recommended: it turns breaks
  into errors and lets every group be pruned.

Example:
    >>> fast = torch.compile(model, backend="fxprune", options={"ratio": 0.5, "then": "eager"})
    >>> y = fast(x)
    >>> fxprune.dynamo.reports()[-1].params_after < fxprune.dynamo.reports()[-1].params_before
    True
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import fx, nn

from .errors import FxpruneError
from .passes.dependency import analyze as _analyze
from .passes.keys import ANALYSIS, CAPTURE, REPORT
from .passes.rewrite import rewrite
from .plan import Group, Plan
from .report import Report, make_report

__all__ = ["backend", "fxprune_backend", "lift", "reports", "reset", "StaleWeightsError", "remap_plan"]

_THEN = ("inductor", "eager")
# Options consumed by the backend itself; everything else goes to fxprune.compile.
_BACKEND_OPTIONS = ("then", "plan")


class StaleWeightsError(FxpruneError):
    """A weight changed after ``torch.compile(..., backend="fxprune")`` pruned a copy of it."""


_REPORTS: list[Report] = []
_KEEP_REPORTS = 64  # the process-wide list keeps the newest ones only


def reports() -> list[Report]:
    """The reports of every graph the ``"fxprune"`` backend compiled in this process, oldest
    first, at most the newest 64 (a model with graph breaks gives one per graph). A backend
    made by :func:`backend` also keeps its own list, ``backend(...).reports``."""
    return list(_REPORTS)


# ------------------------------------------------------------------------------------------
# lifting Dynamo's graph


_TOKEN = re.compile(r"\.(\w+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]")
_STORAGE = ("_modules", "_parameters", "_buffers")


def _source_name(node: fx.Node) -> str | None:
    arg = node.meta.get("grapharg")
    source = getattr(arg, "source", None)
    if source is None:
        return None
    name = source.name
    return name() if callable(name) else name


def state_fqn(source: str) -> str | None:
    """The FQN of a module parameter or buffer from its Dynamo source name, else None.

    Example:
        >>> state_fqn("L['self']._modules['layer1']._modules['0']._parameters['weight']")
        'layer1.0.weight'
        >>> state_fqn("L['x']") is None
        True
    """
    if "._parameters[" not in source and "._buffers[" not in source:
        return None
    root = re.match(r"^\s*[LG]\[\s*['\"][^'\"]*['\"]\s*\]", source)
    rest = source[root.end() :] if root else source
    parts = [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(rest)]
    return ".".join(p for p in parts if p not in _STORAGE) or None


@dataclass
class Lifted:
    """A Dynamo graph with its module state turned back into ``get_attr`` nodes."""

    gm: fx.GraphModule
    input_positions: tuple[int, ...]  # positions of the real inputs in Dynamo's argument list
    state_positions: dict[str, int]  # FQN -> position of that tensor in Dynamo's argument list


def lift(gm: fx.GraphModule, example_inputs: list[Any]) -> Lifted:
    """Turn the parameter and buffer placeholders of a Dynamo graph into ``get_attr`` nodes
    under their original FQNs. The user's tensors are shared (detached), never modified:
    the rewrite slices new ones.

    Raises:
        FxpruneError: the placeholders and example inputs do not line up.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise FxpruneError(
            f"fxprune backend: Dynamo gave {len(placeholders)} placeholders but {len(example_inputs)} example inputs"
        )
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    root = nn.Module()
    inputs: list[int] = []
    state: dict[str, int] = {}
    aliases: dict[int, str] = {}
    for i, (node, value) in enumerate(zip(placeholders, example_inputs)):
        source = _source_name(node)
        fqn = state_fqn(source) if source else None
        if fqn is not None and isinstance(value, torch.Tensor):
            if fqn not in state:
                _install(root, fqn, value)
                state[fqn] = i
                continue
            if example_inputs[state[fqn]] is value:  # the same tensor reached through a second source
                aliases[i] = fqn
                continue
        inputs.append(i)
    for i in inputs:  # real inputs first, in Dynamo's order
        env[placeholders[i]] = graph.placeholder(placeholders[i].name)
    for fqn, i in state.items():
        env[placeholders[i]] = graph.get_attr(fqn)
    for i, fqn in aliases.items():
        env[placeholders[i]] = env[placeholders[state[fqn]]]
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    out = fx.GraphModule(root, graph, class_name="DynamoGraph")
    out.meta[CAPTURE] = "dynamo"
    return Lifted(out, tuple(inputs), state)


def _install(root: nn.Module, fqn: str, value: torch.Tensor) -> None:
    *path, name = fqn.split(".")
    mod = root
    for p in path:
        if not hasattr(mod, p):
            mod.add_module(p, nn.Module())
        mod = getattr(mod, p)
    if isinstance(value, nn.Parameter):
        mod.register_parameter(name, nn.Parameter(value.detach(), requires_grad=value.requires_grad))
    else:
        mod.register_buffer(name, value.detach())


# ------------------------------------------------------------------------------------------
# plans across graphs


def remap_plan(plan: Plan, gm: fx.GraphModule) -> tuple[Plan, list[str]]:
    """Re-key ``plan`` onto the classes of ``gm``'s analysis, matching groups by their member
    (FQN, dim) sets. Groups none of whose members are in ``gm`` belong to another graph and
    are dropped. Returns the plan and a note for each group that could not be applied (it
    keeps all its indices)."""
    analysis = gm.meta[ANALYSIS]
    by_members = {frozenset(c.params): c for c in analysis.classes if c.params}
    present = {fqn for fqn, _ in gm.named_parameters(remove_duplicate=False)}
    present |= {fqn for fqn, _ in gm.named_buffers(remove_duplicate=False)}
    groups, keep, notes = [], {}, []
    for g in plan.groups:
        members = frozenset(g.params)
        if not any(fqn in present for fqn, _ in members):
            continue
        c = by_members.get(members)
        if c is None or c.size != g.size or not c.prunable:
            why = (
                "pinned here"
                if c is not None and not c.prunable
                else "its members are split differently here"
            )
            notes.append(f"group {g.id} ({sorted(members)[:2]}...) kept whole: {why} (a graph break?)")
            continue
        groups.append(Group(c.id, c.size, tuple(c.params), g.exact, g.approx_reason))
        if g.id in plan.keep:
            keep[c.id] = plan.keep[g.id]
    return Plan(plan.ratio, tuple(groups), keep, exact_only=plan.exact_only, meta=dict(plan.meta)), notes


@dataclass
class _CacheEntry:
    options: str  # repr of the options the plan was decided with
    tensors: list[weakref.ref]
    versions: list[int]  # the tensors' version counters when it was decided
    plan: Plan


# ------------------------------------------------------------------------------------------
# the backend


@dataclass
class FxpruneBackend:
    """A ``torch.compile`` backend with fixed options; see :func:`backend`."""

    options: dict[str, Any] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    #: the lifted, analyzed graphs, one per report (they share the weights' storage; the
    #: registered ``"fxprune"`` backend does not keep them)
    graphs: list[fx.GraphModule] = field(default_factory=list, repr=False)
    keep_graphs: bool = True
    _cache: list[_CacheEntry] = field(default_factory=list, repr=False)

    def __call__(self, gm: fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
        options = dict(self.options)
        options.update(kwargs.pop("options", None) or {})
        if kwargs:
            raise TypeError(f"fxprune backend: unexpected arguments {sorted(kwargs)}; pass options={{...}}")
        return self._compile(gm, example_inputs, options)

    def _compile(self, gm: fx.GraphModule, example_inputs: list[Any], options: dict[str, Any]) -> Callable:
        then = options.pop("then", "inductor")
        if then not in _THEN:
            raise ValueError(f"fxprune backend: then={then!r} is not one of {_THEN}")
        given_plan = options.pop("plan", None)
        if given_plan is not None and not isinstance(given_plan, Plan):
            raise TypeError(
                f"fxprune backend: options['plan'] must be a fxprune.Plan, got {type(given_plan).__name__}"
            )
        key = repr(sorted(options.items()))
        lifted = lift(gm, example_inputs)
        inputs = tuple(example_inputs[i] for i in lifted.input_positions)
        state = {fqn: example_inputs[i] for fqn, i in lifted.state_positions.items()}
        _analyze(lifted.gm, inputs)
        notes: list[str] = []
        cached = given_plan or self._lookup(key, state)
        if cached is not None:
            plan, notes = remap_plan(cached, lifted.gm)
            pruned = rewrite(lifted.gm, plan)
            pruned.meta[REPORT] = make_report("DynamoGraph", lifted.gm, pruned, plan, inputs)
        else:
            from .api import compile as _compile

            try:
                pruned = _compile(lifted.gm, example_inputs=inputs, **options)
            except TypeError as e:
                raise TypeError(
                    f"fxprune backend: {e}. options= takes fxprune.compile's keyword arguments "
                    f"(ratio, exact, importance, speedup, ...) plus {_BACKEND_OPTIONS}"
                ) from e
            plan = pruned.meta[REPORT].plan
            refs = [weakref.ref(t) for t in state.values()]
            self._cache.append(_CacheEntry(key, refs, [t._version for t in state.values()], plan))
        report = pruned.meta[REPORT]
        report.notes.extend(notes)
        self.reports.append(report)
        if self.keep_graphs:
            self.graphs.append(lifted.gm)
        _REPORTS.append(report)
        del _REPORTS[:-_KEEP_REPORTS]
        for p in pruned.parameters():
            p.requires_grad_(False)
        pruned.eval()
        run = pruned
        if then == "inductor":
            from torch._inductor.compile_fx import compile_fx

            run = compile_fx(pruned, list(inputs))
        return _guarded(run, lifted, example_inputs)

    def _lookup(self, options: str, state: Mapping[str, torch.Tensor]) -> Plan | None:
        """A plan decided earlier with the same options for (a superset of) these very
        tensors, none of which has changed since."""
        ids = {id(t) for t in state.values()}
        for entry in self._cache:
            alive = [r() for r in entry.tensors]
            if entry.options != options or any(t is None for t in alive):
                continue
            if any(t._version != v for t, v in zip(alive, entry.versions)):
                continue
            if ids and ids <= {id(t) for t in alive}:
                return entry.plan
        return None

    def reset(self) -> None:
        """Forget every decision (reports and graphs stay). ``torch._dynamo.reset()`` calls
        this on the backends it has used."""
        self._cache.clear()


def _guarded(run: Callable, lifted: Lifted, example_inputs: list[Any]) -> Callable:
    """Call ``run`` on the real inputs only; refuse if a weight changed since compile time."""
    watched = [
        (fqn, i, example_inputs[i], example_inputs[i]._version) for fqn, i in lifted.state_positions.items()
    ]
    positions = lifted.input_positions

    def compiled(*args: Any) -> Any:
        for fqn, i, t, version in watched:
            a = args[i]
            if a is not t or a._version != version:
                what = "was replaced by another tensor" if a is not t else "was modified in place"
                raise StaleWeightsError(
                    f"fxprune backend: {fqn} {what} after torch.compile pruned a copy of it; the backend "
                    "is for inference. Call torch._dynamo.reset() and compile again to prune the new weights."
                )
        return run(*[args[i] for i in positions])

    return compiled


def backend(**options: Any) -> FxpruneBackend:
    """A ``torch.compile`` backend with these options (``fxprune.compile``'s keyword
    arguments, plus ``then="inductor"|"eager"`` and ``plan=``).

    Example:
        >>> be = fxprune.backend(ratio=0.5, exact=True, then="eager")
        >>> fast = torch.compile(model, backend=be)
        >>> y = fast(x); be.reports[0].params_after < be.reports[0].params_before
        True
    """
    then = options.get("then", "inductor")
    if then not in _THEN:
        raise ValueError(f"fxprune.backend: then={then!r} is not one of {_THEN}")
    return FxpruneBackend(dict(options))


_DEFAULT = FxpruneBackend(keep_graphs=False)


def reset() -> None:
    """Forget the registered backend's decisions and the process-wide reports. Decisions are
    keyed by the options and the weights' identity and version, and ``torch._dynamo.reset()``
    clears them too, so this is needed only to free memory."""
    _DEFAULT.reset()
    _REPORTS.clear()


def fxprune_backend(gm: fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
    """The backend registered as ``"fxprune"`` (entry point group ``torch_dynamo_backends``).
    Options arrive from ``torch.compile(..., options={...})``."""
    return _DEFAULT(gm, example_inputs, **kwargs)
