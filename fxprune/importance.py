"""Importance criteria behind one interface.

A criterion maps an analyzed GraphModule (and, for data-driven criteria, a few batches and a
loss) to ``Scores``: for each prunable class id, one score per index; higher means keep.

A class's score for index k aggregates every parameter slice that index k touches, across
every layer of the group (DepGraph's full grouping), so a channel removed from a conv, its
BatchNorm and the next conv's input is judged by all of them at once. ``scope`` narrows the
members: ``"full"`` (every parameter), ``"conv"`` (weights with two or more dims: conv and
linear weights, no norm affines or biases), ``"none"`` (no grouping: only the layer that
produces the class, i.e. its first member in graph order).

| criterion | per-index score | source |
|---|---|---|
| ``Magnitude(p)`` | agg over member slices of ``||w[k]||_p`` | Li et al. 2017; DepGraph Eq. 3 |
| ``Random(seed)`` | uniform noise | baseline |
| ``BNScale()`` | ``sum |gamma[k]|`` over the group's BatchNorm scales | Liu et al. 2017 (network slimming) |
| ``Taylor()`` | ``sum |w * dL/dw|`` over the slices | Molchanov et al. 2019 |
| ``Hessian()`` | ``sum 0.5 * w^2 * E[g^2]`` (diagonal Fisher, OBD) | LeCun et al. 1990; Theis et al. 2018 |
| ``ZeroShot()`` | mean ``|activation[k]|`` over every tensor of the class x L2 magnitude | after "Zero-shot structural pruning" |
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import fx, nn

from .measure import restore_modes as _restore
from .measure import train_modes as _modes
from .passes.axes import coords
from .passes.dependency import Analysis, NodeDims
from .passes.keys import ANALYSIS, DIMS

__all__ = [
    "Scores", "Criterion", "Magnitude", "Random", "BNScale", "Taylor", "Hessian", "ZeroShot",
    "magnitude", "slice_stats", "normalize", "get_criterion", "CRITERIA",
]  # fmt: skip

Scores = Mapping[int, torch.Tensor]
SCOPES = ("full", "conv", "none")
NORMALIZERS = ("none", "mean", "max", "sum", "topk")
AGGREGATIONS = ("sum", "mean", "max")


def _in_scope(t: torch.Tensor, scope: str) -> bool:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {SCOPES}")
    return scope != "conv" or t.dim() >= 2


_CHUNK = 1 << 18  # elements per block in _pow_sum's CPU path (1 MiB of float32)


def _pow(x: torch.Tensor, p: int) -> torch.Tensor:
    return x.abs() if p == 1 else x.square() if p == 2 else x.abs().pow(p)


def _pow_sum(w: torch.Tensor, p: int, d: int) -> torch.Tensor:
    """``(|w|^p)`` summed over every dim but ``d``, in float64, one value per position of
    ``d``. Viewed as ``(A, n, B)``: the outer dims are summed first (a contiguous, vectorized
    column sum) and the inner ones last; reducing over a strided dim directly (a conv's
    in-channels) was several times slower and dominated planning on big models."""
    shape = w.shape
    n, a = shape[d], math.prod(shape[:d])
    b = math.prod(shape[d + 1:])
    if w.dtype not in (torch.float32, torch.float64):
        w = w.float()
    if a > 1:
        x = w.reshape(a, n * b)
        rows = max(1, _CHUNK // (n * b))
        if w.device.type != "cpu" or rows >= a or a > 4096 * rows:  # one pass, or too many blocks
            y = _pow(x, p).sum(0)
        else:
            # row blocks through one cache-sized buffer: a full-size |w|^p temporary made
            # this pass swing between 5 and 19 ms on resnet50 with the allocator's state
            buf = torch.empty(rows * n * b, dtype=x.dtype)
            y = torch.zeros(n * b, dtype=x.dtype)
            for part in x.split(rows):
                out = buf[: part.numel()].view(part.shape)
                y += (torch.mul(part, part, out=out) if p == 2 else torch.pow(part.abs(), p, out=out)).sum(0)
        y = y.view(n, b).sum(1) if b > 1 else y
    elif b > 1:
        y = torch.linalg.vector_norm(w.reshape(n, b), ord=p, dim=1).pow(p)
    else:
        y = _pow(w.reshape(n), p)
    return y.double()


def slice_stats(
    gm: fx.GraphModule,
    tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    p: int = 2,
    scope: str = "full",
    classes: Iterable[int] | None = None,
) -> dict[int, list[tuple[str, int, torch.Tensor]]]:
    """For each class, one entry per member parameter dim: (FQN, dim, per-index sum of
    ``|t|^p`` over the slice that index selects). ``tensors`` defaults to ``gm``'s
    parameters (pass ``{fqn: w * grad}`` etc. to aggregate something else the same way).
    Buffers never count. The union of entries of a class is its group."""
    analysis: Analysis = gm.meta[ANALYSIS]
    wanted = set(classes) if classes is not None else {c.id for c in analysis.prunable()}
    if tensors is None:
        tensors = dict(gm.named_parameters())
    out: dict[int, list[tuple[str, int, torch.Tensor]]] = {c: [] for c in wanted}
    sizes = {c.id: c.size for c in analysis.classes}
    for fqn, layouts in analysis.param_layouts.items():
        t = tensors.get(fqn)
        if t is None or not _in_scope(t, scope):
            continue
        dims = [d for d, lay in enumerate(layouts) if any(c in wanted for c in lay.classes())]
        if not dims:
            continue
        if t.is_meta:
            raise ValueError(
                f"fxprune.importance: {fqn} is on the meta device and has no values to score; "
                "use importance='random' (e.g. to time an analysis) or pass scores=, or load real weights"
            )
        w = t.detach()
        for d in dims:
            per_pos = _pow_sum(w, p, d).cpu()  # scores live on the CPU, whatever the device
            lay = layouts[d]
            if lay.kind == "leaf":  # most dims: the positions are the class's indices
                if lay.cls in wanted:
                    out[lay.cls].append((fqn, d, per_pos))
                continue
            for c, m in coords(lay):
                if c not in wanted:
                    continue
                ok = m >= 0
                v = torch.zeros(sizes[c], dtype=torch.float64).index_add_(0, m[ok], per_pos[ok])
                out[c].append((fqn, d, v))
    if scope == "none":
        # no grouping: only the layer that produces the class (its first member in graph order)
        for c, members in out.items():
            if members:
                layer = members[0][0].rpartition(".")[0]
                out[c] = [e for e in members if e[0].rpartition(".")[0] == layer]
    return out


def normalize(score: torch.Tensor, how: str | tuple = "mean") -> torch.Tensor:
    """Per-group normalizer: none, mean, max, sum, or ("topk", k): the paper's
    ``k * I / sum(top-k(I))`` (I over the mean of its k largest)."""
    name, k = (how, None) if isinstance(how, str) else (how[0], how[1])
    if name not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {how!r}; choose one of {NORMALIZERS} (topk as ('topk', k))")
    if name == "none":
        return score
    if name == "topk":
        k = max(1, min(int(k or score.numel()), score.numel()))
        denom = score.topk(k).values.sum() / k
    else:
        denom = {"mean": score.mean, "max": score.max, "sum": score.sum}[name]()
    return score / denom if float(denom) > 0 else score


class Criterion(abc.ABC):
    """Base: ``criterion(gm, data=None, loss_fn=None) -> Scores``. ``needs_data`` criteria
    take a small iterable of ``(inputs, target)`` batches and a loss function."""

    needs_data = False
    name = "criterion"

    @abc.abstractmethod
    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        """Scores for every prunable class of the analyzed ``gm``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Magnitude(Criterion):
    """Group Lp magnitude: per index, the member slices' ``sum |w|^p`` aggregated over the
    group (``agg``: "sum" gives ``(sum over all slices)^(1/p)``; "mean"/"max" take the
    mean/max of the per-slice norms), then normalized per group.

    Example:
        >>> Magnitude(p=2)(fxprune.analyze(model, x))[4].shape
        torch.Size([64])
    """

    name = "magnitude"

    def __init__(self, p: int = 2, agg: str = "sum", normalizer: str | tuple = "mean", scope: str = "full"):
        if agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {agg!r}; choose one of {AGGREGATIONS}")
        normalize(torch.ones(1), normalizer)  # validate early
        self.p, self.agg, self.normalizer, self.scope = p, agg, normalizer, scope

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        return _aggregate(slice_stats(gm, p=self.p, scope=self.scope), self.p, self.agg, self.normalizer)


