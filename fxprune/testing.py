"""Helpers shared by fxprune's tests and benchmarks: random distinct weights, a snapshot of a
model's tensors, and one compile-and-prove check.

Not imported by ``import fxprune``; ``from fxprune.testing import randomize_, compile_checked``.

Example:
    >>> import torch, torchvision
    >>> from fxprune.testing import compile_checked, randomize_
    >>> model = randomize_(torchvision.models.resnet18().eval())
    >>> small, report, result = compile_checked(model, 0.5, torch.randn(1, 3, 64, 64), exact=True)
    >>> result.passed, report.params_after < report.params_before
    (True, True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from .api import compile
from .report import Report
from .verify import VerifyResult, verify

__all__ = ["randomize_", "snapshot", "unchanged", "compile_checked"]


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every vector parameter (norm affines, biases, layer scales) and every BatchNorm
    running statistic random values, so that a removed channel is not trivially zero in the
    masked original (default inits have beta = 0, mean = 0, and layer scales of 1e-6). Weight
    matrices initialised to all zeros (torchvision ViT's classifier head) get random values
    too, or every output would be the bias and any two pruned models would compare equal.

    In place; returns ``model``. The values depend only on ``seed`` and the model's structure.

    Example:
        >>> bn = randomize_(nn.BatchNorm2d(4))
        >>> bool((bn.bias != 0).all()), bool((bn.running_var != 1).all())
        (True, True)
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() == max(p.shape, default=1):
                p.copy_(torch.empty(p.shape).uniform_(0.5, 1.5, generator=g))
            elif p.numel() and not p.any():
                p.copy_(torch.empty(p.shape).normal_(0.0, 0.02, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None  # tracked together
                m.running_mean.copy_(torch.empty(m.running_mean.shape).uniform_(-0.5, 0.5, generator=g))
                m.running_var.copy_(torch.empty(m.running_var.shape).uniform_(0.5, 2.0, generator=g))
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every tensor of ``model.state_dict()``, for :func:`unchanged`."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    """Whether ``model`` has exactly the state_dict keys and values of ``snap``.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> snap = snapshot(m)
        >>> unchanged(m, snap)
        True
    """
    now = model.state_dict()
    return set(now) == set(snap) and all(torch.equal(now[k], v) for k, v in snap.items())


def compile_checked(
    model: nn.Module, ratio: float, example_inputs: Any, *, tol: float = 1e-4, **options: Any
) -> tuple[fx.GraphModule, Report, VerifyResult]:
    """``fxprune.compile(model, ratio, example_inputs=..., **options)``, asserting what must hold
    for any model: the pruned graph lints, masked-equals-pruned passes within ``tol``, and the
    original's state_dict is untouched. Returns (pruned module, report, verify result)."""
    before = snapshot(model)
    out: Any = compile(model, ratio, example_inputs=example_inputs, **options)
    out.graph.lint()
    report = out.meta["fxprune.report"]
    res = verify(model, out, example_inputs)
    assert res.passed and res.max_rel_err <= tol, f"{res}\n{report.details()}\n{out.code}"
    assert unchanged(model, before), "the original model was modified"
    return out, report, res
