"""``fxprune.compile``: the whole pipeline as one flat function."""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
from torch import fx, nn

from .capture import as_inputs, capture
from .importance import get_criterion
from .passes.dependency import analyze as _analyze
from .passes.keys import ANALYSIS, REPORT
from .passes.rewrite import rewrite
from .plan import make_plan
from .report import Report, count_macs, count_params
from .verify import verify as _verify

__all__ = ["compile", "analyze"]


def analyze(model: nn.Module, example_inputs: Any) -> fx.GraphModule:
    """Capture (if ``model`` is not already a GraphModule) and analyze. Returns the annotated
    GraphModule; ``gm.meta["fxprune.analysis"]`` holds the classes and reasons.

    Example:
        >>> gm = fxprune.analyze(model, torch.randn(1, 3, 32, 32))
        >>> len(gm.meta["fxprune.analysis"].prunable())
        4
    """
    inputs = as_inputs(example_inputs)
    if isinstance(model, fx.GraphModule):
        return _analyze(model, inputs)
    return _analyze(capture(model, inputs))


def compile(
    model: nn.Module,
    ratio: float = 0.5,
    *,
    example_inputs: Any,
    exact: bool = False,
    importance: str = "l2",
    round_to: int = 1,
    scores: Mapping[int, torch.Tensor] | None = None,
    verify: bool = False,
) -> fx.GraphModule:
    """Prune ``ratio`` of every prunable group of ``model`` and return a new, smaller
    GraphModule (``model`` is never modified).

    Args:
        ratio: fraction of each group's indices removed, in [0, 1).
        example_inputs: a tensor or a tuple of positional arguments the model runs on.
        exact: prune only groups whose removal provably leaves the rest unchanged.
        importance: "l2" or "l1" group magnitude (ignored when ``scores`` is given).
        round_to: keep a multiple of this many indices per group.
        verify: also run the masked-equals-pruned check and put it in the report.

    The report is ``out.meta["fxprune.report"]``.

    Example:
        >>> small = fxprune.compile(torchvision.models.resnet18(), 0.5, example_inputs=x, exact=True)
        >>> print(small.meta["fxprune.report"])  # doctest: +ELLIPSIS
        fxprune report: ResNet ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune.compile expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}: it is the fraction of each group removed")
    if scores is None:
        criterion = get_criterion(importance)
    inputs = as_inputs(example_inputs)
    seconds = {}
    t = time.perf_counter()
    gm = model if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta else None
    if gm is None:
        gm = capture(model, inputs)
        seconds["capture"] = time.perf_counter() - t
        t = time.perf_counter()
        _analyze(gm)
        seconds["analyze"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = make_plan(gm, ratio, scores if scores is not None else criterion(gm), exact=exact, round_to=round_to)
    seconds["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    out = rewrite(gm, plan)
    seconds["rewrite"] = time.perf_counter() - t
    report = Report(
        model=type(model).__name__,
        capture=gm.meta[ANALYSIS].capture,
        plan=plan,
        analysis=gm.meta[ANALYSIS],
        params_before=count_params(gm),
        params_after=count_params(out),
        macs_before=count_macs(gm, inputs),
        macs_after=count_macs(out, inputs),
        seconds=seconds,
    )
    out.meta[REPORT] = report
    if verify:
        report.verification = _verify(gm, out, inputs, plan=plan)
    return out
