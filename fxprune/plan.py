"""Plan: which indices of each group to keep. Plain data, JSON-serializable, checked against
the analysis it is applied to by the member parameters' FQNs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import fx

from .passes.axes import Layout
from .passes.dependency import Analysis
from .passes.keys import ANALYSIS

from .errors import PlanError

__all__ = ["Group", "Plan", "make_plan"]


@dataclass(frozen=True)
class Group:
    """One prunable class: the parameter slices (FQN, dim) that lose the same indices."""

    id: int
    size: int
    params: tuple[tuple[str, int], ...]
    exact: bool
    approx_reason: str | None = None


@dataclass(frozen=True)
class Plan:
    """For each group id, the sorted indices to keep.

    Example:
        >>> plan = make_plan(gm, 0.5)
        >>> plan.kept_fraction()
        0.5
    """

    ratio: float
    groups: tuple[Group, ...]
    keep: Mapping[int, tuple[int, ...]]
    exact_only: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def removed(self, gid: int) -> int:
        g = self.group(gid)
        return g.size - len(self.keep.get(gid, range(g.size)))

    def group(self, gid: int) -> Group:
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(gid)

    def restrict(self, exact: bool = True) -> "Plan":
        """The same plan with only exact groups pruned (approximate ones keep everything)."""
        keep = {g: k for g, k in self.keep.items() if self.group(g).exact or not exact}
        return Plan(self.ratio, self.groups, keep, exact_only=True, meta=dict(self.meta))

    def masks(self) -> dict[int, torch.Tensor]:
        out = {}
        for g in self.groups:
            if g.id in self.keep:
                m = torch.zeros(g.size, dtype=torch.bool)
                m[list(self.keep[g.id])] = True
                out[g.id] = m
        return out

    def kept_fraction(self) -> float:
        total = sum(g.size for g in self.groups)
        kept = sum(len(self.keep.get(g.id, range(g.size))) for g in self.groups)
        return kept / total if total else 1.0

    def to_json(self) -> str:
        d = asdict(self)
        d["keep"] = {str(k): list(v) for k, v in self.keep.items()}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        groups = tuple(
            Group(g["id"], g["size"], tuple((p, dim) for p, dim in g["params"]), g["exact"], g["approx_reason"])
            for g in d["groups"]
        )
        keep = {int(k): tuple(v) for k, v in d["keep"].items()}
        return cls(d["ratio"], groups, keep, d.get("exact_only", False), d.get("meta", {}))

    def check(self, analysis: Analysis) -> None:
        """Fail clearly if this plan was made for another model (or another analysis)."""
        classes = {c.id: c for c in analysis.classes}
        for g in self.groups:
            c = classes.get(g.id)
            if c is None or c.size != g.size or tuple(c.params) != tuple(g.params):
                what = "missing" if c is None else f"size {c.size}, params {list(c.params)[:3]}"
                raise PlanError(
                    f"fxprune.rewrite: plan group {g.id} (size {g.size}, params {list(g.params)[:3]}) "
                    f"does not match this model's class {g.id} ({what}); make the plan from this "
                    "model's analysis"
                )
            if not c.prunable:
                raise PlanError(f"fxprune.rewrite: plan prunes group {g.id}, which this model pins: {c.pinned}")


def _factors(analysis: Analysis, exact: bool) -> dict[int, int]:
    """For each prunable class, the most prunable classes it shares one product dim with.

    A grouped conv's channels are (group, channel-in-group); pruning both factors by r
    would remove 1 - (1 - r)^2 of the channels. Spreading r over the k factors of a dim
    (each loses 1 - (1 - r)^(1/k)) makes the dim as a whole lose about r.
    """
    # only classes this plan will actually prune count as factors
    prunable = {c.id for c in analysis.prunable() if c.size > 1 and (c.approx is None or not exact)}
    k: dict[int, int] = {}

    def visit(lay: Layout) -> None:
        if lay.kind == "prod":
            inside = set(lay.classes()) & prunable
            for c in inside:
                k[c] = max(k.get(c, 1), len(inside))
        for p in lay.parts:
            if lay.kind == "cat":
                visit(p)

    seen: set[int] = set()
    for lays in analysis.param_layouts.values():
        for lay in lays:
            if id(lay) not in seen:
                seen.add(id(lay))
                visit(lay)
    return k


def _keep_count(size: int, ratio: float, round_to: int) -> int:
    # nearest, ties towards keeping: a factor's share of the ratio may be well under one index
    keep = size - math.ceil(size * ratio - 0.5 - 1e-9)
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(1, keep)


def make_plan(
    gm: fx.GraphModule,
    ratio: float,
    scores: Mapping[int, torch.Tensor] | None = None,
    *,
    exact: bool = False,
    round_to: int = 1,
) -> Plan:
    """Keep the highest-scoring ``1 - ratio`` of every prunable group (at least one index,
    rounded up to a multiple of ``round_to``). With ``exact=True`` only exact groups are
    pruned. ``scores`` defaults to group L2 magnitude.

    Where one channel dim is a product of k prunable groups (a grouped conv's groups and
    channels per group), each of them loses ``1 - (1 - ratio) ** (1 / k)`` so the dim as a
    whole loses about ``ratio``.
    """
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}: it is the fraction of each group removed")
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive int, got {round_to!r}")
    analysis: Analysis = gm.meta.get(ANALYSIS)
    if analysis is None:
        raise PlanError("fxprune.make_plan: no fxprune.analysis on this GraphModule; run fxprune.analyze first")
    if scores is None:
        from .importance import magnitude

        scores = magnitude(gm, 2)
    groups, keep = [], {}
    factors = _factors(analysis, exact)
    for c in analysis.prunable():
        g = Group(c.id, c.size, c.params, c.approx is None, c.approx)
        groups.append(g)
        if exact and not g.exact:
            continue
        r = 1 - (1 - ratio) ** (1 / factors.get(c.id, 1))
        n = _keep_count(c.size, r, round_to)
        if n >= c.size:
            continue
        s = scores.get(c.id)
        if s is None or s.numel() != c.size:
            raise PlanError(f"fxprune.make_plan: no score of length {c.size} for group {c.id}")
        # stable: ties keep the lower index, so plans are deterministic
        order = sorted(range(c.size), key=lambda i: (-float(s[i]), i))
        keep[c.id] = tuple(sorted(order[:n]))
    return Plan(float(ratio), tuple(groups), keep, exact_only=exact)
