"""Timing shared by fxprune and its benchmarks: wall clock on the CPU, CUDA events on a GPU.

On a GPU a forward pass only queues kernels: the Python call returns long before the work is
done, so a wall-clock timer around it measures kernel launches. Here every timed call on CUDA
starts from a synchronized device and is timed by two CUDA events recorded on the current
stream around it (from the call's first kernel to the end of its last, launch gaps
included); the events are read after one final synchronize. On the CPU the timer is
``time.perf_counter`` around each call.

A leaf module: it imports nothing else of fxprune (only the passes' op records, for their
FLOP formulas), so the library and the benchmark scripts share one timer and one MAC count.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .passes import ops as _ops  # noqa: F401 - every record, with its FLOP formulas
from .passes.registry import install_flop_formulas

__all__ = [
    "device_of", "synchronize", "time_calls", "interleaved", "models_ms", "spread", "eval_no_grad", "train_modes", "restore_modes",
    "count_params", "count_macs", "latency_ms",
]  # fmt: skip


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def device_of(*objs: Any) -> torch.device:
    """The device of the first tensor among ``objs`` (tensors, nested tuples, lists and dicts
    of them, or modules: their first parameter, else buffer); the CPU when there is none."""
    for obj in objs:
        if isinstance(obj, nn.Module):
            t = next(iter(obj.parameters()), None)
            if t is None:
                t = next(iter(obj.buffers()), None)
        else:
            t = _first_tensor(obj)
        if t is not None:
            return t.device
    return torch.device("cpu")


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device | str, *, iters: int, warmup: int = 0) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``fn()``, after ``warmup`` untimed calls.

    CPU (and any device without events): ``time.perf_counter`` around each call. CUDA: the
    device is synchronized before each call and CUDA events recorded around it time it."""
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    with torch.cuda.device(device):
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def interleaved(
    fns: Sequence[Callable[[], Any]],
    device: torch.device | str,
    *,
    rounds: int,
    iters: int,
    warmup: int = 1,
    round_warmup: int = 0,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> list[list[float]]:
    """Time several callables in turns: ``warmup`` untimed calls of each first, then
    ``rounds`` rounds in which each one in turn gets ``round_warmup`` untimed and ``iters``
    timed calls, reduced to one figure per round (``reduce``: the median, or ``min``).
    Drift in the machine's speed (other load, clocks) hits all of them alike. Returns, per
    callable, its list of per-round figures in milliseconds."""
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    for fn in fns:
        for _ in range(warmup):
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, res in zip(fns, out):
            res.append(reduce(time_calls(fn, device, iters=iters, warmup=round_warmup)))
    return out


def models_ms(
    models: Sequence[Callable[..., Any]],
    inputs: tuple,
    *,
    rounds: int,
    iters: int,
    warmup: int = 1,
    round_warmup: int = 0,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> list[list[float]]:
    """``interleaved`` for models called on ``inputs`` (positional arguments), in eval mode
    under ``torch.no_grad()`` (each module's flags restored afterwards), on the device of the
    first input tensor, else of the first model's parameters."""
    device = device_of(inputs, *models)
    with eval_no_grad(*models):
        fns = [(lambda m=m: m(*inputs)) for m in models]
        return interleaved(fns, device, rounds=rounds, iters=iters, warmup=warmup, round_warmup=round_warmup,
                           reduce=reduce)  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of ``values``, and the relative half-range around the median."""
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"median": med, "min": lo, "max": hi, "rel": (hi - lo) / 2 / med if med else float("nan")}


def train_modes(m: nn.Module) -> dict[str, bool]:
    """Every submodule's train/eval flag, by name."""
    return {name: sub.training for name, sub in m.named_modules()}


def restore_modes(m: nn.Module, modes: dict[str, bool]) -> None:
    """Give every submodule back its own train/eval flag (``m.train(was)`` would give them all
    the root's)."""
    for name, sub in m.named_modules():
        if name in modes:
            sub.training = modes[name]


@contextmanager
def eval_no_grad(*modules: Any) -> Iterator[None]:
    """Eval mode (each module's own flags restored afterwards) and ``torch.no_grad()``;
    arguments that are not modules (a compiled function) are left alone."""
    mods = [m for m in modules if isinstance(m, nn.Module)]
    was = [train_modes(m) for m in mods]
    try:
        for m in mods:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, modes in zip(mods, was):
            restore_modes(m, modes)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_macs(m: nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of one forward pass, from torch.utils.flop_counter (FLOPs / 2).

    The op records' FLOP formulas (ATen ops the counter does not know: CPU attention and LSTM
    kernels, MultiheadAttention's fast path) go into torch's flop registry here, on the first
    count, not when fxprune is imported."""
    install_flop_formulas()
    modes = train_modes(m)
    # parameters stop requiring grad while counting: under no_grad a view of a parameter
    # (x = p.expand(...)) still "requires grad" without a grad_fn, which the flop counter's
    # module tracker rejects (timm's attention-pool latents); restored afterwards
    grads = [(p, p.requires_grad) for p in m.parameters()]
    m.eval()
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            m(*inputs)
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        restore_modes(m, modes)
    return int(counter.get_total_flops() // 2)


def latency_ms(m: nn.Module, inputs: tuple, *, warmup: int = 3, iters: int = 10) -> float:
    """Median milliseconds of one forward pass (eval mode, no grad), after ``warmup`` untimed
    passes. On the CPU, wall clock around each pass; on a GPU (the device of the first input
    tensor, else of the model's parameters) the device is synchronized before each pass and
    CUDA events time it (``fxprune.measure.time_calls``), so the kernels' work is measured,
    not their launches. To compare models, time them in interleaved rounds
    (``fxprune.measure.models_ms``)."""
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"latency_ms: iters must be a positive int, got {iters!r}")
    device = device_of(inputs, m)
    modes = train_modes(m)
    m.eval()
    try:
        with torch.no_grad():
            times = time_calls(lambda: m(*inputs), device, iters=iters, warmup=warmup)
    finally:
        restore_modes(m, modes)
    times.sort()
    return times[len(times) // 2]
