"""Report: what a pruning did, as a text table and as HTML in Jupyter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate
from torch import nn

from .measure import count_macs, count_params, latency_ms
from .passes.dependency import Analysis, Unsupported
from .plan import Plan

__all__ = ["Report", "count_macs", "count_params", "latency_ms", "make_report"]


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


@dataclass
class Report:
    """Groups (size, kept, exact or approximate, members), pinned classes with reasons,
    unsupported ops, parameters and MACs before and after."""

    model: str
    capture: str
    plan: Plan
    analysis: Analysis
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: dict[str, float] = field(default_factory=dict)
    verification: Any = None
    notes: list[str] = field(default_factory=list)
    #: removed blocks (depth pruning): [id, kind, parameters, score] rows, and the score used
    blocks: list[list[Any]] = field(default_factory=list)
    depth_score: str | None = None
    #: mode="joint": one dict per candidate (width / depth / mixed), "selected" marks the kept one
    candidates: list[dict[str, Any]] = field(default_factory=list)

    # -- tables ---------------------------------------------------------------------------
    def group_rows(self) -> list[list[Any]]:
        rows = []
        for g in self.plan.groups:
            kept = len(self.plan.keep.get(g.id, range(g.size)))
            members = ", ".join(f"{p}[{d}]" for p, d in g.params[:3]) + (f" +{len(g.params) - 3}" if len(g.params) > 3 else "")
            rows.append([g.id, g.size, kept, "exact" if g.exact else "approx", members])
        return rows

    def pinned_rows(self) -> list[list[Any]]:
        """Channel-like classes (they occur in data, not only in weights such as kernel taps)
        that hold parameters but keep every index, with the reason."""
        return [
            [c.id, c.size, c.pinned, ", ".join(f"{p}[{d}]" for p, d in c.params[:2])]
            for c in self.analysis.classes
            if c.params and c.pinned is not None and c.size > 1 and c.data
        ]

    def summary_rows(self) -> list[list[Any]]:
        def ratio(a: float, b: float) -> str:
            return f"{a / b:.2f}x" if b else "-"

        return [
            ["parameters", _fmt(self.params_before), _fmt(self.params_after), ratio(self.params_before, self.params_after)],
            ["MACs", _fmt(self.macs_before), _fmt(self.macs_after), ratio(self.macs_before, self.macs_after)],
        ]

    @property
    def unsupported(self) -> tuple[Unsupported, ...]:
        return self.analysis.unsupported

    def __str__(self) -> str:
        n_removed = sum(1 for g in self.plan.groups if g.id in self.plan.keep)
        lines = [
            f"fxprune report: {self.model} (capture: {self.capture}, {self._how()}, "
            f"{'exact groups only' if self.plan.exact_only else 'exact and approximate groups'})",
            tabulate(self.summary_rows(), headers=["", "before", "after", "reduction"]),
            f"{len(self.plan.groups)} prunable groups ({sum(g.exact for g in self.plan.groups)} exact), "
            f"{n_removed} pruned; {len(self.pinned_rows())} pinned channel classes hold parameters",
        ]
        if self.unsupported:
            lines.append("ops without a rule (their channels stay whole):")
            lines.extend(f"  {u.message()}" for u in self.unsupported)
        lines.extend(self._depth_lines())
        lines.extend(self._approx_lines())
        if self.verification is not None:
            lines.append(str(self.verification))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _approx_lines(self) -> list[str]:
        """The approximate groups the plan pruned, apart, with the measured output deviation."""
        groups = [g for g in self.plan.groups if not g.exact and g.id in self.plan.keep]
        if not groups:
            return []
        err = getattr(self.verification, "approx_rel_err", None)
        how = f"together they move the outputs by {err:.2e} (relative, measured)" if err is not None else (
            "their output deviation is not measured: pass verify=True")
        out = [f"approximate groups pruned ({how}):"]
        for g in groups:
            members = ", ".join(f"{p}[{d}]" for p, d in g.params[:2]) + (f" +{len(g.params) - 2}" if len(g.params) > 2 else "")
            out.append(f"  group {g.id}: {g.size} -> {len(self.plan.keep[g.id])}, {g.approx_reason or 'approximate'}; {members}")
        return out

    def block_rows(self) -> list[list[Any]]:
        ids = [r[0] for r in self.blocks]
        rest = [b for b in getattr(self.plan, "removed_blocks", ()) if b not in ids]
        return [[i, k, _fmt(n), "-" if s is None else f"{s:.4g}"] for i, k, n, s in self.blocks] + [[b, "-", "-", "-"] for b in rest]

    def candidate_rows(self) -> list[list[Any]]:
        def f(v: Any, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        return [
            ["*" if c["selected"] else "", c["candidate"], c["blocks removed"], f(c["width ratio"], ".3f"),
             "-" if c["MACs"] is None else _fmt(c["MACs"]), f(c["speedup"], ".2f"),
             "-" if c["params"] is None else _fmt(c["params"]), f(c["cka"], ".4f"), c["note"]]
            for c in self.candidates
        ]  # fmt: skip

    _BLOCK_HEAD = ["block", "kind", "params", "score"]
    _CAND_HEAD = ["", "candidate", "blocks", "width ratio", "MACs", "speedup", "params", "CKA", "note"]

    def _depth_lines(self) -> list[str]:
        out = []
        if self.block_rows():
            out.append(f"{len(self.block_rows())} blocks removed (score: {self.depth_score or 'named'}):")
            out.append(tabulate(self.block_rows(), headers=self._BLOCK_HEAD))
        if self.candidates:
            out.append("joint candidates at the same MACs target (* = highest CKA to the original, kept):")
            out.append(tabulate(self.candidate_rows(), headers=self._CAND_HEAD))
        return out

    def _how(self) -> str:
        meta = self.plan.meta
        n = len(getattr(self.plan, "removed_blocks", ()))
        depth = f"{n} blocks removed, " if n else ""  # depth pruning (fxprune.depth)
        for kind in ("speedup", "params"):
            if kind in meta:
                at = f"({depth}at ratio {self.plan.ratio:.3f})" if n else f"at ratio {self.plan.ratio:.3f}"
                return f"target {kind} {meta['target']}x reached {meta[kind]:.3f}x {at}"
        return f"{depth}ratio {self.plan.ratio}"

    def details(self) -> str:
        """Every group and every pinned class, as text tables."""
        return "\n\n".join([
            str(self),
            tabulate(self.group_rows(), headers=["group", "size", "kept", "kind", "members"]),
            tabulate(self.pinned_rows(), headers=["class", "size", "pinned because", "members"]),
        ])  # fmt: skip

    def _repr_html_(self) -> str:
        parts = [
            f"<b>fxprune report</b>: {self.model} (capture: {self.capture}, {self._how()})",
            tabulate(self.summary_rows(), headers=["", "before", "after", "reduction"], tablefmt="html"),
            tabulate(self.group_rows(), headers=["group", "size", "kept", "kind", "members"], tablefmt="html"),
        ]
        if self.pinned_rows():
            parts.append(tabulate(self.pinned_rows(), headers=["class", "size", "pinned because", "members"], tablefmt="html"))
        if self.block_rows():
            parts.append(tabulate(self.block_rows(), headers=self._BLOCK_HEAD, tablefmt="html"))
        if self.candidates:
            parts.append(tabulate(self.candidate_rows(), headers=self._CAND_HEAD, tablefmt="html"))
        if self.verification is not None:
            parts.append(f"<p>{self.verification}</p>")
        return "\n".join(parts)


def make_report(model: str, gm: Any, pruned: nn.Module, plan: Plan, inputs: tuple,
                seconds: dict[str, float] | None = None) -> Report:  # fmt: skip
    """The report of a pruning: ``gm`` is the analyzed original, ``pruned`` the rewrite of
    it under ``plan``; parameters and MACs are measured on both with ``inputs``."""
    analysis = gm.meta["fxprune.analysis"]
    notes = []
    hw = plan.meta.get("round_to")
    if hw:  # round_to="auto"
        notes.append(f"round_to=auto on {hw['device']}: channel step {hw['step']}, {hw['measured']} new layer "
                     f"timings (cache {hw['cache']})")  # fmt: skip
        for cid, why in hw["kept_whole"].items():
            notes.append(f"group {cid} kept whole: {why}")
        if "end_to_end_ms" in hw:
            e = hw["end_to_end_ms"]
            notes.append(hw.get("gave_up") or f"end to end on the example inputs: {e['pruned']:.2f} ms pruned vs "
                         f"{e['original']:.2f} ms original, pruned faster in "
                         f"{e.get('pruned_faster_in', float('nan')):.0%} of the paired rounds")  # fmt: skip
    # torch.export: the input dims the graph is fixed to (the others take any size)
    notes.extend(f"static input dim: {d}" for d in gm.meta.get("fxprune.static_dims", ()))
    return Report(
        model=model,
        notes=notes,
        capture=analysis.capture,
        plan=plan,
        analysis=analysis,
        params_before=count_params(gm),
        params_after=count_params(pruned),
        macs_before=count_macs(gm, inputs),
        macs_after=count_macs(pruned, inputs),
        seconds=dict(seconds or {}),
    )
