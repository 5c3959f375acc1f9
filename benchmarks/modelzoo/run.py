"""fxprune's side of one model (exact and default mode, a detector's backbone), and ``run_model``:
everything docs/zoo.md says about one model."""

from __future__ import annotations

import copy
import gc
import math
import re
import time
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

import fxprune

from .build import Options, build
from .limits import StepTimeout, detail, first_line, is_oom, stage_of, time_limit
from .models import ModelSpec
from .records import finite
from .tp import run_torch_pruning


def reason_kind(reason: str) -> str:
    """A pin reason without its node names, so that reasons count across nodes and models.

    Example:
        >>> reason_kind("spatial dims mixed by a convolution (conv1)")
        'spatial dims mixed by a convolution'
        >>> reason_kind("graph input x")
        'graph input'
        >>> reason_kind("no common refinement of cat[48, 48] and prod[2, 48] (cat_3)")
        'no common refinement of cat[..] and prod[..]'
    """
    r = re.sub(r"^graph input \S+$", "graph input", reason)
    r = re.sub(r" \([A-Za-z_][\w.]*\)$", "", r)
    r = re.sub(r" at [\w.]+ ", " ", r)
    r = re.sub(r"\[[\d, ]+\]", "[..]", r)  # sizes: "no common refinement of cat[48, 48] and prod[2, 48]"
    return r[:160]


def _versions(model: nn.Module) -> dict[str, tuple]:
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(dict(model.named_buffers(remove_duplicate=False)))
    return {k: (id(t), t._version, tuple(t.shape)) for k, t in state.items()}


def run_fxprune(model: nn.Module, args: tuple, opts: Options, *, exact: bool, keep: bool = False) -> Any:
    """One ``fxprune.compile(..., verify=True)``; the fields of docs/zoo.md's fxprune columns
    (and the pruned model, ``keep=True``: ``(fields, model)``). Exceptions propagate (the
    caller categorizes them)."""
    before = _versions(model)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fxprune.compile(model, opts.ratio, example_inputs=args, exact=exact, verify=True)
    seconds = time.perf_counter() - t
    r = out.meta["fxprune.report"]
    v = r.verification
    plan = r.plan
    pinned = r.pinned_rows()
    kinds = Counter(reason_kind(row[2]) for row in pinned)
    unsupported = list(r.unsupported)
    f64 = None
    if not v.passed and v.max_rel_err is not None and math.isfinite(v.max_rel_err):
        # float32 rounding differences can be amplified past the tolerance (deep random-weight
        # nets, attention); float64 tells them apart from a wrong pruning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f64 = fxprune.verify(model, out, args, plan=plan, dtype=torch.float64)
    rec: dict[str, Any] = {
        "capture": r.capture,
        "groups": len(plan.groups),
        "groups_exact": sum(g.exact for g in plan.groups),
        "groups_pruned": sum(1 for g in plan.groups if plan.removed(g.id) > 0),
        "pinned": len(pinned),
        "pinned_top": [[k, n] for k, n in kinds.most_common(3)],
        "unsupported": len(unsupported),
        "unsupported_ops": [[op, n] for op, n in Counter(u.op for u in unsupported).most_common()],
        "unsupported_msgs": [u.message() for u in unsupported[:10]],
        "params_before": r.params_before,
        "params_after": r.params_after,
        "macs_before": r.macs_before,
        "macs_after": r.macs_after,
        "param_reduction": 1 - r.params_after / r.params_before if r.params_before else 0.0,
        "mac_reduction": 1 - r.macs_after / r.macs_before if r.macs_before else 0.0,
        "verified": bool(v.passed or (f64 is not None and f64.passed)),
        "verified_in": "float32" if v.passed else "float64" if f64 is not None and f64.passed else None,
        "max_rel_err": finite(v.max_rel_err),
        "max_rel_err_f64": finite(f64.max_rel_err) if f64 is not None else None,
        "approx_rel_err": finite(v.approx_rel_err),
        "seconds": round(seconds, 3),
        # "verify+count": masked-equals-pruned and the parameter/MAC counts (outside report.seconds)
        "stage_seconds": {
            **{k: round(s, 3) for k, s in r.seconds.items()},
            "verify+count": round(seconds - sum(r.seconds.values()), 3),
        },
        "model_untouched": _versions(model) == before,
    }
    if not rec["model_untouched"]:
        rec["note"] = "fxprune.compile modified the input model (parameter or buffer changed in place)"
    if keep:
        return rec, out
    del out
    return rec


