"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def median_ms(fn: Callable[[Any], Any], x: Any, *, iters: int, warmup: int, device: str = "cpu") -> float:
    """Median milliseconds of ``fn(x)`` under ``torch.no_grad()`` after ``warmup`` untimed calls;
    on CUDA the device is synchronized around each timed call."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
