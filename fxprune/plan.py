"""Plan: which indices of each group to keep. Plain data, JSON-serializable, checked against
the analysis it is applied to by the member parameters' FQNs."""

from __future__ import annotations

import fnmatch
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import fx, nn

from .errors import PlanError
from .passes.axes import Layout
from .passes.blocks import REMOVED
from .passes.dependency import Analysis
from .passes.keys import ANALYSIS, SPEC

__all__ = ["Group", "Plan", "make_plan", "choose"]


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
    #: ids of whole blocks (branches of an add) removed before the width groups apply
    #: (``fxprune.find_blocks``); the groups are then those of the graph without them.
    removed_blocks: tuple[str, ...] = ()

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
        return Plan(self.ratio, self.groups, keep, exact_only=exact or self.exact_only, meta=dict(self.meta),
                    removed_blocks=self.removed_blocks)

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

    def _repr_html_(self) -> str:
        """Jupyter: one row per group (size, kept, removed, exact or why approximate, members)."""
        import html

        from tabulate import tabulate

        rows = []
        for g in self.groups:
            kept = len(self.keep.get(g.id, range(g.size)))
            members = ", ".join(f"{p}[{d}]" for p, d in g.params[:3]) + (f" +{len(g.params) - 3}" if len(g.params) > 3 else "")
            kind = "exact" if g.exact else f"approx ({g.approx_reason})"
            rows.append([g.id, g.size, kept, g.size - kept, html.escape(kind), html.escape(members)])
        head = (f"<b>fxprune plan</b>: ratio {self.ratio:g}, {len(self.keep)} of {len(self.groups)} groups pruned, "
                f"{self.kept_fraction():.1%} of grouped indices kept{' (exact groups only)' if self.exact_only else ''}")  # fmt: skip
        table = tabulate(rows, headers=["group", "size", "kept", "removed", "kind", "members"], tablefmt="unsafehtml")
        return f"<p>{head}</p>\n{table}"

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
        return cls(d["ratio"], groups, keep, d.get("exact_only", False), d.get("meta", {}),
                   tuple(d.get("removed_blocks", ())))

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


HEADS_MODES = ("heads", "head_dim", "both")


def _head_classes(analysis: Analysis) -> set[int]:
    """Classes of the dims attention rules recorded as heads (the batch-like dim of q.k)."""
    out: set[int] = set()
    for rec in analysis.extra.values():
        lay = rec.get("heads") if isinstance(rec, dict) else None
        if lay is not None:
            out.update(lay.classes())
    return out


def _product_dims(analysis: Analysis) -> list[list[int]]:
    """The classes of every product dim in the parameter layouts (looking inside
    concatenations), each layout once."""
    out: list[list[int]] = []

    def visit(lay: Layout) -> None:
        if lay.kind == "prod":
            out.append(list(lay.classes()))
        for p in lay.parts:
            if lay.kind == "cat":
                visit(p)

    seen: set[int] = set()
    for lays in analysis.param_layouts.values():
        for lay in lays:
            if id(lay) not in seen:
                seen.add(id(lay))
                visit(lay)
    return out


def _heads_split(analysis: Analysis, exact: bool, heads: str) -> tuple[dict[int, int], set[int]]:
    """Attention units: (factor counts for the pruned unit, classes that keep every index).

    ``heads="heads"``: heads classes take the whole ratio; classes sharing a product dim with
    a heads class (head_dim: the offsets inside each head) keep everything.
    ``heads="head_dim"``: heads classes keep everything; their product siblings take the
    whole ratio (the same offsets removed from every head). ``"both"``: the ratio is spread
    over heads and head_dim like any product (``_factors``).
    """
    if heads not in HEADS_MODES:
        raise ValueError(f"heads must be one of {HEADS_MODES}, got {heads!r}")
    prunable = {c.id for c in analysis.prunable() if c.size > 1 and (c.approx is None or not exact)}
    hs = _head_classes(analysis) & prunable
    k: dict[int, int] = {}
    keep: set[int] = set()
    if heads == "both" or not hs:
        return k, keep
    if heads == "head_dim":
        keep |= hs

    for classes in _product_dims(analysis):
        inside = set(classes) & prunable
        h = inside & hs
        if h:
            unit = h if heads == "heads" else inside - h
            for c in unit:
                k[c] = max(k.get(c, 1), len(unit))
            if heads == "heads":
                keep.update(inside - h)
    if heads == "heads":
        keep -= hs
    return k, keep


