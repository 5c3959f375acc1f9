"""Capture: a model becomes an ``fx.GraphModule`` with shapes propagated, the model untouched."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import fx, nn

from .errors import CaptureError
from .passes.dependency import propagate
from .passes.keys import CAPTURE

__all__ = ["capture", "as_inputs"]


def as_inputs(example_inputs: Any) -> tuple:
    """A tensor or a tuple/list of positional arguments -> a tuple of arguments."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple of positional arguments, got {type(example_inputs).__name__}"
    )


def _describe(inputs: tuple) -> str:
    return ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" if isinstance(a, torch.Tensor) else type(a).__name__
        for a in inputs
    )


def capture(model: nn.Module, example_inputs: Any) -> fx.GraphModule:
    """Trace a deep copy of ``model`` with ``torch.fx.symbolic_trace`` (in eval mode, so
    python-level ``if self.training`` branches take their inference path; leaf modules keep
    the model's train/eval flags) and propagate shapes from ``example_inputs``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        CaptureError: tracing failed, or the example inputs do not run the model.

    Example:
        >>> gm = capture(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> gm.meta["fxprune.capture"]
        'symbolic_trace'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune expects a torch.nn.Module, got {type(model).__name__}")
    inputs = as_inputs(example_inputs)
    try:
        work = copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001 - any failure to copy is the user's to see
        raise CaptureError(
            f"fxprune.capture: could not deep-copy {type(model).__name__} ({type(e).__name__}: {e}); "
            "fxprune never edits your model in place, so it needs a copy"
        ) from e
    modes = {name: m.training for name, m in work.named_modules()}
    work.eval()
    try:
        gm = fx.symbolic_trace(work)
    except Exception as e:  # noqa: BLE001
        raise CaptureError(
            f"fxprune.capture: torch.fx.symbolic_trace could not trace {type(model).__name__}: "
            f"{type(e).__name__}: {e}\nTry: make control flow independent of tensor values, wrap the "
            "offending function with torch.fx.wrap, or trace the model yourself and pass the GraphModule."
        ) from e
    for name, m in gm.named_modules():
        if name in modes:
            m.training = modes[name]
    gm.meta[CAPTURE] = "symbolic_trace"
    try:
        propagate(gm, inputs)
    except Exception as e:  # noqa: BLE001
        raise CaptureError(
            f"fxprune.capture: the example inputs ({_describe(inputs)}) do not run {type(model).__name__}: "
            f"{type(e).__name__}: {e}\nPass example_inputs with the shapes and dtypes the model's forward expects."
        ) from e
    return gm
