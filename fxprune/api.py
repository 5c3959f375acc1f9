"""``fxprune.compile``: the whole pipeline as one flat function."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import fx, nn

from .capture import CAPTURES, as_inputs
from .capture import capture as _capture
from .importance import Criterion
from .passes.dependency import analyze as _analyze
from .passes.keys import ANALYSIS, INPUTS
from .passes.sparsify import SparsifyHandle, bare_module, check_options
from .passes.sparsify import sparsify as _sparsify
from .pipeline import _shapes_only, prune_width
from .plan import _check_ratio

__all__ = ["compile", "analyze", "sparsify"]


def analyze(
    model: nn.Module, example_inputs: Any, *, capture: str = "auto", example_kwargs: Mapping[str, Any] | None = None
) -> fx.GraphModule:
    """Capture (if ``model`` is not already a GraphModule; ``capture``: "auto", "fx" or
    "export", see ``fxprune.capture``) and analyze. Returns the annotated GraphModule;
    ``gm.meta["fxprune.analysis"]`` holds the classes and reasons.

    Example:
        >>> gm = fxprune.analyze(model, torch.randn(1, 3, 32, 32))
        >>> len(gm.meta["fxprune.analysis"].prunable())
        4
    """
    inputs = as_inputs(example_inputs, model, example_kwargs)
    if isinstance(model, fx.GraphModule):
        return _analyze(model, inputs)
    return _analyze(_capture(model, inputs, method=capture))


def compile(
    model: nn.Module,
    ratio: float | None = None,
    *,
    example_inputs: Any,
    example_kwargs: Mapping[str, Any] | None = None,
    exact: bool = False,
    importance: str | Criterion = "l2",
    round_to: int | str = 1,
    scores: Mapping[int, torch.Tensor] | None = None,
    verify: bool = False,
    speedup: float | None = None,
    params: float | None = None,
    global_ranking: bool | str = False,
    min_keep: int | float | None = None,
    ratios: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    heads: str = "heads",
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    capture: str = "auto",
    depth: int | float | Sequence[str] | None = None,
    depth_score: str = "cka",
    mode: str = "width",
    remove: Mapping[str, Iterable[int]] | None = None,
) -> fx.GraphModule:
    """Prune ``model`` and return a new, smaller GraphModule (``model`` is never modified).

    Args:
        ratio: fraction of each group's indices removed, in [0, 1) (default 0.5 when no
            target is given).
        example_inputs: what the model runs on: a tensor, a tuple of positional arguments,
            or a dict of keyword arguments (bound to ``forward``'s parameters).
        example_kwargs: keyword arguments added to positional ``example_inputs``.
        exact: prune only groups whose removal provably leaves the rest unchanged.
        importance: a criterion name ("l2", "l1", "random", "bn_scale", "taylor", "hessian",
            "zeroshot") or a ``fxprune.importance.Criterion``; ignored when ``scores`` is given.
        round_to: keep a multiple of this many indices per group, or ``"auto"``: widths
            measured on the model's device (the hardware's channel step, and a group stays
            whole where no narrower width runs faster; cached per device, see
            ``fxprune.hardware``). Measured at the example inputs' shapes.
        verify: also run the masked-equals-pruned check and put it in the report.
        speedup: instead of a ratio, prune until base MACs / pruned MACs reaches this.
        params: instead of a ratio, prune until base / pruned parameter count reaches this.
        global_ranking: rank indices across groups (learned layer sparsity) instead of
            removing the same fraction of every group; ``"isomorphic"`` ranks only among groups
            of the same structure (``fxprune.plan.signatures``; Isomorphic Pruning, ECCV 2024).
        min_keep: indices (int) or fraction (< 1) every group keeps.
        ratios: per-module ratio overrides, ``{"layer4.*": 0.7}`` (FQN globs).
        ignore: FQN globs of modules whose groups stay whole.
        heads: the attention unit pruned: ``"heads"`` (default: whole heads, head_dim kept),
            ``"head_dim"`` (every head kept, the same offsets removed from each) or ``"both"``.
        data, loss_fn: a few ``(inputs, target)`` batches and a loss, for data-driven
            criteria (taylor, hessian; zeroshot needs only inputs).
        depth: remove whole blocks (residual branches ``y = x + f(x)``, ``fxprune.find_blocks``):
            a count, a fraction of the removable blocks, or a list of block ids. Counts are
            filled with the lowest-scored blocks on ``data``. With ``ratio``/``speedup``/
            ``params`` the rest is width-pruned too (targets count against the original).
        depth_score: "cka" (1 - linear CKA of the outputs without the block; inputs only),
            "loss" (loss increase) or "taylor" (its first-order estimate); see fxprune.depth.
        mode: "width" (default), "depth" (remove blocks until ``speedup``/``params`` is met) or
            "joint" (width-only, depth-only and mixed candidates at ``speedup``; keeps the one
            with the highest CKA to the original on ``data``; the candidates are in the report).
        capture: "auto" (torch.fx.symbolic_trace, and torch.export where it fails), "fx" or
            "export"; the report says which one was used.
        remove: chosen indices to remove, ``{"layer2.0.conv1": [2, 6, 9]}`` (a module's output
            channels, or ``"name.weight:dim"``), with every coupled slice; alone it prunes only
            those groups, with a ratio or target the rest is pruned as usual
            (``fxprune.plan.choose``).

    The report is ``out.meta["fxprune.report"]``.

    Example:
        >>> small = fxprune.compile(torchvision.models.resnet18(), speedup=2.0, example_inputs=x)
        >>> print(small.meta["fxprune.report"])  # doctest: +ELLIPSIS
        fxprune report: ResNet ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune.compile expects a torch.nn.Module, got {type(model).__name__}")
    if ratio is not None:
        _check_ratio(ratio)  # before any work, so bad input costs nothing
    if capture not in CAPTURES:
        raise ValueError(f"capture={capture!r} is not one of {', '.join(map(repr, CAPTURES))}")
    example_inputs, example_kwargs = as_inputs(example_inputs, model, example_kwargs), None
    if depth is not None or mode != "width":  # whole blocks: fxprune.depth (its width part: pipeline.prune_width)
        from .depth import compile_depth

        opts = {k: v for k, v in locals().items() if k not in ("model", "compile_depth", "example_kwargs")}
        out = compile_depth(model, **opts)
        out.meta.setdefault(INPUTS, _shapes_only(as_inputs(example_inputs)))
        return out
    return prune_width(
        model, ratio, inputs=example_inputs, exact=exact, importance=importance, round_to=round_to, scores=scores,
        verify=verify, speedup=speedup, params=params, global_ranking=global_ranking, min_keep=min_keep,
        ratios=ratios, ignore=ignore, heads=heads, data=data, loss_fn=loss_fn, capture=capture, remove=remove,
    )  # fmt: skip


