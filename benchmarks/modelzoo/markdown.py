"""docs/zoo.md from the records."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .models import HUGE_TOKENS
from .run import reason_kind


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1%}" if xs else "-"


def pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "-"


def _err(x: Any) -> str:
    if isinstance(x, (int, float)):
        return f"{x:.1e}"
    return "-" if x is None else str(x)


def _m(n: Any) -> str:
    return f"{n / 1e6:.2f}" if isinstance(n, (int, float)) else "-"


def _tp_cell(tp: dict[str, Any] | None) -> tuple[str, str, str]:
    """(ran, fewer params, check) cells of a model's Torch-Pruning result."""
    if not tp:
        return "", "", ""
    if not tp.get("ran"):
        return f"no ({tp.get('category', '?')})", "-", "-"
    check = tp.get("check", "?")
    if check == "fail":
        check = f"FAIL {_err(tp.get('max_rel_err'))}"
    elif check == "pass":
        check = f"pass {_err(tp.get('max_rel_err'))}"
    return "yes", pct(tp.get("param_reduction")), check


def _tp_why(tp: dict[str, Any]) -> str:
    if tp.get("check") == "fail":
        return f"max rel err {_err(tp.get('max_rel_err'))}"
    return tp.get("error_detail") or tp.get("error") or tp.get("check_why") or ""


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _exact_ok(r: dict[str, Any]) -> bool:
    return r.get("status") == "pass"


def _summary_rows(groups: dict[str, list[dict[str, Any]]], tp: bool) -> list[list[Any]]:
    rows = []
    for key, recs in groups.items():
        ok = [r for r in recs if _exact_ok(r)]
        red = [r["exact"]["param_reduction"] for r in ok]
        dred = [r["default"]["param_reduction"] for r in recs if "params_after" in r.get("default", {})]
        row = [
            key,
            len(recs),
            f"{len(ok)} ({len(ok) / len(recs):.0%})",
            sum(x >= 0.3 for x in red),
            _median(red),
            _median(dred),
        ]
        if tp:
            tps = [r.get("tp") or {} for r in recs]
            row += [sum(bool(t.get("ran")) for t in tps), sum(t.get("check") == "pass" for t in tps),
                    sum(t.get("check") == "unknown" for t in tps)]  # fmt: skip
        rows.append(row)
    return rows


