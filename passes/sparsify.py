"""Group sparse learning (DepGraph, Fang et al., CVPR 2023, Eq. 4-5) as a training-time pass.

requires: a model that ``fxprune.analyze`` can capture (the analysis runs on a deep copy).
writes:   gradient hooks (``Tensor.register_hook``) on the user's parameters that belong to a
          prunable group, nothing else; ``SparsifyHandle.remove()`` takes them all away.
ensures:  the model's weights, structure, modes and state_dict are never touched; each hooked
          parameter's gradient gains exactly the gradient of the group regularizer below.

For every prunable class (a group of channel indices removed together) and index ``k``::

    R = reg * sum_g sum_k gamma[g, k] * sum_{member slices s of g} ||s[k]||_2^2            (Eq. 4)
    gamma[g, k] = 2 ** (alpha * (I_max[g] - I[g, k]) / (I_max[g] - I_min[g]))              (Eq. 5)
    I[g, k] = sqrt(sum over the member slices of sum(s[k] ** 2))   (group L2 importance)

so the least important index of a group is pushed towards zero ``2**alpha`` times harder than
the most important one, and whole groups (every layer coupled to a channel at once) become
sparse together. ``gamma`` is a constant in the gradient (recomputed from the current weights,
not differentiated through), which is how the paper and Torch-Pruning use it.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import torch
from torch import fx, nn

from .axes import coords
from .dependency import Analysis
from .keys import ANALYSIS

__all__ = ["sparsify", "SparsifyHandle", "SCOPES"]

SCOPES = ("full", "conv", "none")

# One unit of importance: (class id, layer). layer is "" when the whole group counts together
# (scopes "full" and "conv") and the module path of the parameter under scope "none".
_Unit = tuple[int, str]


class _Param:
    """One hooked parameter: its dims in groups and, per dim, where each unit's gamma lands."""

    __slots__ = ("fqn", "param", "dims", "coef", "hook")

    def __init__(self, fqn: str, param: nn.Parameter):
        self.fqn = fqn
        self.param = param
        # dim -> [(unit, positions of the dim inside the class, the class index of each)]
        self.dims: dict[int, list[tuple[_Unit, torch.Tensor, torch.Tensor]]] = {}
        self.coef: torch.Tensor | None = None  # gamma broadcast to the parameter's shape (summed)
        self.hook: Any = None


def _check_number(name: str, value: Any, why: str) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}: {why}")
    return float(value)