def run_backbone(model: nn.Module, args: tuple, opts: Options) -> dict[str, Any]:
    """A torchvision detector whose whole forward cannot be captured (data-dependent box
    post-processing): prune its ``backbone`` (body + FPN; the feature maps it returns are
    graph outputs, so they keep their channels) on the batched image its ``transform`` makes,
    check masked-equals-pruned there, and run the detector end to end with the pruned
    backbone swapped into a copy. Equal features give equal detections, so the backbone's
    check is the detector's."""
    images, _ = model.transform(list(args[0]))
    x = images.tensors
    rec, small = run_fxprune(model.backbone, (x,), opts, exact=True, keep=True)  # the checked one
    det = copy.deepcopy(model)
    det.backbone = small
    with torch.no_grad():
        det(*args)
    rec["detector_runs"] = True
    rec["input"] = "x".join(map(str, x.shape))
    rec["detector_params_before"] = fxprune.count_params(model)
    rec["detector_params_after"] = fxprune.count_params(det)
    rec["status"] = _status(rec)
    return rec


_DEFAULT_KEYS = (
    "groups_pruned",
    "params_after",
    "macs_after",
    "param_reduction",
    "mac_reduction",
    "verified",
    "max_rel_err",
    "approx_rel_err",
    "seconds",
    "model_untouched",
)


def _status(rec: dict[str, Any]) -> str:
    if not rec["verified"]:
        return "verify_failed"
    return "pass" if rec["params_after"] < rec["params_before"] else "pass_no_reduction"


def run_model(spec: ModelSpec, opts: Options) -> dict[str, Any]:
    """Everything docs/zoo.md says about one model, as one JSON-able dict. Never raises
    (except KeyboardInterrupt): failures are recorded with their category.

    Example:
        >>> rec = run_model(ModelSpec("resnet18", "tv-cls", "resnet"), Options(size=32))
        >>> rec["status"], rec["exact"]["verified"]
        ('pass', True)
    """
    rec: dict[str, Any] = {
        "name": spec.name,
        "source": spec.source,
        "family": spec.family,
        "ratio": opts.ratio,
    }
    t0 = time.perf_counter()
    model = args = None
    try:
        with time_limit(opts.timeout):
            model, args, desc, note = build(spec, opts)
        rec["input"] = desc
        rec["input_note"] = note
        rec["params"] = fxprune.count_params(model)
    except StepTimeout as e:
        rec.update(status="timeout", stage="build", error=first_line(e))
    except Exception as e:  # noqa: BLE001
        text = str(e)
        kind = (
            "oom"
            if is_oom(e)
            else text.split(":", 1)[0]
            if text.startswith(("construct:", "input:"))
            else "construct"
        )
        rec.update(status=kind, stage="build", error=first_line(e, 600))
    if model is not None:
        try:
            with time_limit(opts.timeout):
                ex = run_fxprune(model, args, opts, exact=True)
            rec["exact"] = ex
            rec["status"] = _status(ex)
            if ex.get("note"):
                rec["note"] = ex["note"]
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - StepTimeout included
            rec.update(status=stage_of(e), stage="exact", error=first_line(e), error_detail=detail(e))
        if rec.get("status") == "capture" and hasattr(model, "backbone") and hasattr(model, "transform"):
            try:
                with time_limit(opts.timeout):
                    rec["backbone"] = run_backbone(model, args, opts)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001
                rec["backbone"] = {"category": stage_of(e), "error": first_line(e)}
        if opts.default_mode:
            try:
                with time_limit(opts.timeout):
                    de = run_fxprune(model, args, opts, exact=False)
                rec["default"] = {k: de[k] for k in _DEFAULT_KEYS}
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001
                rec["default"] = {"category": stage_of(e), "error": first_line(e), "error_detail": detail(e)}
        if opts.vs_tp:
            try:
                with time_limit(opts.timeout):
                    rec["tp"] = run_torch_pruning(model, args, opts)
            except StepTimeout as e:
                rec["tp"] = {"ran": False, "category": "timeout", "error": first_line(e)}
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    del model, args
    gc.collect()
    return rec
