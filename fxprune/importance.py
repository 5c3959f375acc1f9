"""Importance criteria behind one interface: ``Scores`` maps a class id to one score per index.

A class's score for index k aggregates every parameter slice that index k touches, across
every layer of the group (DepGraph's full grouping), so a channel removed from a conv, its
BatchNorm and the next conv's input is judged by all three at once.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import fx

from .passes.axes import coords
from .passes.dependency import Analysis
from .passes.keys import ANALYSIS

__all__ = ["Scores", "magnitude", "CRITERIA", "get_criterion"]

Scores = Mapping[int, torch.Tensor]


def magnitude(gm: fx.GraphModule, p: int = 2, *, normalize: str = "mean") -> dict[int, torch.Tensor]:
    """Group Lp magnitude: ``I_k = (sum over member slices of |w|^p)^(1/p)``, over every
    parameter (not buffer) slice the index touches, normalized per group.

    Example:
        >>> scores = magnitude(analyze(gm, (x,)), p=2)
        >>> scores[0].shape
        torch.Size([16])
    """
    analysis: Analysis = gm.meta[ANALYSIS]
    wanted = {c.id: c for c in analysis.prunable()}
    acc = {cid: torch.zeros(c.size, dtype=torch.float64) for cid, c in wanted.items()}
    params = dict(gm.named_parameters())
    for fqn, layouts in analysis.param_layouts.items():
        t = params.get(fqn)
        if t is None:
            continue  # buffers carry layouts too, but do not vote
        dims = [d for d, lay in enumerate(layouts) if any(c in acc for c in lay.classes())]
        if not dims:
            continue
        w = t.detach().abs().pow(p) if p != 1 else t.detach().abs()
        for d in dims:
            other = [i for i in range(w.dim()) if i != d]
            per_index = (w.sum(dim=other, dtype=torch.float64) if other else w.double())
            for c, m in coords(layouts[d]):
                if c not in acc:
                    continue
                ok = m >= 0
                acc[c].index_add_(0, m[ok], per_index[ok])
    out = {}
    for c, v in acc.items():
        score = v.pow(1.0 / p)
        if normalize == "mean" and score.mean() > 0:
            score = score / score.mean()
        elif normalize == "max" and score.max() > 0:
            score = score / score.max()
        out[c] = score.float()
    return out


def _l1(gm: fx.GraphModule) -> dict[int, torch.Tensor]:
    return magnitude(gm, p=1)


def _l2(gm: fx.GraphModule) -> dict[int, torch.Tensor]:
    return magnitude(gm, p=2)


CRITERIA: dict[str, Callable[[fx.GraphModule], dict[int, torch.Tensor]]] = {"l1": _l1, "l2": _l2}


def get_criterion(name: str) -> Callable[[fx.GraphModule], dict[int, torch.Tensor]]:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"unknown importance criterion {name!r}; choose one of {sorted(CRITERIA)} "
            "or pass scores={class id: tensor} computed yourself"
        ) from None