def _aggregate(stats: dict, p: float, agg: str, normalizer: str | tuple) -> dict[int, torch.Tensor]:
    out = {}
    for c, members in stats.items():
        if not members:
            continue
        vals = torch.stack([v for _, _, v in members])
        if agg == "sum":
            s = vals.sum(0).pow(1.0 / p)
        else:
            norms = vals.pow(1.0 / p)
            s = norms.mean(0) if agg == "mean" else norms.max(0).values
        out[c] = normalize(s, normalizer).float()
    return out


def magnitude(gm: fx.GraphModule, p: int = 2, *, normalizer: str | tuple = "mean", scope: str = "full") -> dict:
    """Shorthand for ``Magnitude(p, normalizer=normalizer, scope=scope)(gm)``."""
    return Magnitude(p, normalizer=normalizer, scope=scope)(gm)


class Random(Criterion):
    """Uniform random scores (seeded): the baseline every criterion should beat."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        g = torch.Generator().manual_seed(self.seed)
        return {c.id: torch.rand(c.size, generator=g) for c in gm.meta[ANALYSIS].prunable()}


class BNScale(Criterion):
    """Network slimming: ``sum |gamma[k]|`` over the BatchNorm scales in the group. Groups
    without a BatchNorm fall back to L2 magnitude (so every group gets a score)."""

    name = "bn_scale"

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        gammas = {
            f"{name}.weight": m.weight
            for name, m in gm.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        }
        out = _aggregate({c: v for c, v in slice_stats(gm, gammas, p=1).items() if v}, 1, "sum", "mean")
        for c, s in magnitude(gm).items():
            out.setdefault(c, s)
        return out


def _batches(data: Iterable | None, loss_fn: Callable | None, who: str) -> list:
    if data is None or loss_fn is None:
        raise ValueError(
            f"the {who} criterion needs data: pass data=[(inputs, target), ...] (a few batches) and "
            "loss_fn=callable(output, target)"
        )
    return list(data)


def _grad_stats(gm: fx.GraphModule, data: Iterable, loss_fn: Callable) -> tuple[dict, dict, int]:
    """Per parameter: sum over batches of grad and of grad^2 (eval mode, weights unchanged)."""
    params = dict(gm.named_parameters())
    g1 = {k: torch.zeros_like(v) for k, v in params.items()}
    g2 = {k: torch.zeros_like(v) for k, v in params.items()}
    was = _modes(gm)
    gm.eval()
    n = 0
    try:
        for batch in data:
            inputs, target = batch
            inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
            gm.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = loss_fn(gm(*inputs), target)
                loss.backward()
            for k, p in params.items():
                if p.grad is not None:
                    g1[k] += p.grad
                    g2[k] += p.grad.pow(2)
            n += 1
    finally:
        gm.zero_grad(set_to_none=True)
        _restore(gm, was)
    return g1, g2, max(n, 1)


class _GradientCriterion(Criterion):
    """A criterion from gradients over a few batches, summed over every slice of the group."""

    needs_data = True

    def __init__(self, normalizer: str | tuple = "mean", scope: str = "full"):
        normalize(torch.ones(1), normalizer)  # validate early
        self.normalizer, self.scope = normalizer, scope


class Taylor(_GradientCriterion):
    """First-order Taylor: per element ``|w * dL/dw|`` (gradient summed over the batches),
    summed over every slice of the group, normalized per group."""

    name = "taylor"

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        g1, _, _ = _grad_stats(gm, _batches(data, loss_fn, "taylor"), loss_fn)  # type: ignore[arg-type]
        prod = {k: (p.detach() * g1[k]) for k, p in gm.named_parameters()}
        return _aggregate(slice_stats(gm, prod, p=1, scope=self.scope), 1, "sum", self.normalizer)


class Hessian(_GradientCriterion):
    """Second order (OBD with the diagonal empirical Fisher as Hessian): per element
    ``0.5 * w^2 * mean(g^2)``, summed over every slice of the group."""

    name = "hessian"

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        _, g2, n = _grad_stats(gm, _batches(data, loss_fn, "hessian"), loss_fn)  # type: ignore[arg-type]
        saliency = {k: 0.5 * p.detach().pow(2) * g2[k] / n for k, p in gm.named_parameters()}
        return _aggregate(slice_stats(gm, saliency, p=1, scope=self.scope), 1, "sum", self.normalizer)


class ZeroShot(Criterion):
    """One forward pass of a little data, no labels: for each class, the mean |activation|
    of each index where it enters a weighted layer (an input of a node that contracts with
    a weight of two or more dims: conv, linear, matmul with a parameter), i.e. the
    information that flows on through the graph, times its L2 weight magnitude. Needs
    ``data`` (inputs, or (inputs, target) pairs); ``loss_fn`` is not used."""

    name = "zeroshot"
    needs_data = True

    def __call__(self, gm: fx.GraphModule, data: Iterable | None = None, loss_fn: Callable | None = None) -> dict:
        if data is None:
            raise ValueError("the zeroshot criterion needs data: pass data=[inputs, ...] (one small batch is enough)")
        analysis: Analysis = gm.meta[ANALYSIS]
        wanted = {c.id: c.size for c in analysis.prunable()}
        acc = {c: torch.zeros(n, dtype=torch.float64) for c, n in wanted.items()}
        hits = {c: torch.zeros(n, dtype=torch.float64) for c, n in wanted.items()}

        feeds = _feeds_weighted_layer(gm)

        class _Watch(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                out = super().run_node(n)
                dims = n.meta.get(DIMS)
                if (n.name in feeds and isinstance(out, torch.Tensor) and isinstance(dims, NodeDims)
                        and out.is_floating_point()):  # fmt: skip
                    a = out.detach().abs().double()
                    for d, lay in enumerate(dims.dims):
                        classes = [c for c in set(lay.classes()) if c in acc]
                        if not classes:
                            continue
                        per_pos = a.mean(dim=[i for i in range(a.dim()) if i != d]) if a.dim() > 1 else a
                        for c, m in coords(lay):
                            if c in acc:
                                ok = m >= 0
                                acc[c].index_add_(0, m[ok], per_pos[ok])
                                hits[c].index_add_(0, m[ok], torch.ones_like(per_pos[ok]))
                return out

        was = _modes(gm)
        gm.eval()
        try:
            with torch.no_grad():
                for batch in data:
                    inputs = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
                    _Watch(gm).run(*(inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
        finally:
            _restore(gm, was)
        weights = magnitude(gm)
        out = {}
        for c in acc:
            act = acc[c] / hits[c].clamp(min=1)
            s = normalize(act, "mean") * weights.get(c, torch.ones(wanted[c])).double()
            out[c] = normalize(s, "mean").float()
        return out


def _feeds_weighted_layer(gm: fx.GraphModule) -> set[str]:
    """Names of nodes used as data by a node that also reads a weight of >= 2 dims."""
    def heavy(n: fx.Node) -> bool:
        if n.op == "call_module":
            return any(p.dim() >= 2 for p in gm.get_submodule(n.target).parameters())
        return any(
            a.op == "get_attr" and isinstance(t := _attr(gm, a.target), torch.Tensor) and t.dim() >= 2
            for a in n.all_input_nodes
        )

    return {a.name for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method") and heavy(n)
            for a in n.all_input_nodes if a.op != "get_attr"}  # fmt: skip


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


CRITERIA: dict[str, Callable[[], Criterion]] = {
    "l2": lambda: Magnitude(2),
    "l1": lambda: Magnitude(1),
    "random": Random,
    "bn_scale": BNScale,
    "taylor": Taylor,
    "hessian": Hessian,
    "fisher": Hessian,
    "zeroshot": ZeroShot,
}


def get_criterion(spec: str | Criterion) -> Criterion:
    """A criterion by name ("l2", "l1", "random", "bn_scale", "taylor", "hessian",
    "zeroshot") or a ``Criterion`` instance as is."""
    if isinstance(spec, Criterion):
        return spec
    try:
        return CRITERIA[spec]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown importance criterion {spec!r}; choose one of {sorted(CRITERIA)}, pass a "
            "fxprune.importance.Criterion, or pass scores={class id: tensor} computed yourself"
        ) from None

