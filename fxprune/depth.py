"""Depth pruning: score whole blocks, remove them, and choose between width, depth and both.

A block is a removable branch of an add (``fxprune.find_blocks``: ``y = x + f(x)``, with or
without a layer-scale or drop-path in the branch). Removing it makes ``y = x``.

Block scores (higher means keep), each from a few batches ``data``:

| ``depth_score`` | score of block b | needs |
|---|---|---|
| ``"cka"`` | ``1 - CKA(out, out without b)``: linear CKA (Kornblith et al. 2019) of the model's outputs over every sample of ``data`` | inputs |
| ``"loss"`` | mean loss without b minus mean loss with it | ``(inputs, target)`` and ``loss_fn`` |
| ``"taylor"`` | first-order estimate of that loss increase: ``-sum(dL/db * b)`` (one backward pass for all blocks) | ``(inputs, target)`` and ``loss_fn`` |

``joint`` builds a width-only, a depth-only and mixed candidates at the same MACs target and
keeps the one whose outputs are most similar to the original's (highest linear CKA), the
selection rule of "Pruning Everything, Everywhere, All at Once" (Nascimento et al., 2023).

Example:
    >>> small = fxprune.compile(model, example_inputs=x, depth=4, data=[xb])   # 4 blocks fewer
    >>> small = fxprune.compile(model, example_inputs=x, speedup=2.0, mode="joint", data=[xb])
    >>> print(small.meta["fxprune.report"])  # the candidates and their CKA are in the report
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import fx, nn

from .capture import as_inputs, capture
from .measure import count_macs, count_params
from .measure import restore_modes as _restore
from .measure import train_modes as _modes
from .passes.blocks import Block, find_blocks, gate_blocks, remove_blocks
from .passes.dependency import analyze as _analyze
from .passes.keys import ANALYSIS, REPORT
from .pipeline import prune_width
from .verify import _tensors
from .verify import verify as _verify

__all__ = [
    "DEPTH_SCORES", "MODES", "linear_cka", "block_scores", "rank_blocks", "removable_blocks", "compile_depth",
    "joint_candidates",
]  # fmt: skip

DEPTH_SCORES = ("cka", "loss", "taylor")
MODES = ("width", "depth", "joint")


# ------------------------------------------------------------------------------------------
# CKA and batches
# ------------------------------------------------------------------------------------------
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same n samples (rows), from their
    centered Gram matrices: ``<Kc, Lc> / (|Kc| |Lc|)`` with ``K = x x^T``, ``L = y y^T``.
    1.0 for representations equal up to rotation and scale.

    Example:
        >>> x = torch.randn(16, 10)
        >>> round(linear_cka(x, 3 * x), 6)
        1.0
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: {x.shape[0]} vs {y.shape[0]} samples; both need the same rows")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 samples (one sample has no variance to compare)")
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    k, l_ = x @ x.T, y @ y.T
    hxy = (k * l_).sum()
    norm = (k * k).sum().sqrt() * (l_ * l_).sum().sqrt()
    if float(norm) == 0.0:
        return 1.0 if float((k * k).sum()) == float((l_ * l_).sum()) == 0.0 else 0.0
    return float(hxy / norm)


def _inputs(batch: Any) -> tuple:
    """A batch is inputs (a tensor or a tuple of positional arguments) or ``(inputs, target)``."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = batch[0]
    return as_inputs(batch)


def _pairs(data: Sequence, loss_fn: Callable | None, who: str) -> list[tuple[tuple, Any]]:
    if loss_fn is None or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in data):
        raise ValueError(
            f"depth_score={who!r} needs labelled batches and a loss: pass data=[(inputs, target), ...] and "
            "loss_fn=callable(output, target) (depth_score='cka' needs only inputs)"
        )
    return [(as_inputs(b[0]), b[1]) for b in data]


def _data(data: Iterable | None, what: str) -> list:
    if data is None:
        raise ValueError(
            f"{what} needs data: pass data=[inputs, ...] or [(inputs, target), ...], a few small batches "
            "(blocks and candidates are compared on them)"
        )
    data = list(data)
    if not data:
        raise ValueError(f"{what}: data is empty; pass at least one batch")
    return data


@torch.no_grad()
def _outputs(m: nn.Module, data: Sequence) -> torch.Tensor:
    """The model's outputs on every batch, flattened per sample, as one (n, d) matrix."""
    was = _modes(m)
    m.eval()
    try:
        rows = []
        for b in data:
            ts = _tensors(m(*_inputs(b)))
            rows.append(torch.cat([t.reshape(t.shape[0], -1).double() for t in ts], 1))
        return torch.cat(rows, 0)
    finally:
        _restore(m, was)


