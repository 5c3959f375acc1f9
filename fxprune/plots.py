"""Plots of an analysis and of a pruning, as matplotlib figures (``pip install fxprune[plot]``).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
works headless); in Jupyter it renders inline (run ``%matplotlib inline`` once), elsewhere
call ``fig.savefig("out.png")``. Pass ``ax=`` to draw into an existing axes instead.

| function | shows |
|---|---|
| ``grouping_matrix`` | which layers share a group (DepGraph, Fig. 6) |
| ``dependency_graph`` | layers and the groups that couple them, as a graph |
| ``sparsity_histogram`` | group L2 norms of one or more models (DepGraph, Fig. 5) |
| ``layer_widths`` | output width of every conv/linear layer, before and after |
| ``latency_vs_macs`` | measured latency against MACs for several models |

Example:
    >>> fig = fxprune.plots.grouping_matrix(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    >>> fig.savefig("resnet18-groups.png")
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import fx, nn

from .passes.dependency import Analysis, ClassInfo
from .passes.keys import ANALYSIS

__all__ = [
    "grouping_matrix", "grouping_matrix_data", "dependency_graph", "group_norms", "sparsity_histogram",
    "layer_widths", "layer_width_data", "latency_vs_macs", "measure",
]  # fmt: skip


def _figure(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fxprune.plots needs matplotlib: pip install 'fxprune[plot]' (or matplotlib)") from e
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def _analyzed(model: nn.Module, example_inputs: Any) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule) and ANALYSIS in model.meta:
        return model
    if example_inputs is None:
        raise ValueError("pass example_inputs= (or a GraphModule returned by fxprune.analyze)")
    from .api import analyze

    return analyze(model, example_inputs)


def _channel_classes(analysis: Analysis, prunable_only: bool) -> list[ClassInfo]:
    """Channel-like classes (they occur in data) with parameters: DepGraph's groups."""
    return [c for c in analysis.classes if c.params and c.data and c.size > 1 and (c.prunable or not prunable_only)]


def _param_order(gm: fx.GraphModule) -> list[str]:
    """Parameter FQNs in the order the graph first uses them."""
    order: dict[str, None] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            for name, _ in gm.get_submodule(n.target).named_parameters():
                order.setdefault(f"{n.target}.{name}", None)
        elif n.op == "get_attr":
            order.setdefault(str(n.target), None)
    for name, _ in gm.named_parameters():
        order.setdefault(name, None)
    params = dict(gm.named_parameters(remove_duplicate=False))
    return [k for k in order if k in params]


def grouping_matrix_data(
    model: nn.Module, example_inputs: Any = None, *, level: str = "layer", prunable_only: bool = False
) -> tuple[list[str], np.ndarray]:
    """The grouping matrix: ``names`` (layers, i.e. modules holding parameters, or parameter
    FQNs with ``level="param"``) in graph order, and a symmetric 0/1 matrix ``M`` with
    ``M[i, j] = 1`` when a channel group has members in both ``names[i]`` and ``names[j]``
    (they must be pruned together). Groups are the channel classes that hold parameters;
    ``prunable_only`` drops the pinned ones (graph inputs and outputs, unsupported ops).

    Example:
        >>> names, m = grouping_matrix_data(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> m.shape, int(m[names.index("layer1.0.conv2"), names.index("layer1.1.conv2")])
        ((41, 41), 1)
    """
    if level not in ("layer", "param"):
        raise ValueError(f"level must be 'layer' or 'param', got {level!r}")
    gm = _analyzed(model, example_inputs)
    key = (lambda fqn: fqn.rpartition(".")[0] or fqn) if level == "layer" else (lambda fqn: fqn)
    params = _param_order(gm)
    names = list(dict.fromkeys(key(p) for p in params))
    index = {n: i for i, n in enumerate(names)}
    known = set(params)
    m = np.zeros((len(names), len(names)), dtype=np.int8)
    for c in _channel_classes(gm.meta[ANALYSIS], prunable_only):
        rows = sorted({index[key(p)] for p, _ in c.params if p in known})
        for i in rows:
            m[i, rows] = 1
    return names, m