def sparsify(
    model: nn.Module,
    example_inputs: Any,
    reg: float = 1e-4,
    alpha: float = 4.0,
    scope: str = "full",
    refresh_every: int = 1,
    exact: bool = False,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
) -> SparsifyHandle:
    """Group sparse learning (DepGraph Eq. 4-5) on ``model``, in place, through gradient hooks:
    a deep copy is captured and analyzed on ``example_inputs`` (a tensor, a tuple or a dict of
    keyword arguments), then ``fxprune.passes.sparsify.sparsify`` installs the hooks on
    ``model``'s own parameters. Its docstring has the regularizer's formula, the options
    (``reg``, ``alpha``, ``scope``, ``refresh_every``, ``exact``) and the DDP and AMP notes.

    Example:
        >>> handle = fxprune.sparsify(model, torch.randn(1, 3, 224, 224), reg=1e-4)
        >>> ...  # train with any optimizer
        >>> handle.remove()
        >>> small = fxprune.compile(model, 0.5, example_inputs=x)
    """
    model = bare_module(model)  # hooks go on the bare module's parameters (see the DDP note)
    check_options(reg, alpha, scope, refresh_every)  # bad input costs nothing
    if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta:
        analysis = model.meta[ANALYSIS]  # already analyzed: read it, touch nothing
    else:
        target = copy.deepcopy(model) if isinstance(model, fx.GraphModule) else model  # analyze copies others
        analysis = analyze(target, example_inputs, example_kwargs=example_kwargs).meta[ANALYSIS]
    return _sparsify(model, analysis, reg=reg, alpha=alpha, scope=scope, refresh_every=refresh_every, exact=exact)