def write_markdown(records: list[dict[str, Any]], path: Path, *, command: str, meta: dict[str, Any]) -> str:
    """docs/zoo.md from the records: header (command, date, machine, versions, settings),
    summary by source then by family, failures by category, pin reasons, every model.
    Returns the text (also written to ``path`` unless it is None)."""
    tp = any("tp" in r for r in records)
    by_source: dict[str, list] = defaultdict(list)
    by_family: dict[str, list] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
        by_family[f"{r['source']} / {r['family']}"].append(r)
    head = ["set", "models", "pass exact (fewer params)", ">= 30% fewer", "median fewer params (exact)",
            "median fewer params (default)"] + (["TP ran", "TP pass", "TP unknown"] if tp else [])  # fmt: skip
    ratio = meta.get("ratio", records[0].get("ratio") if records else None)
    lines = [
        "# fxprune model zoo",
        "",
        "Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Date: {meta.get('date', '?')}. Machine: {meta.get('machine', '?')}. Versions: {meta.get('versions', '?')}.",
        "",
        f"Ratio {ratio}, random weights (norm affines, biases and BatchNorm statistics randomized), "
        f"tolerance {meta.get('tol', 1e-4)} (max |a - b| / max |b| over every output tensor), "
        f"timeout {meta.get('timeout', '?')} s per step (per run, in the order of the commands). *Exact*: `fxprune.compile(model, {ratio}, exact=True, "
        "verify=True)`; a model passes when masked-equals-pruned holds and it has fewer parameters. "
        "A float32 check that misses the tolerance is repeated in float64 (rounding differences amplified by "
        "a deep random-weight net are not a wrong pruning; a wrong pruning fails in float64 too); a model that "
        "passes only there shows both errors in its row. "
        f"*Default*: `fxprune.compile(model, {ratio}, verify=True)` (approximate groups too; its error column "
        "is how far they move the outputs). *TP*: Torch-Pruning "
        "`BasePruner(GroupMagnitudeImportance(p=2), pruning_ratio, ignored_layers=[final classifier])`, its result "
        "checked the same way (a copy of the original with the removed output slices zeroed vs the "
        "Torch-Pruning model; *unknown*: a group member this check does not interpret). "
        "Inputs are the smallest of a ladder the model runs on (see `benchmarks/zoo.py`).",
        "",
        "The full run (every torchvision classification, detection, segmentation and video model and the timm "
        "sample; resumable, so it can run in pieces): `python benchmarks/zoo.py --vs torch-pruning --resume`.",
        "",
        "timm sample: families are the timm modules models are registered in; within a family names are ordered by "
        "SHA-1 of the name; families are visited in sorted order, one model each per round, until "
        f"{meta.get('timm_sample', {}).get('n', 300)} models. Skipped: names with a token among "
        f"{', '.join(sorted(HUGE_TOKENS))}, and models over {meta.get('timm_sample', {}).get('max_params', 200e6) / 1e6:.0f}M "
        "parameters (counted on the meta device); the skipped ones are listed at the end.",
        "",
        f"{len(records)} models; {sum(_exact_ok(r) for r in records)} pass in exact mode with fewer parameters.",
        "",
        *(["## Notes on the run", "", *[f"- {n}" for n in meta["notes"]], ""] if meta.get("notes") else []),
        "## Summary by set",
        "",
        _table(head, _summary_rows(dict(sorted(by_source.items())), tp)),
        "",
        "## Summary by family",
        "",
        _table(["source / family"] + head[1:], _summary_rows(dict(sorted(by_family.items())), tp)),
        "",
        "## Failures by category (exact mode)",
        "",
    ]
    fails: dict[str, list] = defaultdict(list)
    for r in records:
        if not _exact_ok(r):
            fails[r.get("status", "?")].append(r)
    if fails:
        rows = []
        for cat, recs in sorted(fails.items(), key=lambda kv: -len(kv[1])):
            example = recs[0]
            ex = example.get("exact") or {}
            why = (
                example.get("error_detail")
                or example.get("error")
                or (f"max rel err {_err(ex.get('max_rel_err'))}" if cat == "verify_failed" else "")
                or (
                    f"{ex.get('groups_exact')} of {ex.get('groups')} groups exact (the others approximate: a "
                    "statistic such as LayerNorm, GRN or weight standardization spans them), "
                    f"{ex.get('pinned')} pinned; default mode removes "
                    f"{pct((example.get('default') or {}).get('param_reduction'))} of the parameters"
                    if cat == "pass_no_reduction"
                    else ""
                )
            )
            rows.append([cat, len(recs), ", ".join(f"{r['source']}:{r['name']}" for r in recs[:8])
                         + (f" +{len(recs) - 8}" if len(recs) > 8 else ""), why[:400]])  # fmt: skip
        lines.append(_table(["category", "models", "which", "first error (first model)"], rows))
    else:
        lines.append("None.")
    if tp:
        tfail: dict[str, list] = defaultdict(list)
        for r in records:
            t = r.get("tp") or {}
            if t and not t.get("ran"):
                tfail[t.get("category", "?")].append(r)
            elif t.get("check") in ("fail", "unknown"):
                tfail[f"check {t['check']}"].append(r)
        lines += ["", "## Torch-Pruning: not run or not passing, by category", ""]
        rows = [[cat, len(recs), ", ".join(r["name"] for r in recs[:8]) + (f" +{len(recs) - 8}" if len(recs) > 8 else ""),
                 _tp_why(recs[0].get("tp") or {})[:300]]
                for cat, recs in sorted(tfail.items(), key=lambda kv: -len(kv[1]))]  # fmt: skip
        lines.append(_table(["category", "models", "which", "first error"], rows) if rows else "None.")
    dets = [r for r in records if r.get("backbone")]
    if dets:
        lines += ["", "## Detection: the backbone alone, where the whole detector cannot be captured", "",
                  "torchvision detectors post-process boxes with data-dependent control flow that neither "
                  "`symbolic_trace` nor `torch.export` captures. `benchmarks/zoo.py` then prunes `model.backbone` "
                  "(body + FPN, exact mode; its feature maps are graph outputs and keep their channels) on the "
                  "batched image the detector's `transform` makes, checks masked-equals-pruned on it, and runs the "
                  "detector end to end with the pruned backbone swapped into a copy.", ""]  # fmt: skip
        rows = []
        for r in sorted(dets, key=lambda r: r["name"]):
            bb = r["backbone"]
            if "status" in bb:
                rows.append([r["name"], bb["input"], bb["status"], _err(bb.get("max_rel_err")),
                             pct(bb.get("param_reduction")),
                             pct(1 - bb["detector_params_after"] / bb["detector_params_before"]),
                             "yes" if bb.get("detector_runs") else "no"])  # fmt: skip
            else:
                rows.append([r["name"], "-", bb.get("category"), "-", "-", "-", bb.get("error", "")[:80]])
        lines.append(_table(["model", "backbone input", "status", "exact err", "fewer backbone params",
                             "fewer detector params", "detector runs"], rows))  # fmt: skip
    reasons: Counter = Counter()
    ops: Counter = Counter()
    for r in records:
        ex = r.get("exact") or {}
        for k in dict.fromkeys(reason_kind(k) for k, _ in ex.get("pinned_top", [])):
            reasons[k] += 1
        for op, _ in ex.get("unsupported_ops", []):
            ops[op] += 1
    lines += ["", "## Pin reasons (models where the reason is among the top 3)", ""]
    lines.append(_table(["reason", "models"], reasons.most_common(25)) if reasons else "None.")
    lines += ["", "## Ops without a rule (models)", ""]
    lines.append(_table(["op", "models"], ops.most_common(40)) if ops else "None.")
    skipped = meta.get("timm_skipped") or []
    if skipped:
        lines += ["", f"## timm models skipped by the sample's size rule ({len(skipped)})", "",
                  ", ".join(f"{s['name']} ({s['why']})" for s in skipped)]  # fmt: skip
    lines += ["", "## Every model", ""]
    mhead = ["source", "model", "family", "input", "capture", "status", "groups (exact/all, pruned)", "pinned",
             "no-rule ops", "exact err", "params M", "fewer params", "fewer MACs", "default: fewer params",
             "approx err", "s"] + (["TP ran", "TP fewer params", "TP check"] if tp else []) + ["top pin reason (besides graph input/output) / error"]  # fmt: skip
    rows = []
    for r in sorted(records, key=lambda r: (r["source"], r["family"], r["name"])):
        ex = r.get("exact") or {}
        de = r.get("default") or {}
        top = [(k, n) for k, n in ex.get("pinned_top", []) if k not in ("graph input", "graph output")]
        note = r.get("error") or "; ".join(f"{k} x{n}" for k, n in top[:1])
        bb = r.get("backbone")
        if bb:
            note = (f"backbone alone: {bb['status']}, {pct(bb.get('param_reduction'))} fewer backbone params, "
                    f"detector {pct(1 - bb['detector_params_after'] / bb['detector_params_before'])} fewer; "
                    if "status" in bb else f"backbone alone: {bb.get('category')}: {bb.get('error', '')[:60]}; ") + note  # fmt: skip
        row = [
            r["source"], r["name"], r["family"], (r.get("input") or "-") + (f" ({r['input_note']})" if r.get("input_note") else ""),
            ex.get("capture", "-"), r.get("status", "?"),
            f"{ex['groups_exact']}/{ex['groups']}, {ex['groups_pruned']}" if ex else "-",
            ex.get("pinned", "-"), ex.get("unsupported", "-"),
            _err(ex.get("max_rel_err")) + (f" (float64 {_err(ex['max_rel_err_f64'])})" if ex.get("max_rel_err_f64") is not None else ""),
            _m(ex.get("params_before") or r.get("params")),
            pct(ex.get("param_reduction")), pct(ex.get("mac_reduction")),
            pct(de.get("param_reduction")) if "params_after" in de else (de.get("category") or "-"),
            _err(de.get("approx_rel_err")), f"{ex['seconds']:.1f}" if ex else "-",
        ]  # fmt: skip
        if tp:
            row += list(_tp_cell(r.get("tp")))
        row.append(note[:160])
        rows.append(row)
    lines.append(_table(mhead, rows))
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text