# ------------------------------------------------------------------------------------------
# block scores
# ------------------------------------------------------------------------------------------
def removable_blocks(gm: fx.GraphModule) -> list[Block]:
    """The blocks depth pruning chooses from: residual branches ``y = x + f(x)``. Parallel
    branches (``fxprune.find_blocks(gm)`` lists them) are removed only when named."""
    return find_blocks(gm, kinds=("residual",))


def block_scores(
    gm: fx.GraphModule,
    data: Iterable,
    *,
    score: str = "cka",
    loss_fn: Callable | None = None,
    blocks: Sequence[Block] | None = None,
) -> dict[str, float]:
    """Importance of each block (higher means keep), from a few batches; see the module
    docstring for the three scores. ``gm`` is a captured GraphModule; it is not modified.

    Example:
        >>> gm = fxprune.capture(model, x)
        >>> s = block_scores(gm, [x], score="cka")
        >>> min(s, key=s.get)   # the block whose removal changes the outputs least
        'layer3.1/add_5'
    """
    if score not in DEPTH_SCORES:
        raise ValueError(f"depth_score must be one of {DEPTH_SCORES}, got {score!r}")
    data = _data(data, f"depth_score={score!r}")
    blocks = removable_blocks(gm) if blocks is None else list(blocks)
    if not blocks:
        return {}
    gated, gates = gate_blocks(gm, blocks)
    gated.eval()
    out: dict[str, float] = {}
    if score == "cka":
        ref = _outputs(gated, data)
        for b in blocks:
            gates[b.id].fill_(0.0)
            out[b.id] = 1.0 - linear_cka(ref, _outputs(gated, data))
            gates[b.id].fill_(1.0)
        return out
    pairs = _pairs(data, loss_fn, score)
    if score == "loss":

        @torch.no_grad()
        def mean_loss() -> float:
            return sum(float(loss_fn(gated(*i), t)) for i, t in pairs) / len(pairs)  # type: ignore[misc]

        base = mean_loss()
        for b in blocks:
            gates[b.id].fill_(0.0)
            out[b.id] = mean_loss() - base
            gates[b.id].fill_(1.0)
        return out
    # taylor: L(gate=0) ~ L - dL/dgate, and dL/dgate = sum(dL/db * b)
    for p in gated.parameters():
        p.requires_grad_(False)
    for g in gates.values():
        g.requires_grad_(True)
    acc = {k: 0.0 for k in gates}
    with torch.enable_grad():
        for i, t in pairs:
            grads = torch.autograd.grad(loss_fn(gated(*i), t), list(gates.values()), allow_unused=True)  # type: ignore[misc]
            for k, g in zip(gates, grads):
                acc[k] += 0.0 if g is None else float(g)
    return {k: -v / len(pairs) for k, v in acc.items()}


def rank_blocks(blocks: Sequence[Block], scores: Mapping[str, float]) -> list[Block]:
    """Blocks in removal order: lowest score first (ties: graph order)."""
    pos = {b.id: i for i, b in enumerate(blocks)}
    return sorted(blocks, key=lambda b: (scores.get(b.id, math.inf), pos[b.id]))


def _take(order: Sequence[Block], k: int) -> list[Block]:
    """The first k blocks of ``order`` that do not overlap (one inside another)."""
    from .passes.blocks import _conflict

    out: list[Block] = []
    for b in order:
        if len(out) == k:
            break
        if not any(_conflict(b, c) for c in out):
            out.append(b)
    return out


def _count(depth: int | float, n: int, pool: Sequence[Block]) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, float)):
        raise TypeError(f"depth must be a number of blocks, a fraction in (0, 1) or a list of block ids, got {depth!r}")
    if isinstance(depth, float) and 0 < depth < 1:
        return max(1, round(depth * n))
    if depth != int(depth) or depth < 0:
        raise ValueError(f"depth must be a whole number of blocks >= 0 or a fraction in (0, 1), got {depth!r}")
    if depth > n:
        names = ", ".join(b.id for b in pool[:6]) + (" ..." if n > 6 else "")
        raise ValueError(
            f"depth={depth} but this model has only {n} removable residual blocks ({names or 'none'}); "
            f"pass depth <= {n}, a fraction, or explicit block ids (fxprune.find_blocks lists every branch)"
        )
    return int(depth)


