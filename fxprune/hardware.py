"""Hardware-aware widths: ``round_to="auto"``.

A pruned width the hardware runs badly can make a model slower than the unpruned one (a
5% cut that leaves 1,000 channels where 1,024 ran on full vector or tensor-core tiles). With
``round_to="auto"`` fxprune measures instead of guessing, on the device and dtype the model's
parameters live on:

1. **Step.** A 1x1 convolution is timed at every output width of a range; the step is the
   largest of 1, 2, 4, ..., 32 such that the latency rises mostly just after its multiples
   (``_step_from``): the hardware's tile. Kept counts are then rounded to the
   nearest multiple of the step (per physical channel: a head of 64 dims is already a
   multiple).
2. **Per group.** Each group's convolutions and linear layers (``nn.Conv1d/2d/3d`` and
   ``nn.Linear`` with their example input shapes) are timed at the full width and at the
   rounded width. When the rounded width is not measurably faster (2%), one step narrower is
   tried; when neither is faster the group stays whole: removing its channels would not buy
   time on this device.

3. **End to end.** The pruned model and the original are timed in turns (7 paired rounds)
   on the example inputs. Unless the pruned one is faster by the median of the rounds *and*
   in at least ``WINS`` (80%) of the pairs, nothing is removed: ``compile`` returns the model
   unpruned, and the report says so with both timings.

Measurements are cached per device (CPU model and thread count, or GPU name; torch version;
dtype; memory format: a model whose 4-d conv weights are channels_last is measured with
channels_last layers and inputs) in ``$FXPRUNE_CACHE_DIR/latency.json`` (default ``~/.cache/fxprune``), so a second
compile on the same machine measures nothing. Timings are the minimum over repeats, which
is robust against other work on the machine; on a GPU each call is timed by CUDA events
from a synchronized device (``fxprune.measure``). The chosen step and the groups kept whole are
in ``plan.meta["round_to"]`` and the report.

Layers this module cannot rebuild on its own (functional convolutions in exported graphs,
grouped but not depthwise convolutions) are not timed; their groups are only rounded. Only
CPU and CUDA devices are timed; on others (MPS, XPU, meta) ``round_to="auto"`` leaves the
counts as the ratio gives them.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn

from .measure import models_ms, time_calls
from .passes.keys import SPEC

__all__ = ["WidthChooser", "device_key", "measure_step", "cache_path", "end_to_end", "memory_format_of"]

SLOWER = 0.0  # end to end: a pruned model any slower than the original (median of rounds) is given up
#: end to end, the pruned model must also be the faster one in this share of the paired rounds:
#: a model no faster than the original wins 6 of 7 by chance 6% of the time. The median alone
#: accepted a batch-32 mobilenet_v2 at 1.05x fewer MACs that then measured 0.96x (within the
#: CPU VM's noise, but no evidence of a gain either; docs/performance.md)
WINS = 0.8

_STEPS = (1, 2, 4, 8, 16, 32)
_JITTER = 0.03
_AT_STEPS = 0.75  # share of the latency increases that must fall just after multiples of a step
_FASTER = 0.02  # a narrower group must be at least this much faster to be worth it


def cache_path() -> Path:
    root = os.environ.get("FXPRUNE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fxprune")
    return Path(root) / "latency.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measurable(device: torch.device) -> bool:
    """Whether latencies on ``device`` are measured (CPU, CUDA)."""
    return device.type in ("cpu", "cuda")


def memory_format_of(m: nn.Module) -> torch.memory_format:
    """``torch.channels_last`` when the model's 4-d weights (2-d convolutions) are stored
    channels_last, else ``torch.contiguous_format``. The first weight whose layout tells the
    two apart decides (a weight of 1x1 kernels is both, and decides nothing)."""
    for p in m.parameters():
        if p.dim() == 4:
            cl, plain = p.is_contiguous(memory_format=torch.channels_last), p.is_contiguous()
            if cl != plain:
                return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


def _format_name(memory_format: torch.memory_format) -> str:
    return "channels_last" if memory_format == torch.channels_last else "contiguous"


def device_key(
    device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format = torch.contiguous_format
) -> str:
    """What a latency measurement is valid for: the device model, threads, torch, dtype and
    memory format."""
    if device.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        where = f"{device.type}:{_cpu_name()}:{torch.get_num_threads()}threads"
    dt = str(dtype).replace("torch.", "")
    return f"{where}|torch {torch.__version__}|{dt}|{_format_name(memory_format)}"


def _load(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs re-measuring


def _save(path: Path, data: dict[str, dict[str, float]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent compiles never read half a file
    except OSError:
        pass  # a read-only home: measurements are simply not kept


def _time_ms(fn: Callable[[], Any], device: torch.device, *, repeat: int = 15, warmup: int = 3) -> float:
    """Minimum milliseconds of ``fn()`` under ``torch.no_grad()`` (wall clock on the CPU, CUDA
    events from a synchronized device on a GPU: ``fxprune.measure.time_calls``)."""
    with torch.no_grad():
        return min(time_calls(fn, device, iters=repeat, warmup=warmup))


def _layer_ms(layer: nn.Module, x: torch.Tensor, device: torch.device, repeat: int = 15) -> float:
    """Minimum milliseconds of one call of ``layer`` on ``x`` (tests substitute a cost model)."""
    return _time_ms(lambda: layer(x), device, repeat=repeat, warmup=max(2, repeat // 5))


def _step_from(lat: dict[int, float]) -> int:
    """The hardware's channel step from latencies per width: the largest step (up to 32)
    after whose multiples the latency rises, again and again: a rise of more than 3% (less
    is jitter, or the smooth growth of a device without tiles) just after at least 60% of its
    multiples in the range, at least twice, carrying 75% of all such rises. On a device with
    tiles of 8 channels, time jumps going from 200 to 201 channels and stays flat up to 208:
    the step is 8. Where multiples of 16 run faster than their neighbours, the jumps follow
    them (16). One noisy spike repeats nowhere, so it sets no step; without tiles: 1."""
    widths = sorted(lat)
    rise = {w: lat[w + 1] - lat[w] for w in widths if w + 1 in lat and lat[w + 1] > lat[w] * (1 + _JITTER)}
    total = sum(rise.values())
    for st in sorted(_STEPS[1:], reverse=True):
        mult = [w for w in widths if w % st == 0 and w + 1 in lat]
        hits = [w for w in mult if w in rise]
        if len(hits) >= 2 and len(hits) >= 0.6 * len(mult) and sum(rise[w] for w in hits) >= _AT_STEPS * total:
            return st
    return 1


def measure_step(
    device: torch.device,
    dtype: torch.dtype,
    cache: dict[str, float] | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> int:
    """The hardware's channel step (see the module docstring), measured on a 1x1 conv
    ``in=256`` over 56x56 (batch 1 on CPU, 32 on CUDA) at output widths 129..256, with the
    conv and its input in ``memory_format``."""
    if cache is not None and "step" in cache:
        return int(cache["step"])
    batch = 32 if device.type == "cuda" else 1
    x = torch.randn(batch, 256, 56, 56, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    widths = range(129, 257)
    lat = {}
    for w in widths:
        conv = nn.Conv2d(256, w, 1, bias=False).to(device=device, dtype=dtype, memory_format=memory_format)
        lat[w] = _layer_ms(conv, x, device, repeat=9)
    step = _step_from(lat)
    if cache is not None:
        cache["step"] = step
    return step


class _Probe:
    """One parameterized layer of a group: rebuilt at another width and timed."""

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...], dim: int, size: int):
        self.module, self.in_shape, self.dim, self.size = module, in_shape, dim, size

    def key(self, n: int) -> str:
        m = self.module
        if isinstance(m, nn.Linear):
            return f"linear|x{list(self.in_shape)}|w{[m.out_features, m.in_features]}|d{self.dim}={n}|b{m.bias is not None}"
        return (f"{type(m).__name__}|x{list(self.in_shape)}|w{list(m.weight.shape)}|d{self.dim}={n}|k{m.kernel_size}"
                f"|s{m.stride}|p{m.padding}|dl{m.dilation}|g{m.groups}|b{m.bias is not None}")  # fmt: skip

    def build(self, n: int, device: torch.device, dtype: torch.dtype,
              memory_format: torch.memory_format = torch.contiguous_format) -> tuple[nn.Module, torch.Tensor]:  # fmt: skip
        """The layer at width ``n`` and a random input for it; a 2-d convolution and its
        input in ``memory_format`` (channels_last where the model is)."""
        m = self.module
        shape = list(self.in_shape)
        if isinstance(m, nn.Linear):
            out_f, in_f = m.out_features, m.in_features
            if self.dim == 0:
                out_f = n
            else:
                in_f = shape[-1] = n
            layer: nn.Module = nn.Linear(in_f, out_f, bias=m.bias is not None)
        else:
            base = next(c for c in _CONVS if isinstance(m, c))  # the library class, not a subclass
            out_c, in_c, groups = m.out_channels, m.in_channels, m.groups
            if groups > 1:  # depthwise: in, out and groups move together
                out_c = in_c = groups = shape[1] = n
            elif self.dim == 0:
                out_c = n
            else:
                in_c = shape[1] = n
            layer = base(in_c, out_c, m.kernel_size, stride=m.stride, padding=m.padding,
                            dilation=m.dilation, groups=groups, bias=m.bias is not None,
                            padding_mode=m.padding_mode)  # fmt: skip
        layer = layer.to(device=device, dtype=dtype).eval()
        x = torch.randn(shape, device=device, dtype=dtype)
        if memory_format == torch.channels_last and isinstance(layer, nn.Conv2d) and x.dim() == 4:
            layer = layer.to(memory_format=memory_format)
            x = x.contiguous(memory_format=memory_format)
        return layer, x


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _probes(gm: fx.GraphModule, cls: Any) -> list[_Probe]:
    """The group's convolutions and linear layers that can be rebuilt at another width."""
    first_call: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in first_call:
            first_call[node.target] = node
    out = []
    for fqn, dim in cls.params:
        owner, _, leaf = fqn.rpartition(".")
        node = first_call.get(owner)
        if leaf != "weight" or node is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        m = gm.get_submodule(owner)
        spec = node.args[0].meta.get(SPEC)
        if not isinstance(getattr(spec, "shape", None), tuple) or m.weight.shape[dim] != cls.size:
            continue  # a product dim (heads x head_dim, groups x channels): not rebuilt here
        if isinstance(m, nn.Linear) or (
            isinstance(m, _CONVS)
            and len(spec.shape) == m.weight.dim()  # batched (N, C, ...): the channels are dim 1
            and (m.groups == 1 or m.groups == m.in_channels == m.out_channels)
        ):
            out.append(_Probe(m, tuple(spec.shape), dim, cls.size))
    return out