def grouping_matrix(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    level: str = "layer",
    prunable_only: bool = False,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """Draw ``grouping_matrix_data`` (DepGraph, Fig. 6): a dark cell (i, j) means layers i and j
    share a group. Blocks on the diagonal are layers chained through one channel dim;
    off-diagonal cells are long-range couplings (residual adds, concatenations).

    Example:
        >>> grouping_matrix(torchvision.models.densenet121(), torch.randn(1, 3, 64, 64)).savefig("g.png")
    """
    names, m = grouping_matrix_data(model, example_inputs, level=level, prunable_only=prunable_only)
    fig, ax = _figure(ax, (6, 6))
    ax.imshow(m, cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    n = len(names)
    step = max(1, n // 24)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=6)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=6)
    label = title or type(model).__name__
    ax.set_title(f"{label}: {n} {level}s, {int(m.sum() - np.trace(m)) // 2} coupled pairs", fontsize=9)
    return fig


def dependency_graph(
    model: nn.Module, example_inputs: Any = None, *, prunable_only: bool = False, ax: Any = None
) -> Any:
    """The dependency graph of a (small) model as a bipartite picture: layers (modules
    holding parameters) on the bottom row in graph order, channel groups above them, an edge
    where a group has a member in a layer (solid: the layer's output dim 0; dashed: another
    dim, usually its input channels). Groups are green when exact and prunable, orange when
    approximate, grey when pinned; each is labelled ``G<id>·<size>``.

    Example:
        >>> dependency_graph(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), torch.randn(1, 3, 8, 8))
    """
    gm = _analyzed(model, example_inputs)
    params = _param_order(gm)
    known = set(params)
    layers = list(dict.fromkeys(p.rpartition(".")[0] or p for p in params))
    x_of = {n: float(i) for i, n in enumerate(layers)}
    classes = _channel_classes(gm.meta[ANALYSIS], prunable_only)
    fig, ax = _figure(ax, (max(6.0, 0.5 * len(layers)), 4.5))
    placed = []
    for c in classes:
        members = [(p.rpartition(".")[0] or p, d) for p, d in c.params if p in known]
        if members:
            placed.append((float(np.mean([x_of[lay] for lay, _ in members])), c, members))
    placed.sort(key=lambda t: t[0])
    # each group sits above the mean of its layers, nudged right so no two overlap
    gap = min(1.0, max(len(layers) - 1, 1) / max(len(placed), 1))
    group_x: list[float] = []
    for k, (gx, c, members) in enumerate(placed):
        gx = max(gx, group_x[-1] + gap) if group_x else gx
        group_x.append(gx)
        color = "tab:green" if c.prunable and c.approx is None else "tab:orange" if c.prunable else "0.6"
        for lay, d in dict.fromkeys(members):
            ax.plot([x_of[lay], gx], [0, 1], color=color, lw=0.8, ls="-" if d == 0 else "--", alpha=0.7, zorder=1)
        ax.scatter([gx], [1], s=220, color=color, edgecolor="k", zorder=3)
        ax.annotate(f"G{c.id}·{c.size}", (gx, 1), xytext=(0, 10 + 10 * (k % 2)), textcoords="offset points",
                    ha="center", fontsize=7)  # fmt: skip
    ax.scatter(list(x_of.values()), [0] * len(layers), s=160, marker="s", color="tab:blue", edgecolor="k", zorder=3)
    ax.set_xticks(list(x_of.values()), layers, rotation=60, ha="right", fontsize=7)
    ax.set_yticks([0, 1], ["layers", "groups"])
    ax.set_ylim(-0.3, 1.45)
    ax.set_title(f"{type(model).__name__}: {len(layers)} layers, {len(group_x)} channel groups", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def group_norms(model: nn.Module, example_inputs: Any = None, *, scope: str = "full") -> dict[int, torch.Tensor]:
    """Per prunable group, per index: the L2 norm over every member slice of the group,
    ``sqrt(sum over member slices s of ||s[k]||^2)`` (DepGraph's group importance, from
    ``fxprune.importance.slice_stats`` on ``model``'s current parameters). ``scope="conv"``
    counts only conv/linear weights.

    Example:
        >>> norms = group_norms(model, x)
        >>> sorted(norms)[:3]
        [0, 4, 7]
    """
    from .importance import slice_stats

    gm = _analyzed(model, example_inputs)
    tensors = dict(model.named_parameters()) if not isinstance(model, fx.GraphModule) else None
    stats = slice_stats(gm, tensors, p=2, scope=scope)
    return {c: torch.stack([v for _, _, v in members]).sum(0).sqrt() for c, members in stats.items() if members}


def sparsity_histogram(
    models: Mapping[str, nn.Module | Mapping[int, torch.Tensor]],
    example_inputs: Any = None,
    *,
    normalize: bool = True,
    bins: int = 40,
    log: bool = True,
    ax: Any = None,
) -> Any:
    """Histogram of group L2 norms (DepGraph, Fig. 5), one overlaid series per entry of
    ``models`` (a module, measured with ``group_norms``, or precomputed ``{group: norms}``).
    ``normalize`` divides each group's norms by that group's largest, so groups of different
    scale share one axis; sparse learning shows up as mass piling up near 0.

    Example:
        >>> sparsity_histogram({"plain": a, "group sparse": b}, x).savefig("hist.png")
    """
    if not models:
        raise ValueError("sparsity_histogram: pass at least one {label: model or norms}")
    fig, ax = _figure(ax, (6, 3.5))
    series = {}
    for label, m in models.items():
        norms = group_norms(m, example_inputs) if isinstance(m, nn.Module) else m
        vals = [(v / v.max() if normalize and float(v.max()) > 0 else v).double() for v in norms.values()]
        series[label] = torch.cat(vals).numpy() if vals else np.zeros(0)
    hi = max(float(v.max()) if len(v) else 0.0 for v in series.values()) or 1.0
    edges = np.linspace(0.0, hi, bins + 1)
    for label, v in series.items():
        ax.hist(v, bins=edges, alpha=0.55, label=f"{label} ({len(v)} indices)", log=log)
    ax.set_xlabel("group L2 norm" + (" / largest in its group" if normalize else ""))
    ax.set_ylabel("indices")
    ax.legend(fontsize=8)
    return fig


def layer_width_data(before: nn.Module, after: nn.Module) -> list[tuple[str, int, int]]:
    """(layer, output width before, after) for every weight with >= 2 dims (conv, linear,
    attention projections) in ``before``, in registration order; the width is dim 0."""
    after_params = dict(after.named_parameters(remove_duplicate=False))
    rows = []
    for name, p in before.named_parameters():
        if p.dim() >= 2 and name.endswith("weight") and name in after_params:
            rows.append((name.removesuffix(".weight"), int(p.shape[0]), int(after_params[name].shape[0])))
    return rows


def layer_widths(before: nn.Module, after: nn.Module, *, ax: Any = None, title: str | None = None) -> Any:
    """Bars of every conv/linear layer's output width, before (grey) and after (blue).

    Example:
        >>> layer_widths(model, fxprune.compile(model, 0.5, example_inputs=x)).savefig("widths.png")
    """
    rows = layer_width_data(before, after)
    if not rows:
        raise ValueError("layer_widths: no weight with two or more dims in common between the two models")
    fig, ax = _figure(ax, (max(6.0, 0.12 * len(rows)), 3.5))
    x = np.arange(len(rows))
    ax.bar(x, [r[1] for r in rows], color="0.8", label="before", width=0.9)
    ax.bar(x, [r[2] for r in rows], color="tab:blue", label="after", width=0.6)
    step = max(1, len(rows) // 30)
    ax.set_xticks(x[::step], [r[0] for r in rows][::step], rotation=90, fontsize=6)
    ax.set_ylabel("output channels / features")
    kept = sum(r[2] for r in rows) / max(1, sum(r[1] for r in rows))
    ax.set_title(title or f"{type(before).__name__}: {len(rows)} layers, {kept:.0%} of the width kept", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def measure(models: Mapping[str, nn.Module], example_inputs: Any, **latency_kw: Any) -> list[tuple[str, int, float]]:
    """(label, MACs, median latency in ms) for each model, with ``fxprune.count_macs`` and
    ``fxprune.latency_ms`` (eval mode, no grad, the current torch thread count)."""
    from .capture import as_inputs
    from .measure import count_macs, latency_ms

    inputs = as_inputs(example_inputs)
    return [(label, count_macs(m, inputs), latency_ms(m, inputs, **latency_kw)) for label, m in models.items()]


def latency_vs_macs(
    points: Mapping[str, nn.Module] | Sequence[tuple[str, float, float]],
    example_inputs: Any = None,
    *,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Latency against MACs: ``points`` are measured rows ``(label, MACs, ms)`` (see
    ``measure``), or ``{label: module}`` to measure here on ``example_inputs``. The points are
    joined in the order given (e.g. increasing pruning ratio).

    Example:
        >>> latency_vs_macs({"base": model, "0.5": small}, x).savefig("lat.png")
    """
    if isinstance(points, Mapping):
        if example_inputs is None:
            raise ValueError("latency_vs_macs: pass example_inputs= to measure the modules")
        rows = measure(points, example_inputs)
    else:
        rows = [(str(a), float(b), float(c)) for a, b, c in points]
    if not rows:
        raise ValueError("latency_vs_macs: no points")
    fig, ax = _figure(ax, (5, 3.5))
    macs = [r[1] / 1e6 for r in rows]
    ms = [r[2] for r in rows]
    ax.plot(macs, ms, "o-", color="tab:blue")
    for (label, _, _), mx, t in zip(rows, macs, ms):
        ax.annotate(label, (mx, t), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("latency (ms)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_title(title or "measured latency vs MACs", fontsize=9)
    return fig
