"""Capture: a model becomes an ``fx.GraphModule`` with shapes propagated, the model untouched.

Two ways to capture, tried in this order by ``capture="auto"`` (the default):

- ``"fx"``: ``torch.fx.symbolic_trace``. The graph calls your modules, functions and
  methods, so it stays close to your code and works for any input shape. It traces in eval
  mode; a second trace in train mode shows where ``self.training`` was read, and the graph
  reads the module's flag there at run time (``_follow_mode``), or refuses train mode.
- ``"export"``: ``torch.export.export(..., strict=False)`` and ``ExportedProgram.module()``.
  It runs your Python for real on fake tensors, so shape-dependent control flow and the
  Hugging Face ``transformers`` models trace. The graph holds ATen ops
  (``torch.ops.aten.linear.default``, ...), which ``passes/aten.py`` maps onto the same rules.
  Its parameters and buffers keep your model's FQNs (``model.layers.0.mlp.up_proj.weight``).
  Every input dim is exported as ``Dim.AUTO`` (a size-1 dim at size 2, since export fixes
  sizes 0 and 1), so the graph takes other batch sizes, lengths and resolutions; a dim the
  model's code fixes (channels, a literal) stays static, and ``gm.meta["fxprune.static_dims"]``
  (and the report) lists each static dim with the reason. The graph is the eval-mode forward.
  A Hugging Face model's cache is off while it is captured (``config.use_cache`` on the copy).

``gm.meta["fxprune.capture"]`` says which one was used ("symbolic_trace" or
"torch.export"); the report prints it.

Under symbolic_trace, a module whose class has a registered module rule
(``fxprune.register_module``) stays a leaf, so its rule is reached; torch.export inlines every
module, and a warning names a registered rule that therefore never fires. A GraphModule the
user traced is taken as it is (a copy), never traced again. Parameters, buffers and submodules
the forward never reads are carried over under their names (``passes/state.py``).
"""

from __future__ import annotations

import copy
import inspect
import operator
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .errors import CaptureError
from .passes.dependency import propagate
from .passes.keys import CAPTURE, STATIC_DIMS
from .passes.rules import has_module_rule
from .passes.state import carry_unreferenced, keep_state_keys

__all__ = ["capture", "as_inputs", "CAPTURES", "StaticDim"]

#: accepted values of ``capture=``
CAPTURES = ("auto", "fx", "export")


def as_inputs(example_inputs: Any, model: nn.Module | None = None, example_kwargs: Any = None) -> tuple:
    """The example inputs as a tuple of positional arguments.

    ``example_inputs`` is a tensor, a tuple/list of positional arguments, or a dict of
    keyword arguments; ``example_kwargs`` adds keyword arguments to positional ones. Keyword
    arguments are bound to ``model.forward``'s parameters and become positional ones, in the
    forward's order (a parameter skipped between two given ones takes its default), so every
    later pass (shape propagation, verification, timing) calls ``model(*inputs)``.
    """
    kwargs: dict[str, Any] = {}
    if isinstance(example_inputs, Mapping):
        args: tuple = ()
        kwargs = dict(example_inputs)
    elif isinstance(example_inputs, torch.Tensor):
        args = (example_inputs,)
    elif isinstance(example_inputs, (tuple, list)):
        args = tuple(example_inputs)
    elif example_inputs is None and example_kwargs is not None:
        args = ()
    else:
        raise TypeError(
            "example_inputs must be a tensor, a tuple of positional arguments or a dict of keyword arguments, "
            f"got {type(example_inputs).__name__}"
        )
    if example_kwargs is not None:
        if not isinstance(example_kwargs, Mapping):
            raise TypeError(f"example_kwargs must be a dict of keyword arguments, got {type(example_kwargs).__name__}")
        clash = sorted(set(kwargs) & set(example_kwargs))
        if clash:
            raise ValueError(f"example_inputs and example_kwargs both give {', '.join(clash)}")
        kwargs.update(example_kwargs)
    if not kwargs:
        return args
    if model is None:
        raise TypeError("keyword example inputs need the model, to bind them to its forward's parameters")
    return _bind(model, args, kwargs)