def _factors(analysis: Analysis, exact: bool) -> dict[int, int]:
    """For each prunable class, the most prunable classes it shares one product dim with.

    A grouped conv's channels are (group, channel-in-group); pruning both factors by r
    would remove 1 - (1 - r)^2 of the channels. Spreading r over the k factors of a dim
    (each loses 1 - (1 - r)^(1/k)) makes the dim as a whole lose about r.
    """
    # only classes this plan will actually prune count as factors
    prunable = {c.id for c in analysis.prunable() if c.size > 1 and (c.approx is None or not exact)}
    k: dict[int, int] = {}
    for classes in _product_dims(analysis):
        inside = set(classes) & prunable
        for c in inside:
            k[c] = max(k.get(c, 1), len(inside))
    return k


def _keep_count(size: int, ratio: float, round_to: int, min_keep: int = 1) -> int:
    # nearest, ties towards keeping: a factor's share of the ratio may be well under one index
    keep = size - math.ceil(size * ratio - 0.5 - 1e-9)
    keep = max(keep, min(size, min_keep))
    if not isinstance(round_to, int):
        return max(1, keep)  # round_to="auto": the WidthChooser rounds afterwards
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(1, keep)


def _min_keep(spec: int | float | None, size: int, global_ranking: bool) -> int:
    """``min_keep``: an int (indices) or a fraction in (0, 1) of the group. The default is 1
    for uniform allocation and 10% of the group for global ranking, which would otherwise
    collapse weak layers to a single channel (DepGraph Table 2's over-pruning failure)."""
    if spec is None:
        spec = 0.1 if global_ranking else 1
    n = math.ceil(spec * size) if isinstance(spec, float) and spec < 1 else int(spec)
    return max(1, min(size, n))


def _matches(fqn: str, patterns: Iterable[str]) -> str | None:
    module = fqn.rpartition(".")[0]
    for pat in patterns:
        if fnmatch.fnmatchcase(module, pat) or fnmatch.fnmatchcase(fqn, pat):
            return pat
    return None


def _order(s: torch.Tensor) -> list[int]:
    # stable: ties keep the lower index, so plans are deterministic
    return torch.sort(-s.detach().double().flatten(), stable=True).indices.tolist()