class WidthChooser:
    """``round_to="auto"``: kept counts the device runs well (module docstring).

    ``chooser(cid, keep, floor)`` returns the count to keep for group ``cid`` given the
    allocation's ``keep`` and the group's minimum; ``chooser.save()`` writes the cache.
    """

    def __init__(self, gm: fx.GraphModule, analysis: Any):
        p = next(iter(gm.parameters()), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        self.memory_format = memory_format_of(gm)
        self.gm, self.analysis = gm, analysis
        self.path = cache_path()
        self.key = device_key(self.device, self.dtype, self.memory_format)
        self._all = _load(self.path)
        self.cache = self._all.setdefault(self.key, {})
        self.measured = 0
        # timed where the clock can be trusted: the CPU, and CUDA (synchronized); elsewhere
        # (meta, MPS, XPU: asynchronous without a sync here) counts are only left as they are
        self.measurable = measurable(self.device)
        self.step = measure_step(self.device, self.dtype, self.cache, self.memory_format) if self.measurable else 1
        self._probes: dict[int, list[_Probe]] = {}
        self._units: dict[int, int] = {}
        self.kept_whole: dict[int, str] = {}
        self.stepped_down: list[int] = []

    def _unit(self, cid: int) -> int:
        """Physical channels per index of the group (a head of 64 dims: 64)."""
        if cid not in self._units:
            c = self.analysis.classes[cid]
            units = []
            for fqn, dim in c.params:
                try:
                    t = self.gm.get_parameter(fqn)
                except AttributeError:
                    continue
                if t.shape[dim] % c.size == 0:
                    units.append(t.shape[dim] // c.size)
            self._units[cid] = min(units) if units else 1
        return self._units[cid]

    def latency(self, cid: int, n: int) -> float | None:
        """Summed minimum milliseconds of the group's layers at width ``n`` (None: no layer
        of the group can be timed)."""
        if cid not in self._probes:
            self._probes[cid] = _probes(self.gm, self.analysis.classes[cid]) if self.measurable else []
        probes = self._probes[cid]
        if not probes:
            return None
        total = 0.0
        for pr in probes:
            k = pr.key(n)
            if k not in self.cache:
                try:
                    layer, x = pr.build(n, self.device, self.dtype, self.memory_format)
                    self.cache[k] = _layer_ms(layer, x, self.device)
                except Exception:  # noqa: BLE001 - a layer that cannot be rebuilt is not timed
                    return None
                self.measured += 1
            total += self.cache[k]
        return total

    def __call__(self, cid: int, keep: int, floor: int = 1) -> int:
        size = self.analysis.classes[cid].size
        if keep >= size:
            return size
        m = self.step // math.gcd(self.step, self._unit(cid))  # in indices of this group
        if m <= 1 or size <= m:
            cand = keep
        else:
            cand = max(m, int(math.floor(keep / m + 0.5)) * m, math.ceil(floor / m) * m)
        if cand >= size:
            return size
        full = self.latency(cid, size)
        if full is None:
            return cand  # nothing to time: rounding only
        for n in (cand, cand - m) if m > 1 else (cand,):
            if n < max(floor, 1):
                continue
            t = self.latency(cid, n)
            if t is not None and t < full * (1 - _FASTER):
                if n != cand:
                    self.stepped_down.append(cid)
                return n
        self.kept_whole[cid] = f"width {cand} of {size} measured no faster than {size} on this device"
        return size

    def summary(self) -> dict[str, Any]:
        return {"device": self.key, "step": self.step, "measured": self.measured, "cache": str(self.path),
                "kept_whole": dict(self.kept_whole), "stepped_down": sorted(set(self.stepped_down))}  # fmt: skip

    def save(self) -> None:
        if self.measured or "step" in self.cache:
            fresh = _load(self.path)  # another process may have added measurements meanwhile
            fresh.setdefault(self.key, {}).update(self.cache)
            _save(self.path, fresh)


def end_to_end(
    gm: fx.GraphModule, pruned: nn.Module, inputs: tuple, *, rounds: int = 7, iters: int = 3
) -> tuple[float, float, float]:
    """Median milliseconds of the original and the pruned model on ``inputs``, timed in
    ``rounds`` interleaved rounds (each the minimum of ``iters`` calls after one untimed
    call), so drift in the machine's speed hits both alike, and the share of rounds in which
    the pruned model was the faster one. The last check of ``round_to="auto"``.

    Where the original's 2-d convolution weights are channels_last, the pruned model's are
    made so too (in place) before timing: the rewrite builds its new weights contiguous, and
    the two layouts run at different speeds."""
    fmt = memory_format_of(gm)
    if fmt == torch.channels_last and memory_format_of(pruned) != fmt:
        pruned.to(memory_format=fmt)
    base, small = models_ms([gm, pruned], inputs, rounds=rounds, iters=iters, warmup=0, round_warmup=1, reduce=min)
    wins = sum(s < b for b, s in zip(base, small)) / len(base)
    return sorted(base)[len(base) // 2], sorted(small)[len(small) // 2], wins
