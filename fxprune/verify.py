"""Numeric proof: the pruned model equals the original with the removed slices zeroed."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .capture import as_inputs, capture
from .passes.blocks import pending_blocks, remove_blocks, zero_blocks
from .passes.dependency import analyze
from .passes.keys import ANALYSIS, REPORT
from .passes.rewrite import Rewriter, rewrite
from .plan import Plan

__all__ = ["VerifyResult", "verify", "mask", "relative_error"]


@dataclass(frozen=True)
class VerifyResult:
    """``max_rel_err``: masked original vs model pruned by the exact groups only (the proof).
    ``approx_rel_err``: masked original vs the model pruned by every group of the plan (how
    far approximate groups move the outputs); None when the plan prunes no approximate group."""

    passed: bool
    max_rel_err: float
    approx_rel_err: float | None
    tol: float
    #: the dtype both sides ran in
    dtype: str = "float32"

    def __str__(self) -> str:
        where = "" if self.dtype == "float32" else f", in {self.dtype}"
        s = (f"masked-equals-pruned: {'PASS' if self.passed else 'FAIL'} (max rel err {self.max_rel_err:.2e}, "
             f"tol {self.tol:.0e}{where})")
        if self.approx_rel_err is not None:
            s += f"; approximate groups move outputs by {self.approx_rel_err:.2e} (relative)"
        return s


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def relative_error(a: Any, b: Any) -> float:
    """max |a - b| / max |b| over every tensor of two (nested) outputs."""
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        return float("inf")
    worst = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return float("inf")
        if not x.is_floating_point():
            worst = max(worst, float((x != y).any()))
            continue
        scale = float(y.abs().max()) if y.numel() else 0.0
        err = float((x.double() - y.double()).abs().max()) if y.numel() else 0.0
        worst = max(worst, err / max(scale, 1e-30))
    return worst


def mask(gm: fx.GraphModule, plan: Plan) -> fx.GraphModule:
    """A copy of the analyzed ``gm`` with every parameter slice the plan removes set to zero,
    and the output of every block it removes replaced by zeros at its add
    (``fxprune.passes.blocks.zero_blocks``)."""
    todo = pending_blocks(gm, plan.removed_blocks)
    ref = remove_blocks(gm, todo) if todo else gm  # the graph the width groups belong to
    out = zero_blocks(gm, todo) if todo else copy.deepcopy(gm)
    plan.check(ref.meta[ANALYSIS])  # group ids belong to one analysis: refuse another's plan
    rw = Rewriter(ref, plan.masks())
    layouts = ref.meta[ANALYSIS].param_layouts
    with torch.no_grad():
        for fqn, p in out.named_parameters(remove_duplicate=False):
            for d, lay in enumerate(layouts.get(fqn, ())):
                kept = rw.kept(lay)
                if kept is not None:
                    drop = torch.ones(p.shape[d], dtype=torch.bool)
                    drop[kept] = False
                    p.index_fill_(d, drop.nonzero().flatten().to(p.device), 0.0)
    return out


#: the tolerance of a comparison run in a low-precision dtype (both sides in it): four units
#: in the last place, relative to the largest output, for kernels that sum the two models in
#: different orders. On small Llama and ViT configs on the CPU both sides came out equal (0.0).
LOW_PRECISION_TOL = {dt: 4 * torch.finfo(dt).eps for dt in (torch.bfloat16, torch.float16)}


def _own_dtype(m: nn.Module) -> torch.dtype | None:
    """The model's low-precision float dtype, if its parameters or buffers have one."""
    for t in (*m.parameters(), *m.buffers()):
        if t.dtype in LOW_PRECISION_TOL:
            return t.dtype
    return None


def _run(m: nn.Module, inputs: tuple, dtype: torch.dtype | None) -> Any:
    """``m`` on ``inputs`` in eval mode, converted to ``dtype`` (None: as it is)."""
    m = copy.deepcopy(m).eval()
    if dtype is not None:
        m = m.to(dtype)
        inputs = tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
    with torch.no_grad():
        return m(*inputs)


def verify(
    model: nn.Module | fx.GraphModule,
    pruned: fx.GraphModule,
    example_inputs: Any,
    *,
    plan: Plan | None = None,
    tol: float = 1e-4,
    dtype: torch.dtype | None = None,
) -> VerifyResult:
    """Prove a pruning numerically: zero the slices the plan removes in a copy of the
    original, run both in eval mode, compare. Both sides run in float32 (``dtype``;
    ``torch.float64`` tightens the comparison to ~1e-15 at a large CPU cost, float64
    depthwise convs being slow), except a bfloat16 or float16 model captured by torch.export:
    its graph has its dtype baked in (casts, dtype asserts), so both sides run in the model's
    own dtype, and ``tol`` is at least ``LOW_PRECISION_TOL[dtype]``; the result says which.
    Pass ``dtype`` to convert anyway, where the graph allows it.

    ``model`` is the original module (or an analyzed GraphModule); ``plan`` defaults to
    the one recorded in the pruned module's report.

    Example:
        >>> small = fxprune.compile(model, 0.5, example_inputs=x)
        >>> fxprune.verify(model, small, x).passed
        True
    """
    inputs = as_inputs(example_inputs, model)
    if plan is None:
        report = pruned.meta.get(REPORT)
        if report is None or report.plan is None:
            raise ValueError("fxprune.verify: pass plan=..., or a module returned by fxprune.compile")
        plan = report.plan
    # capture the original the way the pruned module was captured, so the plan's groups match
    method = {"symbolic_trace": "fx", "torch.export": "export"}.get(pruned.meta.get("fxprune.capture"), "auto")
    gm = model if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta else analyze(capture(model, inputs, method=method))
    exact_plan = plan.restrict(exact=True)
    approx_pruned = any(not plan.group(g).exact for g in plan.keep)
    pruned_exact = rewrite(gm, exact_plan) if approx_pruned else pruned
    own = _own_dtype(pruned)
    if dtype is None:
        baked = own is not None and pruned.meta.get("fxprune.capture") == "torch.export"
        dtype = None if baked else torch.float32
    if dtype is None or dtype in LOW_PRECISION_TOL:
        tol = max(tol, LOW_PRECISION_TOL[dtype or own])
    err = relative_error(_run(pruned_exact, inputs, dtype), _run(mask(gm, exact_plan), inputs, dtype))
    approx = None
    if approx_pruned:
        approx = relative_error(_run(pruned, inputs, dtype), _run(mask(gm, plan), inputs, dtype))
    ran = str(dtype or own).replace("torch.", "")
    return VerifyResult(err <= tol, err, approx, tol, ran)