def _allocate(
    analysis: Analysis, scores: Mapping[int, torch.Tensor], ratio: float, *, exact: bool, round_to: Any,
    min_keep: int | float | None, global_ranking: bool | str, ratios: Mapping[str, float], ignore: Iterable[str],
    heads: str = "heads", signatures: Mapping[int, Any] | None = None,
) -> tuple[list[Group], dict[int, tuple[int, ...]]]:  # fmt: skip
    """Kept indices per group for one overall ``ratio``. ``global_ranking="isomorphic"``
    ranks only among groups with the same ``signatures`` entry."""
    groups, counts, candidates = [], {}, []
    factors = _factors(analysis, exact)
    head_factors, whole = _heads_split(analysis, exact, heads)
    factors.update(head_factors)
    for c in analysis.prunable():
        g = Group(c.id, c.size, c.params, c.approx is None, c.approx)
        groups.append(g)
        if (exact and not g.exact) or c.id in whole or any(_matches(p, ignore) for p, _ in c.params):
            continue
        s = scores.get(c.id)
        if s is None or s.numel() != c.size:
            raise PlanError(f"fxprune.make_plan: no score of length {c.size} for group {c.id}")
        # an override follows the group's first parameter in graph order: the layer that
        # produces those channels (matching any member would also hit consumers' inputs)
        pat = _matches(c.params[0][0], ratios)
        r = ratios[pat] if pat is not None else None
        floor = _min_keep(min_keep, c.size, bool(global_ranking))
        if r is not None or not global_ranking:
            r = ratio if r is None else r
            counts[c.id] = _keep_count(c.size, 1 - (1 - r) ** (1 / factors.get(c.id, 1)), round_to, floor)
        else:
            candidates.append((c, s, floor))
    if candidates:
        # global ranking: scores are normalized per group, so they compare across groups;
        # the lowest `ratio` of all candidate indices go, no group below its floor.
        # Isomorphic ranking (Fang et al., ECCV 2024) ranks within each set of groups of the
        # same structure only, so each kind of group loses `ratio` of its indices in all.
        kinds: dict[Any, list] = {}
        for cand in candidates:
            key = (signatures or {}).get(cand[0].id, cand[0].id) if global_ranking == "isomorphic" else None
            kinds.setdefault(key, []).append(cand)
        for kind in kinds.values():
            removed = _rank(kind, ratio)
            for c, _, floor in kind:
                counts[c.id] = _keep_count(c.size, removed[c.id] / c.size, round_to, floor)
    if not isinstance(round_to, int):  # a WidthChooser (round_to="auto")
        counts = {cid: round_to(cid, n, _min_keep(min_keep, _size(analysis, cid), bool(global_ranking)))
                  for cid, n in counts.items()}  # fmt: skip
    keep = {cid: tuple(sorted(_order(scores[cid])[:n])) for cid, n in counts.items() if n < _size(analysis, cid)}
    return groups, keep


def _rank(candidates: list, ratio: float) -> dict[int, int]:
    """How many indices each candidate group loses when the lowest ``ratio`` of all their
    (normalized) scores go, no group below its floor."""
    pool = sorted((float(s[i]), c.id, i) for c, s, _ in candidates for i in range(c.size))
    budget = math.floor(ratio * len(pool) + 1e-9)
    removed = {c.id: 0 for c, _, _ in candidates}
    room = {c.id: c.size - floor for c, _, floor in candidates}
    for _, cid, _ in pool:
        if budget == 0:
            break
        if removed[cid] < room[cid]:
            removed[cid] += 1
            budget -= 1
    return removed


def signatures(gm: fx.GraphModule, analysis: Analysis) -> dict[int, tuple]:
    """Each prunable group's structure: its size and, in order, every member's owning module
    type, tensor name, shape and dim. Groups with equal signatures are isomorphic (the same
    kind of layer in every block of a ViT or ConvNeXt stage) and compete in isomorphic
    ranking."""
    modules = dict(gm.named_modules())
    tensors = dict(gm.named_parameters(remove_duplicate=False))
    tensors.update(gm.named_buffers(remove_duplicate=False))
    out = {}
    for c in analysis.prunable():
        members = []
        for fqn, dim in c.params:
            owner, _, attr = fqn.rpartition(".")
            t = tensors.get(fqn)
            members.append((type(modules.get(owner)).__name__, attr, tuple(t.shape) if t is not None else None, dim))
        out[c.id] = (c.size, tuple(members))
    return out


def _size(analysis: Analysis, cid: int) -> int:
    return analysis.classes[cid].size


