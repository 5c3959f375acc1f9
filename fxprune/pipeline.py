"""The width pipeline behind ``fxprune.compile``: capture and analyze (unless given an analyzed
graph), score, plan, rewrite, the end-to-end timing check of ``round_to="auto"``, report and
verify. ``fxprune.compile`` validates its arguments and dispatches here, or to ``fxprune.depth``
for whole blocks, which calls here for its width part; this module imports neither."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import fx, nn

from .capture import capture as _capture
from .importance import Criterion, get_criterion
from .passes.dependency import analyze as _analyze
from .passes.keys import ANALYSIS, INPUTS, REPORT
from .passes.rewrite import rewrite
from .plan import choose, make_plan
from .report import make_report
from .verify import verify as _verify

__all__ = ["prune_width"]


def _shapes_only(inputs: tuple) -> tuple:
    """The example inputs without their values: tensors become meta tensors."""
    return tuple(torch.empty(a.shape, dtype=a.dtype, device="meta") if isinstance(a, torch.Tensor) else a for a in inputs)


def _never_slower(gm: fx.GraphModule, plan: Any, out: fx.GraphModule, inputs: tuple) -> tuple[Any, fx.GraphModule]:
    """round_to="auto"'s last check: time the pruned model against the original; unless it is
    faster on this device (by the median and in most paired rounds), remove nothing (the plan
    keeps every index) and say so."""
    from dataclasses import replace

    from .hardware import SLOWER, WINS, end_to_end, measurable

    p = next(iter(gm.parameters()), None)
    if p is None or not measurable(p.device):
        return plan, out
    base, small, wins = end_to_end(gm, out, inputs)
    hw = dict(plan.meta.get("round_to") or {})
    hw["end_to_end_ms"] = {"original": round(base, 3), "pruned": round(small, 3), "pruned_faster_in": round(wins, 3)}
    if small <= base * (1 + SLOWER) and wins >= WINS:
        plan.meta["round_to"] = hw
        return plan, out
    how = "ran slower than" if small > base * (1 + SLOWER) else "was not reliably faster than"
    hw["gave_up"] = (f"the pruned model {how} the original on this device ({small:.2f} ms vs {base:.2f} ms "
                     f"on the example inputs, faster in {wins:.0%} of the paired rounds, {WINS:.0%} needed): "
                     "nothing removed")  # fmt: skip
    meta = {k: v for k, v in plan.meta.items() if k not in ("speedup", "params", "target")}  # not reached
    whole = replace(plan, keep={}, meta={**meta, "round_to": hw})
    return whole, rewrite(gm, whole)


def prune_width(
    model: nn.Module,
    ratio: float | None,
    *,
    inputs: tuple,
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
    remove: Mapping[str, Iterable[int]] | None = None,
) -> fx.GraphModule:
    """``fxprune.compile``'s width pruning of ``model`` (or of an analyzed GraphModule, used as
    it is) on ``inputs`` (positional, already bound); the options are ``compile``'s."""
    if ratio is None and speedup is None and params is None:
        ratio = 0.0 if remove else 0.5
    if scores is None:
        criterion = get_criterion(importance)
        if criterion.needs_data and data is None:
            raise ValueError(
                f"importance={importance!r} needs data: pass data=[(inputs, target), ...] and loss_fn "
                "(zeroshot needs only inputs)"
            )
    seconds = {}
    t = time.perf_counter()
    gm = model if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta else None
    if gm is None:
        gm = _capture(model, inputs, method=capture)
        seconds["capture"] = time.perf_counter() - t
        t = time.perf_counter()
        _analyze(gm)
        seconds["analyze"] = time.perf_counter() - t
    t = time.perf_counter()
    if scores is None:
        scores = criterion(gm, data, loss_fn)
    seconds["importance"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = make_plan(
        gm, ratio, scores, exact=exact, round_to=round_to, min_keep=min_keep, global_ranking=global_ranking,
        speedup=speedup, params=params, ratios=ratios, ignore=ignore, example_inputs=inputs, heads=heads,
    )  # fmt: skip
    if remove:
        plan = choose(gm, remove, base=plan)
    seconds["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    out = rewrite(gm, plan)
    seconds["rewrite"] = time.perf_counter() - t
    if round_to == "auto" and plan.keep:
        plan, out = _never_slower(gm, plan, out, inputs)
    report = make_report(type(model).__name__, gm, out, plan, inputs, seconds)
    out.meta[REPORT] = report
    out.meta[INPUTS] = _shapes_only(inputs)
    if verify:
        report.verification = _verify(gm, out, inputs, plan=plan)
    return out