def _bind(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple:
    name = type(model).__name__
    sig = inspect.signature(model.forward)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"example inputs do not fit {name}.forward{sig}: {e}") from e
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    given = [i for i, p in enumerate(positional) if p.name in bound.arguments]
    out = []
    for p in positional[: (given[-1] + 1) if given else 0]:
        out.append(bound.arguments[p.name] if p.name in bound.arguments else p.default)
    if any(p.kind == p.VAR_POSITIONAL and p.name in bound.arguments for p in params):
        out.extend(bound.arguments[next(p.name for p in params if p.kind == p.VAR_POSITIONAL)])
    rest = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) and p.name in bound.arguments]
    if rest:
        raise TypeError(
            f"example inputs {', '.join(rest)} of {name}.forward{sig} are keyword-only (or go to **kwargs); "
            "fxprune passes example inputs positionally: give them as forward's named parameters"
        )
    return tuple(out)


def _describe(inputs: tuple) -> str:
    return ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}"
        if isinstance(a, torch.Tensor)
        else type(a).__name__
        for a in inputs
    )


def _first_line(e: BaseException, limit: int = 300) -> str:
    msg = str(e).strip().splitlines()
    text = msg[0] if msg else ""
    return f"{type(e).__name__}: {text[:limit]}"


def _copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001 - any failure to copy is the user's to see
        raise CaptureError(
            f"fxprune.capture: could not deep-copy {type(model).__name__} ({type(e).__name__}: {e}); "
            "fxprune never edits your model in place, so it needs a copy"
        ) from e


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer, plus: a module whose class has a registered module rule
    (``fxprune.register_module``) stays a leaf, so its rule is what the analysis sees."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return has_module_rule(type(m)) or super().is_leaf_module(m, module_qualified_name)


def _cache_off(work: nn.Module) -> None:
    """Turn off a Hugging Face model's KV cache (``config.use_cache``) on the copy being
    captured: with it on, the forward returns a ``DynamicCache``, which torch.export cannot
    output, and the cache is no part of the pruned forward. ``work`` is a deep copy, so its
    config objects are its own and the user's stay as they were."""
    for m in work.modules():
        cfg = m.__dict__.get("config")
        if getattr(cfg, "use_cache", None) is True:
            cfg.use_cache = False


def _by_symbolic_trace(model: nn.Module) -> fx.GraphModule:
    work = _copy(model)
    _cache_off(work)
    keys = list(work.state_dict())
    modes = {name: m.training for name, m in work.named_modules()}
    work.eval()
    tracer = _Tracer()
    gm = fx.GraphModule(work, tracer.trace(work), type(work).__name__)
    carry_unreferenced(work, gm)  # unread parameters, buffers and submodules keep their keys
    keep_state_keys(gm, keys)  # fx's _tensor_constant* are not the model's state
    _follow_mode(model, gm)
    for name, m in gm.named_modules():
        if name in modes:
            m.training = modes[name]
    gm.meta[CAPTURE] = "symbolic_trace"
    return gm


def _constants(node: fx.Node) -> list[tuple[Any, Any]]:
    """(position, value) of every non-node leaf of a node's args and kwargs."""
    out: list[tuple[Any, Any]] = []

    def walk(where: Any, v: Any) -> None:
        if isinstance(v, (tuple, list)):
            out.append((where, len(v)))
            for i, x in enumerate(v):
                walk((*where, i), x)
        elif isinstance(v, dict):
            out.append((where, tuple(v)))
            for k, x in v.items():
                walk((*where, k), x)
        elif not isinstance(v, fx.Node):
            out.append((where, v))

    walk(("args",), node.args)
    walk(("kwargs",), node.kwargs)
    return out