def make_plan(
    gm: fx.GraphModule,
    ratio: float | None = None,
    scores: Mapping[int, torch.Tensor] | None = None,
    *,
    exact: bool = False,
    round_to: int | str = 1,
    min_keep: int | float | None = None,
    global_ranking: bool | str = False,
    speedup: float | None = None,
    params: float | None = None,
    ratios: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    example_inputs: Any = None,
    tolerance: float = 0.01,
    heads: str = "heads",
) -> Plan:
    """Decide which indices of every prunable group to keep.

    Allocation: ``ratio`` removes that fraction of every group (uniform), or, with
    ``global_ranking=True``, that fraction of all indices ranked together by their
    per-group-normalized scores (the layer sparsity is learned), or, with
    ``global_ranking="isomorphic"`` (Isomorphic Pruning, Fang et al., ECCV 2024), ranked
    only among groups of the same structure (``signatures``: the MLP hidden units of every
    block compete with each other, not with the embedding dim). ``ratios={glob: r}`` sets
    the ratio of the groups a matching module produces (the group's first parameter in
    graph order; FQN globs); ``ignore=[glob]`` leaves every group touching a matching
    module whole, its inputs included. ``min_keep``: indices (int) or fraction
    (float < 1) a group always keeps. ``round_to``: kept counts are multiples of it, or
    ``"auto"``: widths measured on the model's device and cached (``fxprune.hardware``):
    counts rounded to the hardware's step, and a group stays whole where no narrower width
    runs faster; what was chosen is in ``plan.meta["round_to"]``.

    Targets instead of a ratio: ``speedup=s`` (base MACs / pruned MACs) or ``params=f``
    (base parameters / pruned parameters). The overall ratio is found by bisection, counting
    MACs (torch.utils.flop_counter) and parameters of the rewritten model at each step,
    until within ``tolerance`` (relative) of the target.

    Where one channel dim is a product of k prunable groups (a grouped conv's groups and
    channels per group), each loses ``1 - (1 - r) ** (1 / k)`` under uniform allocation, so
    the dim as a whole loses about ``r``. ``scores`` defaults to group L2 magnitude.

    Attention (``heads``): ``"heads"`` (default) removes whole heads, each attention loses
    ``r`` of its heads and head_dim stays (the softmax scale, kernels' head_dim constraints
    and the per-head computation are unchanged); ``"head_dim"`` keeps every head and removes
    the same offsets from each; ``"both"`` spreads ``r`` over the two like any product.

    Example:
        >>> plan = make_plan(gm, speedup=2.0)
        >>> round(plan.meta["speedup"], 2)
        2.0
    """
    targets = [t for t in (speedup, params) if t is not None]
    if len(targets) > 1 or (targets and ratio is not None):
        raise ValueError("give one of ratio=, speedup= or params=, not several")
    if not targets:
        if ratio is None:
            raise ValueError("give ratio= (fraction of each group removed), speedup= or params=")
        _check_ratio(ratio)
    for name, t in (("speedup", speedup), ("params", params)):
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t < 1):
            raise ValueError(f"{name} must be a number >= 1 (base / pruned), got {t!r}")
    for pat, r in (ratios or {}).items():
        _check_ratio(r, f"ratios[{pat!r}]")
    if round_to != "auto" and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive int or \"auto\" (measured on this device), got {round_to!r}")
    if min_keep is not None and (isinstance(min_keep, bool) or not isinstance(min_keep, (int, float)) or min_keep <= 0):
        raise ValueError(f"min_keep must be a positive int or a fraction in (0, 1), got {min_keep!r}")
    if isinstance(ignore, str):
        ignore = [ignore]
    if global_ranking not in (True, False, "isomorphic"):
        raise ValueError(f"global_ranking must be True, False or \"isomorphic\", got {global_ranking!r}")
    if heads not in HEADS_MODES:
        raise ValueError(f"heads must be one of {HEADS_MODES} (the attention unit pruned), got {heads!r}")
    analysis: Analysis = gm.meta.get(ANALYSIS)
    if analysis is None:
        raise PlanError("fxprune.make_plan: no fxprune.analysis on this GraphModule; run fxprune.analyze first")
    if scores is None:
        from .importance import magnitude

        scores = magnitude(gm, 2)
    chooser = None
    if round_to == "auto":
        from .hardware import WidthChooser

        chooser = WidthChooser(gm, analysis)
    sigs = signatures(gm, analysis) if global_ranking == "isomorphic" else None
    opts = dict(exact=exact, round_to=chooser or round_to, min_keep=min_keep, global_ranking=global_ranking,
                ratios=dict(ratios or {}), ignore=list(ignore), heads=heads, signatures=sigs)  # fmt: skip

    def plan_at(r: float) -> Plan:
        if chooser is not None:
            chooser.kept_whole.clear()
            chooser.stepped_down.clear()
        groups, keep = _allocate(analysis, scores, r, **opts)  # type: ignore[arg-type]
        plan = Plan(float(r), tuple(groups), keep, exact_only=exact, removed_blocks=tuple(gm.meta.get(REMOVED, ())))
        if chooser is not None:
            plan.meta["round_to"] = chooser.summary()
        return plan

    try:
        if not targets:
            return plan_at(float(ratio))  # type: ignore[arg-type]
        return _search(gm, plan_at, "speedup" if speedup is not None else "params", targets[0], example_inputs,
                       tolerance)  # fmt: skip
    finally:
        if chooser is not None:
            chooser.save()