# ------------------------------------------------------------------------------------------
# compile with depth
# ------------------------------------------------------------------------------------------
def _analyzed(model: nn.Module, inputs: tuple, method: str) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta:
        return model
    return _analyze(capture(model, inputs, method=method))


def _width(
    gm: fx.GraphModule, gm_d: fx.GraphModule, inputs: tuple, base_macs: int, base_params: int,
    ratio: float | None, speedup: float | None, params: float | None, kw: dict,
) -> fx.GraphModule:  # fmt: skip
    """Width pruning of the depth-pruned ``gm_d`` so that the whole model (against ``gm``)
    reaches ``speedup``/``params``, or by ``ratio``; ratio 0 when depth alone is enough."""

    if speedup is not None:
        s = speedup * count_macs(gm_d, inputs) / base_macs
        speedup = s if s > 1.0 + 1e-3 else None
        ratio = None if speedup is not None else 0.0
    elif params is not None:
        p = params * count_params(gm_d) / base_params
        params = p if p > 1.0 + 1e-3 else None
        ratio = None if params is not None else 0.0
    elif ratio is None:
        ratio = 0.0
    if ratio == 0.0:
        kw = dict(kw, importance="l2", scores=None)  # nothing is pruned: skip data-driven scores
    return prune_width(gm_d, ratio, inputs=inputs, speedup=speedup, params=params, verify=False, **kw)


def _finish(model: nn.Module, gm: fx.GraphModule, out: fx.GraphModule, inputs: tuple, base: tuple[int, int],
            removed: Sequence[Block], scores: Mapping[str, float], score: str, target: tuple[str, float] | None,
            verify: bool) -> fx.GraphModule:  # fmt: skip
    report = out.meta[REPORT]
    report.model = type(model).__name__
    report.params_before, report.macs_before = base[1], base[0]
    report.blocks = [[b.id, b.kind, b.numel(gm), scores.get(b.id)] for b in removed]
    report.depth_score = score if scores else None
    if target is not None:
        kind, t = target
        got = base[0] / max(report.macs_after, 1) if kind == "speedup" else base[1] / max(report.params_after, 1)
        report.plan.meta.update({kind: got, "target": t})
    if verify:
        report.verification = _verify(gm, out, inputs, plan=report.plan)
    return out