def _owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _follow_mode(model: nn.Module, gm: fx.GraphModule) -> None:
    """Make the eval-mode graph of a symbolic_trace capture follow ``train()``/``eval()``.

    symbolic_trace runs Python, so ``self.training`` is read once, at trace time: a module
    traced through (a BatchNorm subclass calling ``F.batch_norm``, a custom dropout) has its
    eval value baked into the graph. The model is traced again in train mode and the two
    graphs compared: where they differ only in a bool argument (``training=`` of batch norm
    and dropout), that argument becomes the innermost module's ``training`` flag, read at run
    time; an integer buffer the train-mode forward counts up (``num_batches_tracked``, which
    fx updates eagerly while tracing) is counted up by the graph in train mode. Where the
    graphs differ otherwise (a branch on ``self.training``, such as drop-path), the graph
    cannot follow the mode: in train mode it raises, naming the module (``_eval_only``)."""
    import difflib

    work = _copy(model)
    _cache_off(work)
    work.train()
    counters = {k: b.clone() for k, b in work.named_buffers() if not b.is_floating_point() and not b.is_complex()}
    try:
        train_graph = _Tracer().trace(work)
    except Exception as e:  # noqa: BLE001 - whatever stops the train-mode trace
        return _eval_only(gm, f"symbolic_trace cannot trace it in train mode ({_first_line(e)})")
    counted = {k: work.get_buffer(k) - v for k, v in counters.items() if not torch.equal(work.get_buffer(k), v)}

    def sig(n: fx.Node) -> tuple:
        return (n.op, str(n.target))

    ev, tr = list(gm.graph.nodes), list(train_graph.nodes)
    links: list[tuple[fx.Node, tuple, bool]] = []
    matcher = difflib.SequenceMatcher(None, [sig(n) for n in ev], [sig(n) for n in tr], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            at = ev[i1] if i1 < len(ev) else tr[j1]
            return _eval_only(gm, f"in train mode it runs other ops from {at.format_node()} on, in module "
                                  f"'{_owner(at) or type(model).__name__}' (a branch on self.training)")  # fmt: skip
        for a, b in zip(ev[i1:i2], tr[j1:j2]):
            ca, cb = _constants(a), _constants(b)
            if [w for w, _ in ca] != [w for w, _ in cb]:
                return _eval_only(gm, f"in train mode {a.format_node()} takes other arguments")
            for (where, va), (_, vb) in zip(ca, cb):
                if va is vb or (type(va) is type(vb) and va == vb):
                    continue
                if isinstance(va, bool) and isinstance(vb, bool):
                    links.append((a, where, va))
                else:
                    return _eval_only(gm, f"in train mode {a.format_node()} takes {vb!r} instead of {va!r}")
    if any(d.numel() != 1 for d in counted.values()):
        name = next(k for k, d in counted.items() if d.numel() != 1)
        return _eval_only(gm, f"its train-mode forward changes the buffer {name} in a way the graph cannot replay")
    graph = gm.graph
    modules = dict(gm.named_modules())

    def flag(owner: str) -> fx.Node:
        """``<owner>.training`` at run time (the nearest module the graph module has)."""
        while owner and owner not in modules:
            owner = owner.rpartition(".")[0]
        if not owner:  # the GraphModule itself
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fx warns that get_attr of a bool is unusual
                return graph.get_attr("training")
        return graph.call_function(getattr, (graph.get_attr(owner), "training"))

    for node, where, eval_value in links:
        with graph.inserting_before(node):
            f = flag(_owner(node))
            if eval_value:  # the argument is ``not self.training``
                f = graph.call_function(operator.not_, (f,))
        _set_arg(node, where, f)
    first = next(n for n in graph.nodes if n.op != "placeholder")
    for name, delta in counted.items():
        with graph.inserting_before(first):
            step = graph.call_function(operator.mul, (flag(name.rpartition(".")[0]), int(delta.item())))
            graph.call_method("add_", (graph.get_attr(name), step))
    graph.lint()
    gm.recompile()
    return None


def _set_arg(node: fx.Node, where: tuple, value: Any) -> None:
    """Replace the leaf at ``where`` (from ``_constants``) of a node's args or kwargs."""

    def put(v: Any, path: tuple) -> Any:
        if not path:
            return value
        head, rest = path[0], path[1:]
        if isinstance(v, dict):
            return {k: put(x, rest) if k == head else x for k, x in v.items()}
        return type(v)(put(x, rest) if i == head else x for i, x in enumerate(v))

    if where[0] == "args":
        node.args = put(node.args, where[1:])
    else:
        node.kwargs = put(node.kwargs, where[1:])


def _refuse_training(training: bool, why: str) -> None:
    """A graph node: the graph was captured in eval mode and cannot follow train mode."""
    if training:
        raise RuntimeError(f"fxprune: this pruned graph cannot run in train mode: {why}. {_TRAIN_HINT}")


_TRAIN_HINT = (
    "It was captured in eval mode (symbolic_trace reads self.training once); to fine-tune, prune with "
    "output='module' (your own class), or keep that module out of the trace with fxprune.register_module"
)


def _eval_only(gm: fx.GraphModule, why: str) -> None:
    """The graph cannot follow train mode: ``train()`` raises with the reason, and so does a
    forward in train mode (the check is a node of the graph, so it survives copies)."""
    graph = gm.graph
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fx warns that get_attr of a bool is unusual
        graph.call_function(_refuse_training, (graph.get_attr("training"), why))
    graph.lint()
    gm.recompile()
    gm.train = types.MethodType(_train_refused, gm)


def _train_refused(self: fx.GraphModule, mode: bool = True) -> nn.Module:
    if mode:
        why = next(n.args[1] for n in self.graph.nodes if n.target is _refuse_training)
        raise RuntimeError(f"fxprune: this pruned graph cannot run in train mode: {why}. {_TRAIN_HINT}")
    return nn.Module.train(self, mode)


@dataclass(frozen=True)
class StaticDim:
    """An input dim that a torch.export capture fixes: the graph (and the pruned module) runs
    only at this size there."""

    input: str  #: the graph's placeholder (the forward's parameter name)
    dim: int
    size: int
    why: str

    def __str__(self) -> str:
        return f"{self.input} dim {self.dim} stays {self.size}: {self.why}"


_SPECIALIZED = "the model's code fixes it (torch.export specialized Dim.AUTO: it meets a weight, or a literal)"


def _export_dynamic(work: nn.Module, inputs: tuple) -> tuple[Any, dict[tuple[int, int], str]]:
    """``torch.export.export`` with every dim of every tensor input ``Dim.AUTO``.

    Export fixes sizes 0 and 1, so a dim of size 1 in the example (a batch of one) is
    exported at size 2 (the example repeated along it): the graph then runs at 1 and at any
    other size. Where export refuses, it falls back: the size-1 dims left at 1 (then widened
    one at a time), else a static export and the dims made dynamic one at a time. Returns
    the program and, for each (tensor input, dim) left static by a refusal, why."""
    from torch.export import Dim
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(inputs)
    tensors = [i for i, a in enumerate(leaves) if isinstance(a, torch.Tensor)]
    dims = [(t, d) for t, i in enumerate(tensors) for d in range(leaves[i].dim())]
    ones = [(t, d) for t, d in dims if leaves[tensors[t]].shape[d] == 1]

    def attempt(dynamic: set, widen: set) -> Any:
        args, shapes = list(leaves), [None] * len(leaves)
        for t, i in enumerate(tensors):
            a = leaves[i]
            for d in range(a.dim()):
                if (t, d) in widen:
                    a = torch.cat([a, a], d)
            args[i] = a
            shapes[i] = {d: Dim.AUTO for d in range(a.dim()) if (t, d) in dynamic}
        ep = torch.export.export(
            work, tree_unflatten(args, spec), dynamic_shapes=tree_unflatten(shapes, spec), strict=False
        )
        if widen:  # export checks no lower bound at run time: a branch on the size would go unseen
            with torch.no_grad():
                same = _same_outputs(ep.module()(*inputs), work(*inputs))
            if not same:
                raise CaptureError(
                    "at size 1 the model computes other outputs than its graph exported at size 2 "
                    "(its code branches on the size)"
                )
        return ep

    refused: dict[tuple[int, int], str] = {}
    try:
        return attempt(set(dims), set(ones)), refused
    except Exception as e:  # noqa: BLE001 - any refusal: fall back, dim by dim, and say so
        first = e
    if ones:  # perhaps only a widened size-1 dim was refused
        try:
            ep = attempt(set(dims), set())
        except Exception:  # noqa: BLE001
            pass
        else:
            widen: set = set()
            for td in ones if len(ones) > 1 else ():
                try:
                    ep = attempt(set(dims), widen | {td})
                    widen.add(td)
                except Exception:  # noqa: BLE001
                    pass
            why = f"size 1 in the example (torch.export fixes sizes 0 and 1), and export at size 2 failed: {_first_line(first)}"
            refused.update({td: why for td in ones if td not in widen})
            return ep, refused
    ep = torch.export.export(work, inputs, strict=False)  # static; its failure is the user's to see
    dynamic: set = set()
    for td in dims:  # then the dims one by one
        try:
            ep = attempt(dynamic | {td}, set())
            dynamic.add(td)
        except Exception:  # noqa: BLE001
            refused[td] = f"torch.export refused it dynamic: {_first_line(first)}"
    return ep, refused


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _same_outputs(a: Any, b: Any) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return False
        if not y.is_floating_point():
            if not torch.equal(x, y):
                return False
        elif y.numel() and not torch.allclose(x.double(), y.double(), rtol=1e-4, atol=1e-4 * float(y.abs().max())):
            return False
    return True


def _static_dims(gm: fx.GraphModule, refused: dict[tuple[int, int], str]) -> tuple[StaticDim, ...]:
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    out = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)]
    for t, node in enumerate(placeholders):
        for d, size in enumerate(node.meta["val"].shape):
            if is_concrete_int(size):  # a SymInt that export specialized is concrete too
                out.append(StaticDim(node.name, d, int(size), refused.get((t, d), _SPECIALIZED)))
    return tuple(out)