def _check_ratio(ratio: Any, name: str = "ratio") -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"{name} must be in [0, 1), got {ratio!r}: it is the fraction of each group removed")


def _search(gm: fx.GraphModule, plan_at: Any, kind: str, target: float, example_inputs: Any, tol: float) -> Plan:
    """Bisection on the overall ratio until the measured reduction is within ``tol`` of target."""
    from .measure import count_macs, count_params
    from .passes.rewrite import rewrite

    inputs = _inputs_from_specs(gm) if example_inputs is None else example_inputs

    def measure(m: nn.Module) -> float:
        return float(count_macs(m, inputs) if kind == "speedup" else count_params(m))

    base = measure(gm)

    def achieved(p: Plan) -> float:
        return base / max(measure(rewrite(gm, p)), 1.0)

    lo, hi = 0.0, 0.99
    best = plan_at(lo)
    best_got = 1.0
    top = plan_at(hi)
    top_got = achieved(top)
    if top_got < target * (1 - tol):
        raise PlanError(
            f"fxprune.make_plan: {kind}={target} is out of reach; pruning 99% of every prunable "
            f"group gives {top_got:.2f}x (pinned groups, exact mode or ignore= limit it)"
        )
    for _ in range(24):
        mid = (lo + hi) / 2
        p = plan_at(mid)
        got = achieved(p)
        if abs(got - target) < abs(best_got - target):
            best, best_got = p, got
        if abs(got - target) <= tol * target:
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    best.meta.update({kind: best_got, "target": target})
    if abs(best_got - target) > tol * target:
        warnings.warn(
            f"fxprune.make_plan: {kind}={target} reached only {best_got:.3f}x, outside the {tol:.0%} tolerance: "
            "the kept counts move in coarse steps here (narrow groups, round_to, or isomorphic ranking, which "
            "takes one ratio per kind of group); the closest plan is used",
            stacklevel=3,
        )
    return best


