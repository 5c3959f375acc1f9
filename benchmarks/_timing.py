"""Timing shared by the benchmark scripts: a thin layer over ``fxprune.measure`` (wall clock
on the CPU; on CUDA each call starts from a synchronized device and is timed by CUDA events)."""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from fxprune.measure import time_calls


def median_ms(fn: Callable[[Any], Any], x: Any, *, iters: int, warmup: int, device: str = "cpu") -> float:
    """Median milliseconds of ``fn(x)`` under ``torch.no_grad()`` after ``warmup`` untimed calls
    (``fxprune.measure.time_calls``: CUDA events from a synchronized device on a GPU)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    with torch.no_grad():
        return statistics.median(time_calls(lambda: fn(x), device, iters=iters, warmup=warmup))