def _by_export(model: nn.Module, inputs: tuple) -> fx.GraphModule:
    work = _copy(model).eval()
    _cache_off(work)
    keys = list(work.state_dict())
    ep, refused = _export_dynamic(work, inputs)
    gm = ep.module()
    gm.meta[STATIC_DIMS] = _static_dims(gm, refused)
    carry_unreferenced(work, gm)
    keep_state_keys(gm, keys)  # lifted constants, tensor attributes: not the model's state
    # ExportedProgram.module() makes train()/eval() raise. Its graph is the eval-mode forward
    # whatever the flag says; fxprune's passes set the flag (propagate, verify), so the
    # nn.Module methods come back, and train() warns once that the graph stays eval-mode
    # (the warning travels to the pruned module, which is a deep copy).
    for attr in ("train", "eval"):
        gm.__dict__.pop(attr, None)
    gm.train = types.MethodType(_train_keeps_eval_graph, gm)
    gm.eval()
    _inline_grad_regions(gm)
    _drop_whole_slices(gm)
    gm.meta[CAPTURE] = "torch.export"
    return gm


def _train_keeps_eval_graph(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode and not getattr(self, "_fxprune_train_warned", False):
        warnings.warn(
            "fxprune: this module was captured with torch.export in eval mode; train() sets the flag but "
            "the graph keeps eval behaviour (dropout off, batch norm on running statistics). To fine-tune "
            "with training behaviour, capture with capture='fx' where the model allows it.",
            stacklevel=2,
        )
        self._fxprune_train_warned = True
    return nn.Module.train(self, mode)


def _drop_whole_slices(gm: fx.GraphModule) -> None:
    """``aten.slice(x, d, 0, INT64_MAX)`` (a ``x[:, i]`` spelled in full) is ``x``: export drops
    it for a static dim but keeps it for a dynamic one. Drop it, so the graph (and the names in
    the report) are the same as a static capture's."""
    big = 2**63 - 1
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.slice.Tensor and not node.kwargs:
            _, _, start, end, step = (*node.args, *(0, None, None, 1)[len(node.args) - 1 :])  # defaults
            if start in (0, None) and end in (None, big) and step == 1:
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


def _inline_grad_regions(gm: fx.GraphModule) -> None:
    """Replace each ``wrap_with_set_grad_enabled(enabled, submod, *args)`` (a ``torch.no_grad()``
    region, e.g. the rotary embedding of Llama) by the submodule's ops, between
    ``torch._C._set_grad_enabled(enabled)`` and a restore of the previous grad mode, so that
    the analysis sees through it and the grad mode is kept. A region that reads attributes
    of its own stays a call (no rule: its channels are pinned and the report names it)."""
    hop = getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None)
    graph = gm.graph
    for node in list(graph.nodes):
        if hop is None or node.op != "call_function" or node.target is not hop:
            continue
        enabled, sub_node, *args = node.args
        if not isinstance(sub_node, fx.Node) or sub_node.op != "get_attr":
            continue
        sub = getattr(gm, sub_node.target)
        body = sub.graph
        if any(n.op in ("get_attr", "call_module") for n in body.nodes):
            continue
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem for u in users):
            continue
        placeholders = [n for n in body.nodes if n.op == "placeholder"]
        val_map: dict[fx.Node, Any] = dict(zip(placeholders, args))
        with graph.inserting_before(node):
            prev = graph.call_function(torch.is_grad_enabled, ())
            graph.call_function(torch._C._set_grad_enabled, (enabled,))
            out = graph.graph_copy(body, val_map)
            graph.call_function(torch._C._set_grad_enabled, (prev,))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for u in users:
            u.replace_all_uses_with(outs[u.args[1]])
            graph.erase_node(u)
        graph.erase_node(node)
        if not sub_node.users:
            graph.erase_node(sub_node)
            delattr(gm, sub_node.target)
    graph.lint()
    gm.recompile()