class SparsifyHandle:
    """What ``sparsify`` returns: the live regularizer on a model.

    Attributes and methods:
        gamma: {class id: gamma tensor (float64; float32 on MPS)}, one entry per index of the
            class; under scope "none" a 2-D tensor, one row per layer of ``layers[c]``.
        importance: the same shapes, the group L2 importance ``I`` gamma was computed from.
        layers: {class id: module paths of the hooked members} (the rows under scope "none").
        params: FQNs of the hooked parameters.
        backward_passes: backward passes seen so far (one per ``backward()`` that reaches a
            hooked parameter, however many hooks fire in it).
        reg: the strength; may be reassigned during training (a schedule), checked >= 0.
        refresh(): recompute gamma from the current weights now.
        penalty(): the current value of ``reg * sum gamma * ||w[k]||^2`` (a float, for logging).
        remove(): remove every hook; the model is exactly as before ``sparsify``.
    Also a context manager: ``with fxprune.sparsify(model, x): train()`` removes on exit.
    """

    def __init__(
        self,
        model: nn.Module,
        analysis: Analysis,
        *,
        reg: float,
        alpha: float,
        scope: str,
        refresh_every: int,
        exact: bool,
    ):
        self._reg = reg
        self.alpha = alpha
        self.scope = scope
        self.refresh_every = refresh_every
        self.exact = exact
        self.backward_passes = 0
        self._lock = threading.RLock()
        self._last_task = -1
        self._in_pass = False
        self._removed = False
        self._sizes: dict[_Unit, int] = {}
        self._gamma: dict[_Unit, torch.Tensor] = {}
        self._importance: dict[_Unit, torch.Tensor] = {}
        self._on_device: dict[tuple[int, torch.device], torch.Tensor] = {}

        wanted = {c.id: c.size for c in analysis.prunable() if not exact or c.approx is None}
        by_object: dict[int, _Param] = {}
        for fqn, layouts in analysis.param_layouts.items():
            try:
                p = model.get_parameter(fqn)
            except AttributeError:
                continue  # a buffer (running statistics never count)
            if not p.requires_grad or (scope == "conv" and p.dim() < 2):
                continue
            rec = by_object.get(id(p))
            for d, lay in enumerate(layouts):
                for c, m in coords(lay):
                    if c not in wanted:
                        continue
                    unit = (c, fqn.rpartition(".")[0] if scope == "none" else "")
                    self._sizes[unit] = wanted[c]
                    ok = m >= 0
                    if rec is None:
                        rec = by_object[id(p)] = _Param(fqn, p)
                    rec.dims.setdefault(d, []).append((unit, ok.nonzero().flatten(), m[ok]))
        self._params = list(by_object.values())
        self.refresh()
        # whether a hook dict existed before us, to leave nothing behind on remove()
        self._had_hooks = {id(r.param): r.param._backward_hooks is not None for r in self._params}
        for rec in self._params:
            rec.hook = rec.param.register_hook(functools.partial(self._hook, rec))

    # -- public --------------------------------------------------------------------------------
    @property
    def reg(self) -> float:
        return self._reg

    @reg.setter
    def reg(self, value: float) -> None:
        self._reg = _check_number("reg", value, "it is the strength of the group regularizer")

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(r.fqn for r in self._params)

    @property
    def layers(self) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = {}
        if self.scope == "none":
            for c, layer in self._sizes:
                out.setdefault(c, []).append(layer)
        else:
            for rec in self._params:
                for entries in rec.dims.values():
                    for (c, _), _, _ in entries:
                        names = out.setdefault(c, [])
                        if rec.fqn.rpartition(".")[0] not in names:
                            names.append(rec.fqn.rpartition(".")[0])
        return {c: tuple(v) for c, v in out.items()}

    @property
    def gamma(self) -> dict[int, torch.Tensor]:
        return self._per_class(self._gamma)

    @property
    def importance(self) -> dict[int, torch.Tensor]:
        return self._per_class(self._importance)

    def refresh(self) -> None:
        """Recompute importance and gamma from the parameters' current values."""
        with self._lock, torch.no_grad():
            sq: dict[_Unit, torch.Tensor] = {}
            for rec in self._params:
                w = rec.param.detach()
                if w.dtype in (torch.float16, torch.bfloat16):
                    w = w.float()
                w2 = w.square()
                acc = torch.float32 if w.device.type == "mps" else torch.float64
                for d, entries in rec.dims.items():
                    other = [i for i in range(w.dim()) if i != d]
                    per_pos = w2.sum(dim=other, dtype=acc) if other else w2.to(acc)
                    for unit, pos, idx in entries:
                        s = sq.get(unit)
                        if s is None:
                            s = sq[unit] = torch.zeros(self._sizes[unit], dtype=acc, device=w.device)
                        vals = per_pos[self._on(pos, w.device)].to(s.device)
                        s.index_add_(0, self._on(idx, s.device), vals)
            self._importance = {u: s.sqrt() for u, s in sq.items()}
            self._gamma = {u: self._gamma_of(i) for u, i in self._importance.items()}
            for rec in self._params:
                w = rec.param
                coef: torch.Tensor | None = None
                for d, entries in rec.dims.items():
                    c_d = torch.zeros(w.shape[d], dtype=self._gamma[entries[0][0]].dtype, device=w.device)
                    for unit, pos, idx in entries:
                        g = self._gamma[unit]
                        c_d.index_add_(0, self._on(pos, w.device), g[self._on(idx, g.device)].to(w.device))
                    shape = [1] * w.dim()
                    shape[d] = -1
                    c_d = c_d.view(shape)
                    coef = c_d if coef is None else coef + c_d
                rec.coef = None if coef is None else coef.to(w.dtype)

    def penalty(self) -> float:
        """``reg * sum_g sum_k gamma[g, k] * ||w_g[k]||^2`` with the current gamma and weights."""
        with torch.no_grad():
            total = 0.0
            for rec in self._params:
                if rec.coef is not None:
                    w = rec.param.detach()
                    total += float((w.double().square() * rec.coef.to(w.device).double()).sum())
            return self._reg * total

    def remove(self) -> None:
        """Remove every hook this handle registered (idempotent)."""
        with self._lock:
            if self._removed:
                return
            for rec in self._params:
                if rec.hook is not None:
                    rec.hook.remove()
                    rec.hook = None
                p = rec.param
                if not self._had_hooks.get(id(p)) and p._backward_hooks is not None and not p._backward_hooks:
                    p._backward_hooks = None  # exactly as before: no empty hook dict left
                rec.coef = None
            self._on_device.clear()
            self._removed = True

    def __enter__(self) -> "SparsifyHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else f"{len(self._params)} params hooked"
        return (
            f"SparsifyHandle(reg={self._reg:g}, alpha={self.alpha:g}, scope={self.scope!r}, "
            f"refresh_every={self.refresh_every}, classes={len({c for c, _ in self._sizes})}, {state})"
        )

    # -- internals -----------------------------------------------------------------------------
    def _per_class(self, per_unit: dict[_Unit, torch.Tensor]) -> dict[int, torch.Tensor]:
        if self.scope != "none":
            return {c: t for (c, _), t in per_unit.items()}
        rows: dict[int, list[torch.Tensor]] = {}
        for (c, _), t in per_unit.items():
            rows.setdefault(c, []).append(t)
        return {c: torch.stack(v) for c, v in rows.items()}

    def _gamma_of(self, imp: torch.Tensor) -> torch.Tensor:
        if imp.numel() == 0:
            return imp.clone()
        hi, lo = imp.max(), imp.min()
        span = hi - lo
        # no python branch on the values: no device sync when the model is on an accelerator
        ratio = torch.where(span > 0, (hi - imp) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
        return torch.exp2(self.alpha * ratio)

    def _on(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        if t.device == device:
            return t
        key = (id(t), device)
        out = self._on_device.get(key)
        if out is None:
            out = self._on_device[key] = t.to(device)
        return out

    def _start_of_pass(self) -> None:
        """Count backward passes, once each, and refresh gamma at the first hook of a pass
        that is due, so every hook of one backward sees the same gamma."""
        task_id = getattr(torch._C, "_current_graph_task_id", None)
        tid = task_id() if task_id is not None else -1
        with self._lock:
            if tid >= 0:
                if tid <= self._last_task:  # the same pass (or a nested one finishing)
                    return
                self._last_task = tid
            else:  # no task ids in this torch: mark the pass, unmark at its end
                if self._in_pass:
                    return
                self._in_pass = True
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_pass)
            self.backward_passes += 1
            if self.refresh_every and (self.backward_passes - 1) % self.refresh_every == 0:
                self.refresh()

    def _end_of_pass(self) -> None:
        self._in_pass = False

    def _hook(self, rec: _Param, grad: torch.Tensor) -> torch.Tensor | None:
        self._start_of_pass()
        coef = rec.coef
        if coef is None or self._reg == 0 or grad is None:
            return None
        w = rec.param.detach()
        if coef.device != w.device or coef.dtype != w.dtype:
            coef = rec.coef = coef.to(device=w.device, dtype=w.dtype)
        return torch.addcmul(grad, w, coef, value=2.0 * self._reg)


def bare_module(model: Any) -> nn.Module:
    """The module whose parameters get the hooks: a DDP or DataParallel wrapper's ``.module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune.sparsify expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def check_options(reg: float, alpha: float, scope: str, refresh_every: int) -> tuple[float, float]:
    """Validate ``sparsify``'s options before any work; returns ``(reg, alpha)`` as floats."""
    reg = _check_number("reg", reg, "it is the strength of the group regularizer")
    alpha = _check_number("alpha", alpha, "gamma spans [1, 2**alpha] within each group")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {SCOPES}")
    if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 0:
        raise ValueError(
            f"refresh_every must be an int >= 0, got {refresh_every!r}: gamma is recomputed every "
            "refresh_every backward passes (0: only when you call handle.refresh())"
        )
    return reg, alpha


def sparsify(
    model: nn.Module,
    analysis: Any,
    reg: float = 1e-4,
    alpha: float = 4.0,
    scope: str = "full",
    refresh_every: int = 1,
    exact: bool = False,
) -> SparsifyHandle:
    """Group sparse learning (DepGraph Eq. 4-5): add the gradient of

        ``R = reg * sum_g sum_k gamma[g, k] * sum_{s in g} ||s[k]||_2^2``,
        ``gamma[g, k] = 2 ** (alpha * (I_max - I[g, k]) / (I_max - I_min))`` (1 where I_max == I_min),

    to every parameter slice of every prunable group ``g`` during training, where
    ``I[g, k] = sqrt(sum_{s in g} ||s[k]||^2)`` is index k's group L2 importance. The least
    important index of each group is pushed to zero ``2**alpha`` times harder than the most
    important one, across every layer coupled to it at once, so that ``fxprune.compile`` can
    then remove whole groups that were learned to be (nearly) zero.

    Source: Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, Eq. 4
    (group regularizer) and Eq. 5 (gamma). ``reg`` multiplies the penalty, so the gradient
    gains ``2 * reg * gamma * w``: code that adds ``reg' * gamma * w`` has ``reg' = 2 * reg``.

    Only gradients change: the hook on each member parameter returns
    ``grad + 2 * reg * coef * w``, where ``coef`` is gamma broadcast along the parameter's
    grouped dims (positions outside a class get 0; the out and in dims of a conv weight add).
    Weights, structure, modes and state_dict are never touched, so any optimizer works (with
    decoupled weight decay the two simply add).

    Args:
        model: the module being trained (not wrapped: see DDP below).
        analysis: the model's ``Analysis`` (or an analyzed GraphModule of it); the parameter
            FQNs it names must be the model's. ``fxprune.sparsify(model, example_inputs, ...)``
            captures and analyzes the model (a copy) and calls this.
        reg: regularization strength, >= 0 (``handle.reg`` may be changed later).
        alpha: gamma spans ``[1, 2**alpha]`` within each group; 0 gives plain group L2.
        scope: "full" (every member parameter: convs, linears, norm affines, biases),
            "conv" (only weights with >= 2 dims) or "none" (the paper's "no grouping"
            ablation: I and gamma per layer, each module's slices alone, not per group).
        refresh_every: recompute gamma from the current weights at the start of every
            ``refresh_every``-th backward pass (1: every pass; 0: only on ``handle.refresh()``).
        exact: only regularize groups whose pruning is exact (no approximate classes).

    Returns:
        a ``SparsifyHandle``: ``.gamma``, ``.refresh()``, ``.penalty()``, ``.remove()``.

    Distributed: hooks on parameters fire before DistributedDataParallel's allreduce, so the
    regularizer is added locally and then averaged, identically on every rank (the weights are
    identical). Call ``sparsify`` on the bare module, before wrapping it or on ``ddp.module``
    (a DDP or DataParallel wrapper passed here is unwrapped to ``.module``). Gradient
    accumulation adds the regularizer once per ``backward()`` (as adding it to each micro-batch
    loss would). With ``torch.amp.GradScaler`` it is added to the *scaled* gradient and then
    unscaled with it: set ``handle.reg = reg * scaler.get_scale()`` each step to compensate.

    Example:
        >>> model = torchvision.models.resnet18()
        >>> handle = fxprune.sparsify(model, torch.randn(1, 3, 224, 224), reg=1e-4)
        >>> for x, y in loader:                      # any optimizer, DDP or not
        ...     loss = F.cross_entropy(model(x), y)
        ...     opt.zero_grad(); loss.backward(); opt.step()
        >>> handle.remove()
        >>> small = fxprune.compile(model, 0.5, example_inputs=x)
    """
    model = bare_module(model)
    reg, alpha = check_options(reg, alpha, scope, refresh_every)
    if isinstance(analysis, fx.GraphModule):
        analysis = analysis.meta.get(ANALYSIS)
    if analysis is None or not hasattr(analysis, "param_layouts"):
        raise TypeError("fxprune.passes.sparsify: pass the Analysis (gm.meta['fxprune.analysis']) of the model; "
                        "fxprune.sparsify(model, example_inputs) captures and analyzes it for you")  # fmt: skip
    return SparsifyHandle(
        model, analysis, reg=reg, alpha=alpha, scope=scope, refresh_every=refresh_every, exact=bool(exact)
    )