def compile_depth(
    model: nn.Module,
    ratio: float | None = None,
    *,
    example_inputs: Any,
    depth: int | float | Sequence[str] | None = None,
    depth_score: str = "cka",
    mode: str = "width",
    speedup: float | None = None,
    params: float | None = None,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    verify: bool = False,
    joint_mix: Sequence[float] = (0.5,),
    **kw: Any,
) -> fx.GraphModule:
    """``fxprune.compile`` with ``depth=`` or ``mode="depth"|"joint"`` (it calls this).

    - ``depth=k`` (int), a fraction of the removable blocks, or a list of block ids: remove
      those blocks (scored by ``depth_score`` on ``data`` unless named); with ``ratio``,
      ``speedup`` or ``params`` the remaining graph is also width-pruned, and targets count
      against the original model.
    - ``mode="depth"`` with ``speedup=``/``params=``: remove the lowest-scored blocks until the
      target is reached (the first count that reaches it; blocks are whole, so it may overshoot).
    - ``mode="joint"`` with ``speedup=``: width-only, depth-only and mixed candidates (each
      ``joint_mix`` fraction of the MAC reduction from depth, the rest from width), keep the
      one with the highest linear CKA to the original's outputs on ``data``.

    ``kw`` are ``compile``'s width options (exact, importance, round_to, global_ranking, ...).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if depth_score not in DEPTH_SCORES:
        raise ValueError(f"depth_score must be one of {DEPTH_SCORES}, got {depth_score!r}")
    if kw.get("scores") is not None:
        raise ValueError(
            "scores= holds group ids of the full model's analysis, which depth pruning changes; "
            "use importance= with depth= or mode='depth'/'joint'"
        )
    targets = [t for t in (ratio, speedup, params) if t is not None]
    if len(targets) > 1:
        raise ValueError("give one of ratio=, speedup= or params=, not several")
    if mode == "joint":
        if depth is not None:
            raise ValueError("mode='joint' chooses the blocks itself; leave depth= out (or use mode='width' with depth=)")
        if speedup is None:
            raise ValueError("mode='joint' needs a MACs target: pass speedup=s (base MACs / pruned MACs)")
    if mode == "depth":
        if depth is not None or (speedup is None and params is None):
            raise ValueError("mode='depth' removes blocks until speedup= or params= is reached; for a count use depth=k")
    inputs = as_inputs(example_inputs)
    gm = _analyzed(model, inputs, kw.get("capture", "auto"))
    base = (count_macs(gm, inputs), count_params(gm))
    pool = removable_blocks(gm)
    if isinstance(depth, str):
        depth = [depth]
    explicit = isinstance(depth, (list, tuple))
    scores: dict[str, float] = {}
    if explicit:
        from .passes.blocks import select_blocks

        chosen = select_blocks(find_blocks(gm), list(depth))  # type: ignore[arg-type]
    else:
        if not pool:
            raise ValueError(
                f"{type(model).__name__} has no removable residual block (y = x + f(x) with f read only "
                "by the add); depth pruning needs one. fxprune.find_blocks(gm) lists every removable branch"
            )
        data = _data(data, "depth pruning")
        scores = block_scores(gm, data, score=depth_score, loss_fn=loss_fn, blocks=pool)
        order = rank_blocks(pool, scores)
    width_kw = dict(kw, data=data, loss_fn=loss_fn)
    if mode == "joint":
        return _joint(model, gm, inputs, base, order, scores, depth_score, speedup, data, joint_mix, verify, width_kw)  # type: ignore[arg-type]
    if mode == "depth":
        kind, t = ("speedup", speedup) if speedup is not None else ("params", params)
        chosen = _depth_to(gm, inputs, order, kind, t, base)  # type: ignore[arg-type]
        if chosen is None:
            raise ValueError(
                f"mode='depth': removing all {len(pool)} removable blocks does not reach {kind}={t}; "
                "use mode='joint' or add width pruning (depth=k with speedup=)"
            )
        gm_d = remove_blocks(gm, [b.id for b in chosen])
        out = _width(gm, gm_d, inputs, *base, 0.0, None, None, width_kw)  # blocks only
        return _finish(model, gm, out, inputs, base, chosen, scores, depth_score, (kind, t), verify)  # type: ignore[arg-type]
    if not explicit:
        k = _count(depth, len(pool), pool)  # type: ignore[arg-type]
        chosen = _take(order, k)
        if len(chosen) < k:
            raise ValueError(f"depth={depth}: only {len(chosen)} blocks can be removed together (the rest lie inside them)")
    gm_d = remove_blocks(gm, [b.id for b in chosen]) if chosen else gm
    out = _width(gm, gm_d, inputs, *base, ratio, speedup, params, width_kw)
    target = ("speedup", speedup) if speedup is not None else ("params", params) if params is not None else None
    return _finish(model, gm, out, inputs, base, chosen, scores, depth_score, target, verify)


def _block_macs(gm: fx.GraphModule, inputs: tuple, blocks: Sequence[Block], base: int) -> dict[str, int]:
    """MACs each block's branch costs (base minus the MACs without it; removal is additive)."""
    return {b.id: base - count_macs(remove_blocks(gm, [b.id], analyze=False), inputs) for b in blocks}


def _depth_to(gm: fx.GraphModule, inputs: tuple, order: Sequence[Block], kind: str, target: float,
              base: tuple[int, int], tol: float = 0.01, cost: Mapping[str, int] | None = None,
              ) -> list[Block] | None:  # fmt: skip
    """The shortest prefix of ``order`` (non-overlapping) that reaches the target."""
    if cost is None:
        cost = _block_macs(gm, inputs, order, base[0]) if kind == "speedup" else {b.id: b.numel(gm) for b in order}
    total = base[0] if kind == "speedup" else base[1]
    chosen: list[Block] = []
    left = total
    for b in _take(order, len(order)):
        chosen.append(b)
        left -= cost[b.id]
        if total / max(left, 1) >= target * (1 - tol):
            return chosen
    return None