def capture(
    model: nn.Module, example_inputs: Any, *, method: str = "auto", example_kwargs: Any = None
) -> fx.GraphModule:
    """Capture a deep copy of ``model`` as a GraphModule and propagate shapes from
    ``example_inputs``. ``method``: ``"fx"`` (``torch.fx.symbolic_trace``, in eval mode, so
    python-level ``if self.training`` branches take their inference path; leaf modules keep
    the model's train/eval flags), ``"export"`` (``torch.export.export(strict=False)``,
    unlifted; parameters keep the model's FQNs; specialized to the example shapes and eval
    mode) or ``"auto"`` (fx, and export where fx fails).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``method`` is not one of "auto", "fx", "export".
        CaptureError: no method could capture the model (the message quotes each failure),
            or the example inputs do not run the model.

    Example:
        >>> gm = capture(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> gm.meta["fxprune.capture"]
        'symbolic_trace'
        >>> capture(transformers.BertModel(cfg), ids).meta["fxprune.capture"]
        'torch.export'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune expects a torch.nn.Module, got {type(model).__name__}")
    if method not in CAPTURES:
        raise ValueError(f"capture={method!r} is not one of {', '.join(map(repr, CAPTURES))}")
    inputs = as_inputs(example_inputs, model, example_kwargs)
    name = type(model).__name__
    if isinstance(model, fx.GraphModule) and method in ("auto", "fx"):
        return _given_graph(model, inputs)
    fx_error: BaseException | None = None
    run_error: BaseException | None = None
    if method in ("auto", "fx"):
        try:
            gm = _by_symbolic_trace(model)
        except CaptureError:
            raise
        except Exception as e:  # noqa: BLE001
            fx_error = e
        else:
            try:
                propagate(gm, inputs)
                _warn_unreached_rules(model, gm)
                return gm
            except Exception as e:  # noqa: BLE001
                run_error = e
        if method == "fx":
            if run_error is not None:
                raise _inputs_error(name, inputs, run_error) from run_error
            raise CaptureError(
                f"fxprune.capture: torch.fx.symbolic_trace could not trace {name}: {_first_line(fx_error)}\n"
                "Try: capture='export' (torch.export handles shape-dependent control flow), make control "
                "flow independent of tensor values, wrap the offending function with torch.fx.wrap, or "
                "trace the model yourself and pass the GraphModule."
            ) from fx_error
    try:
        gm = _by_export(model, inputs)
    except CaptureError:
        raise
    except Exception as e:  # noqa: BLE001
        if run_error is not None:  # fx traced, but neither graph runs on these inputs
            raise _inputs_error(name, inputs, run_error, e) from run_error
        first = (
            f"torch.fx.symbolic_trace could not trace {name}: {_first_line(fx_error)}\n"
            if fx_error is not None else ""
        )  # fmt: skip
        raise CaptureError(
            f"fxprune.capture: {first}torch.export.export(strict=False) could not export {name} either: "
            f"{_first_line(e)}\nTry: make control flow independent of tensor values (torch.export cannot "
            "branch on a tensor's value; use torch.cond), check that example_inputs "
            f"({_describe(inputs)}) run the model, or trace the model yourself and pass the GraphModule."
        ) from e
    try:
        propagate(gm, inputs)
    except Exception as e:  # noqa: BLE001
        raise _inputs_error(name, inputs, e) from e
    _warn_unreached_rules(model, gm)
    return gm


def _warn_unreached_rules(model: nn.Module, gm: fx.GraphModule) -> None:
    """A module class with a registered rule (outside torch's own) whose instances in the
    model never appear as a call in the graph: its rule cannot fire, so say so."""
    called = {type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"}
    missed = sorted({
        type(m).__qualname__ for m in model.modules()
        if has_module_rule(type(m)) and type(m) not in called and not type(m).__module__.startswith("torch.")
    })  # fmt: skip
    if missed:
        warnings.warn(
            f"fxprune: the module rule registered for {', '.join(missed)} never fired: the "
            f"{gm.meta.get(CAPTURE, 'capture')} graph has no call to it (torch.export inlines every module, and a "
            "class that forward never calls is not in any graph); its ops were analyzed one by one instead. "
            "Use capture='fx' to keep the class as a leaf.",
            stacklevel=3,
        )


def _given_graph(model: fx.GraphModule, inputs: tuple) -> fx.GraphModule:
    """A GraphModule the user traced is analyzed as it is (a copy): tracing it again would
    inline the leaf modules the user chose."""
    gm = _copy(model)
    gm.meta[CAPTURE] = model.meta.get(CAPTURE, "user GraphModule")
    try:
        propagate(gm, inputs)
    except Exception as e:  # noqa: BLE001
        raise _inputs_error(type(model).__name__, inputs, e) from e
    return gm


def _inputs_error(
    name: str, inputs: tuple, e: BaseException, export_error: BaseException | None = None
) -> CaptureError:
    also = f" (torch.export failed too: {_first_line(export_error)})" if export_error is not None else ""
    return CaptureError(
        f"fxprune.capture: the example inputs ({_describe(inputs)}) do not run {name}: "
        f"{type(e).__name__}: {e}{also}\nPass example_inputs with the shapes and dtypes the model's forward expects."
    )