def _inputs_from_specs(gm: fx.GraphModule) -> tuple:
    """Zeros shaped like the example inputs the graph was propagated with (MACs do not
    depend on values)."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            spec = n.meta.get(SPEC)
            out.append(torch.zeros(spec.shape, dtype=spec.dtype) if hasattr(spec, "shape") else spec)
    return tuple(out)


def choose(gm: fx.GraphModule, remove: Mapping[str, Iterable[int]], base: Plan | None = None) -> Plan:
    """A plan that removes the chosen indices of named layers, with every coupled slice.

    ``remove`` maps a name to the indices to remove from it: a module (its ``weight``'s dim 0:
    a conv's output channels, a linear layer's output features), a parameter FQN (dim 0), or
    either with ``:dim`` (``"fc.weight:1"``: a linear layer's input features). The group
    holding that dim loses those indices in every member (the next layer's inputs, the batch
    norm, the residual partners...). Other groups keep everything, or follow ``base`` (a plan
    made earlier, e.g. by ``make_plan``), whose choice for the named groups is replaced.

    Raises ``PlanError`` naming the key when the name is unknown, the dim is pinned (with the
    reason), is a product of several groups (a grouped conv's channels: name one factor's
    layer instead), an index is out of range, every index would go, or two names reach the
    same group with different indices.

    Example:
        >>> plan = choose(gm, {"layer2.0.conv1": [2, 6, 9]})
        >>> small = fxprune.rewrite(gm, plan)
    """
    analysis: Analysis | None = gm.meta.get(ANALYSIS)
    if analysis is None:
        raise PlanError("fxprune: choosing indices needs an analyzed graph; run fxprune.analyze first")
    if base is None:
        base = make_plan(gm, 0.0, scores={c.id: torch.zeros(c.size) for c in analysis.prunable()})
    groups = {g.id for g in base.groups}
    params = dict(gm.named_parameters(remove_duplicate=False))
    modules = dict(gm.named_modules())
    keep = dict(base.keep)
    chosen: dict[int, tuple[str, tuple[int, ...]]] = {}
    for key, idx in remove.items():
        name, _, dim_text = key.partition(":")
        if name in params:
            fqn = name
        elif name in modules and isinstance(getattr(modules[name], "weight", None), torch.Tensor):
            fqn = f"{name}.weight" if name else "weight"
        else:
            raise PlanError(f"fxprune: remove[{key!r}]: no module with a weight, and no parameter, is named {name!r}")
        try:
            dim = int(dim_text) if dim_text else 0
        except ValueError:
            raise PlanError(f"fxprune: remove[{key!r}]: the dim after ':' must be an int") from None
        layouts = analysis.param_layouts.get(fqn)
        if layouts is None or not -len(layouts) <= dim < len(layouts):
            raise PlanError(f"fxprune: remove[{key!r}]: {fqn} has no analyzed dim {dim}")
        lay = layouts[dim]
        if lay.kind != "leaf":
            raise PlanError(
                f"fxprune: remove[{key!r}]: {fqn} dim {dim} is a product of several groups ({lay}), e.g. a grouped "
                "conv's groups x channels per group; name a layer whose dim is one group"
            )
        info = analysis.classes[lay.cls]  # classes are indexed by id
        if info.pinned is not None:
            raise PlanError(f"fxprune: remove[{key!r}]: {fqn} dim {dim} keeps every index: {info.pinned}")
        if lay.cls not in groups:
            why = f"approximate ({info.approx}) and the plan is exact-only" if info.approx and base.exact_only else \
                "not a prunable group (no parameter to slice, or a single index)"
            raise PlanError(f"fxprune: remove[{key!r}]: {fqn} dim {dim} is {why}")
        drop = tuple(sorted({int(i) for i in idx}))
        if any(not 0 <= i < info.size for i in drop):
            raise PlanError(f"fxprune: remove[{key!r}]: indices must be in [0, {info.size}), got {list(drop)}")
        if len(drop) >= info.size:
            raise PlanError(f"fxprune: remove[{key!r}]: removing all {info.size} indices would leave nothing")
        if lay.cls in chosen and chosen[lay.cls][1] != drop:
            other, prev = chosen[lay.cls]
            raise PlanError(
                f"fxprune: remove[{key!r}] = {list(drop)} and remove[{other!r}] = {list(prev)} reach the same group "
                f"(group {lay.cls}: {', '.join(f'{p}[{d}]' for p, d in info.params[:4])}) with different indices"
            )
        chosen[lay.cls] = (key, drop)
        keep[lay.cls] = tuple(i for i in range(info.size) if i not in set(drop))
    meta = dict(base.meta)
    meta["chosen"] = {key: list(drop) for key, drop in chosen.values()}
    return Plan(base.ratio, base.groups, keep, exact_only=base.exact_only, meta=meta, removed_blocks=base.removed_blocks)