def _candidates(gm: fx.GraphModule, inputs: tuple, base: tuple[int, int], order: Sequence[Block], speedup: float,
                data: list, mix: Sequence[float], kw: dict) -> list[dict[str, Any]]:  # fmt: skip
    """Width-only, depth-only and mixed candidates at ``speedup``, each a dict with its
    ``model`` (None where it could not be built, with a ``note``), ``blocks`` and measurements."""

    ref = _outputs(gm, data)
    cost = _block_macs(gm, inputs, order, base[0])
    usable = _take(order, len(order))
    built: list[tuple[str, fx.GraphModule | None, list[Block], str]] = []
    built.append(("width", prune_width(gm, None, inputs=inputs, speedup=speedup, verify=False, **kw), [], ""))
    chosen = _depth_to(gm, inputs, order, "speedup", speedup, base, cost=cost)
    if chosen is None:
        all_out = base[0] / max(base[0] - sum(cost[b.id] for b in usable), 1)
        built.append(("depth", None, [], f"removing all {len(usable)} blocks gives only {all_out:.2f}x"))
    else:
        gm_d = remove_blocks(gm, [b.id for b in chosen])
        built.append(("depth", _width(gm, gm_d, inputs, *base, 0.0, None, None, kw), chosen, ""))
    # mixed: a fraction f of the MAC reduction from whole blocks, the rest from width
    for f in mix:
        goal = base[0] * (1 - f * (1 - 1 / speedup))  # MACs after the depth part
        chosen, left = [], base[0]
        for b in usable:  # lowest scores first; a block is taken when it brings the MACs closer
            after = left - cost[b.id]  # to the depth share and leaves width something to do
            if abs(after - goal) < abs(left - goal) and after > base[0] / speedup:
                chosen.append(b)
                left = after
        name = f"mixed {f:.2f}"
        if not chosen:
            built.append((name, None, [], "no block fits the depth share"))
            continue
        gm_d = remove_blocks(gm, [b.id for b in chosen])
        built.append((name, _width(gm, gm_d, inputs, *base, None, speedup, None, kw), chosen, ""))
    rows = []
    for name, m, chosen, note in built:
        row: dict[str, Any] = {"candidate": name, "blocks removed": len(chosen), "width ratio": None, "MACs": None,
                               "speedup": None, "params": None, "cka": None, "note": note, "selected": False,
                               "model": m, "blocks": [b.id for b in chosen]}  # fmt: skip
        if m is not None:
            macs = count_macs(m, inputs)
            row.update({"width ratio": round(m.meta[REPORT].plan.ratio, 4), "MACs": macs,
                        "speedup": base[0] / max(macs, 1), "params": count_params(m),
                        "cka": linear_cka(ref, _outputs(m, data))})  # fmt: skip
        rows.append(row)
    return rows


def joint_candidates(
    model: nn.Module,
    example_inputs: Any,
    speedup: float,
    data: Iterable,
    *,
    depth_score: str = "cka",
    loss_fn: Callable | None = None,
    mix: Sequence[float] = (0.5,),
    capture: str = "auto",
    **width_kw: Any,
) -> list[dict[str, Any]]:
    """Every candidate ``mode="joint"`` compares, with its pruned ``model`` (a GraphModule
    with its own report, width part only; None where the candidate could not be built):
    ``width`` (width only), ``depth`` (the fewest lowest-scored blocks that reach ``speedup``),
    and ``mixed f`` (blocks for about a fraction f of the MAC reduction, width for the rest).
    Each dict also has ``blocks``, ``MACs``, ``speedup``, ``params`` and ``cka`` (linear CKA
    of its outputs to the original's on ``data``).

    Example:
        >>> rows = joint_candidates(model, x, 2.0, [xb])
        >>> max(rows, key=lambda r: r["cka"] or -1)["candidate"]
        'mixed 0.50'
    """
    inputs = as_inputs(example_inputs)
    gm = _analyzed(model, inputs, capture)
    data = _data(data, "joint candidates")
    pool = removable_blocks(gm)
    scores = block_scores(gm, data, score=depth_score, loss_fn=loss_fn, blocks=pool)
    base = (count_macs(gm, inputs), count_params(gm))
    kw = dict(width_kw, capture=capture, data=data, loss_fn=loss_fn)
    return _candidates(gm, inputs, base, rank_blocks(pool, scores), speedup, data, mix, kw)


def _joint(model: nn.Module, gm: fx.GraphModule, inputs: tuple, base: tuple[int, int], order: Sequence[Block],
           scores: Mapping[str, float], score: str, speedup: float, data: list, mix: Sequence[float],
           verify: bool, kw: dict) -> fx.GraphModule:  # fmt: skip
    rows = _candidates(gm, inputs, base, order, speedup, data, mix, kw)
    built = [r for r in rows if r["model"] is not None]
    if not built:
        raise ValueError(f"mode='joint': no candidate reached speedup={speedup}")
    best = max(built, key=lambda r: r["cka"])  # first of equals: width, then depth, then mixed
    best["selected"] = True
    chosen = [b for b in order if b.id in best["blocks"]]
    out = _finish(model, gm, best["model"], inputs, base, chosen, scores, score, ("speedup", speedup), verify)
    out.meta[REPORT].candidates = [{k: v for k, v in r.items() if k != "model"} for r in rows]
    return out
