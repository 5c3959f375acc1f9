"""On a GPU, does latency follow MACs? The whole GPU measurement of issue 20 in one process.

Models (random weights, eval mode, bf16; the CNNs and their inputs channels_last): torchvision
resnet50 and mobilenet_v2 (batch 64, 224x224) and vit_b_16 (batch 64). For each:

* fxprune at ratios 0, 0.25 and 0.5 with ``round_to=8``, and at 0.25 and 0.5 with
  ``round_to="auto"`` (ratio 0 removes nothing: it is the same widths as the original, and
  its row shows what the GraphModule round trip costs). fxprune prunes the GPU model, in
  bf16 and in its memory format, so ``round_to="auto"`` measures there. No masked-equals-
  pruned check here (``verify``; it is covered by the CPU tests), nothing in the timed path.
* Torch-Pruning (when ``torch_pruning`` is importable) at 0.5: ``MagnitudePruner`` with
  ``GroupMagnitudeImportance(p=2)``, ``pruning_ratio=0.5``, ``round_to=8``, the final
  classifier ``nn.Linear`` in ``ignored_layers`` and, for the ViT, ``num_heads`` of every
  ``nn.MultiheadAttention`` (its own defaults otherwise: head dims, not whole heads). It
  prunes a float32 CPU copy at batch 1 (its dependency graph traces autograd); the pruned
  model is then moved to the GPU in bf16 and the memory format like the others.
* Each pruned model against the original, eager and under ``torch.compile`` (Inductor,
  default mode, ``dynamic=False``, compiled under ``torch.no_grad()``); the original is
  compiled once per model and reused by its rows.

Timing (``fxprune.measure``): each call starts from a synchronized device and is timed by
CUDA events; after ``--warmup`` untimed calls of each, the original and the pruned model take
turns in ``--rounds`` rounds of ``--iters`` calls (one untimed call first in each round).
Each round gives its median; a row has the median of the rounds and their spread.

Rows go to ``OUT/latency_rows.jsonl`` as JSON lines, one written as soon as it is measured:
a ``meta`` line (versions, device), a ``row`` per measurement (model, method, ratio, round_to,
backend, MACs and parameters of the pruned model and the original, both latencies with
spread, latency speed-up, MACs speed-up and their ratio, the GPU's name, driver, torch
version and clocks), a ``skip`` line for every measurement that did not fit the budget or
failed, and a ``summary`` line with the time of every phase. The log goes to stdout.

Budget: ``--budget-s`` (default 190) of wall time, imports included. Work runs in order of
priority and each step is started only when its estimated cost (from what the same kind of
step took so far) fits: first every eager row, then the Inductor rows, resnet50 first (the
original, then ``round_to=8`` 0.5, ``auto`` 0.5, Torch-Pruning 0.5, then 0.25), then
mobilenet_v2 and vit_b_16 at 0.5, then their 0.25 rows and the ratio-0 rows. Inductor
compiles are the expensive steps (tens of seconds each, on a cold cache).

Lowest priority, after the compiled rows: a random-weight HF ``LlamaForCausalLM`` (bf16, sdpa
attention, ``use_cache=False``, about 0.45B parameters), its prefill of 1x2048 tokens, eager,
against fxprune's pruned graphs at 0.25 and 0.5 (``round_to=8``); the graph is fxprune's
torch.export capture, frozen to that input shape, which a fixed-shape prefill needs. Decode
tokens/s with ``generate()`` is left out: it needs fxprune to return the user's own module
class (``output="module"``, another issue, not landed), and the log says so.

``--smoke``: the same code paths on the CPU with tiny sizes (batch 2, 64x64, float32 since bf16
convolutions on a CPU without bf16 units are ~30x slower, one thread, a 2-layer ViT of the
same class, resnet50 and mobilenet_v2 as they are, a 2-layer Llama at 32 tokens, few
iterations, ``round_to="auto"``'s channel step preset in the cache), and two compiled models
through ``torch.compile(backend="eager")`` (Dynamo without Inductor's code generation, which
takes 20-50 s per model on a 2-core CPU); about 30 s on 2 quiet cores.

fxprune need not be installed: where it is not (the GPU machine), it is imported from this
checkout.

Usage (repository root):
    python benchmarks/gpu_suite.py --out DIR [--budget-s 190] [--models resnet50 ...]
        [--no-compile] [--compile-first 0.5|0.25] [--no-tp] [--no-llama] [--cudnn-benchmark]
        [--rounds 7] [--iters 10] [--warmup 5] [--plot DIR/gpu_latency.png]
    python benchmarks/gpu_suite.py --smoke --out DIR
    python benchmarks/gpu_suite.py --plot-rows DIR/latency_rows.jsonl --plot out.png
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the budget counts the imports too

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from _checkout import import_fxprune_from_checkout  # noqa: E402

import_fxprune_from_checkout()
import fxprune  # noqa: E402
from fxprune.measure import models_ms, spread, synchronize  # noqa: E402

T_IMPORT = time.perf_counter() - T0
MODELS = ("resnet50", "mobilenet_v2", "vit_b_16")
ROWS_FILE = "latency_rows.jsonl"


def elapsed() -> float:
    return time.perf_counter() - T0


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


class Phases:
    """Seconds spent per phase (summed), for the log's timing report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"imports": T_IMPORT}
        self.counts: dict[str, int] = {"imports": 1}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            self.counts[name] = self.counts.get(name, 0) + 1

    def report(self) -> str:
        lines = [f"{'phase':<28}{'calls':>6}{'seconds':>10}"]
        for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            lines.append(f"{k:<28}{self.counts[k]:>6}{v:>10.1f}")
        lines.append(f"{'total wall time':<28}{'':>6}{elapsed():>10.1f}")
        return "\n".join(lines)


class Budget:
    """The deadline, and estimates of what each kind of step costs (the most it took so far,
    with a margin), so a step is started only when it fits."""

    def __init__(self, seconds: float, defaults: dict[str, float]):
        self.deadline = seconds
        self.defaults = dict(defaults)
        self.seen: dict[str, float] = {}

    def left(self) -> float:
        return self.deadline - elapsed()

    def estimate(self, kind: str, *fallbacks: str) -> float:
        for k in (kind, *fallbacks):
            if k in self.seen:
                return self.seen[k]
        return self.defaults.get(kind.split(":")[0], 10.0)

    def fits(self, kind: str, *fallbacks: str) -> bool:
        return self.estimate(kind, *fallbacks) <= self.left()

    def took(self, kind: str, seconds: float, margin: float = 1.25) -> None:
        """``kind`` took ``seconds``: the next one is estimated at the most seen, times ``margin``."""
        for k in (kind, kind.split(":")[0]):
            self.seen[k] = max(self.seen.get(k, 0.0), seconds * margin)


# -- the device -------------------------------------------------------------------------------


def _nvidia_smi(fields: str) -> dict[str, str]:
    names = fields.split(",")
    out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")]
    return dict(zip(names, values))


class Gpu:
    """Name, driver, torch version (static) and clocks (read again for every row): NVML
    through pynvml when it imports, else nvidia-smi; a failure is recorded, never raised."""

    CLOCKS = "clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw"

    def __init__(self, device: torch.device):
        self.device = device
        self.nvml: Any = None
        self.info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            self.info.update(name=torch.cuda.get_device_name(device), multiprocessors=props.multi_processor_count,
                             memory_gib=round(props.total_memory / 2**30, 1),
                             cudnn=torch.backends.cudnn.version())  # fmt: skip
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(device.index or 0))
                drv = pynvml.nvmlSystemGetDriverVersion()
                self.info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
            except Exception as e:  # noqa: BLE001 - no NVML: nvidia-smi below
                self.info["nvml"] = f"unavailable ({type(e).__name__})"
        else:
            self.info["name"] = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
        try:
            smi = _nvidia_smi("name,driver_version," + self.CLOCKS)
            self.info.setdefault("driver", smi.get("driver_version"))
            self.info["nvidia_smi_at_start"] = smi
        except Exception as e:  # noqa: BLE001 - tolerated: recorded
            self.info["nvidia_smi"] = f"failed: {type(e).__name__}: {str(e)[:120]}"

    def clocks(self) -> dict[str, Any]:
        if self.nvml is not None:
            try:
                nv, h = self.nvml
                return {"sm_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                        "mem_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
                        "max_sm_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
                        "max_mem_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
                        "temp_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                        "power_w": round(nv.nvmlDeviceGetPowerUsage(h) / 1000, 1), "via": "nvml"}  # fmt: skip
            except Exception as e:  # noqa: BLE001
                err = f"nvml: {type(e).__name__}"
        else:
            err = ""
        if self.device.type != "cuda":
            return {"note": "no GPU"}
        try:
            return {**_nvidia_smi(self.CLOCKS), "via": "nvidia-smi"}
        except Exception as e:  # noqa: BLE001
            return {"error": f"{err} nvidia-smi: {type(e).__name__}".strip()}

    def row_fields(self) -> dict[str, Any]:
        return {"gpu": self.info.get("name"), "driver": self.info.get("driver"), "torch": torch.__version__,
                "clocks": self.clocks()}  # fmt: skip


# -- models -----------------------------------------------------------------------------------


@dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    batch: int
    size: int
    smoke: bool
    backend: str  # torch.compile's backend for the compiled rows


def is_cnn(name: str) -> bool:
    return not name.startswith("vit")


def build(name: str, s: Setup) -> nn.Module:
    """The model, random weights (seed 0), float32 on the CPU."""
    torch.manual_seed(0)
    if name.startswith("vit"):
        if s.smoke:  # the same class, two small layers
            return torchvision.models.VisionTransformer(image_size=s.size, patch_size=16, num_layers=2, num_heads=4,
                                                        hidden_dim=64, mlp_dim=128)  # fmt: skip
        return torchvision.models.get_model(name, weights=None, image_size=s.size)
    return torchvision.models.get_model(name, weights=None)


def place(m: nn.Module, s: Setup, cnn: bool) -> nn.Module:
    """On the device, in the dtype, and channels_last for a CNN (in place; returns ``m``)."""
    m = m.to(device=s.device, dtype=s.dtype).eval()
    if cnn:
        m = m.to(memory_format=torch.channels_last)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def classifier(m: nn.Module) -> list[nn.Module]:
    """The final classifier: the last nn.Linear with 1000 outputs (torchvision's heads)."""
    heads = [mod for mod in m.modules() if isinstance(mod, nn.Linear) and mod.out_features == 1000]
    return heads[-1:]


def torch_pruning_model(model_cpu: nn.Module, s: Setup, name: str) -> tuple[nn.Module, dict[str, Any]]:
    import torch_pruning as tp

    work = copy.deepcopy(model_cpu).float().eval()
    x = torch.randn(1, 3, s.size, s.size)
    kw: dict[str, Any] = {}
    mha = [mod for mod in work.modules() if isinstance(mod, nn.MultiheadAttention)]
    if mha:
        kw["num_heads"] = {mod: mod.num_heads for mod in mha}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(work, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                           pruning_ratio=0.5, round_to=8, ignored_layers=classifier(work), **kw)  # fmt: skip
        pruner.step()
    for mod in mha:  # its recipe: the attention modules read the new widths
        mod.num_heads = int(pruner.num_heads.get(mod, mod.num_heads))
        mod.head_dim = mod.embed_dim // mod.num_heads
    with torch.no_grad():
        work(x)  # it still runs
    try:
        from importlib.metadata import version

        v = version("torch-pruning")
    except Exception:  # noqa: BLE001
        v = getattr(tp, "__version__", "?")
    cfg = {"tool": f"torch-pruning {v}", "pruner": "MagnitudePruner", "importance": "GroupMagnitudeImportance(p=2)",
           "pruning_ratio": 0.5, "round_to": 8, "ignored_layers": "final classifier",
           "num_heads": bool(mha), "pruned_on": "CPU float32, batch 1"}  # fmt: skip
    return work, cfg


@dataclass
class Variant:
    label: str  # e.g. "fxprune r8 0.50"
    method: str  # "fxprune" | "torch-pruning"
    ratio: float
    round_to: int | str | None
    model: nn.Module
    prune_s: float
    info: dict[str, Any] = field(default_factory=dict)
    macs: int = 0
    params: int = 0
    widths: tuple = ()


def widths_of(m: nn.Module) -> tuple:
    return tuple((k, tuple(v.shape)) for k, v in m.state_dict().items())


# -- the suite --------------------------------------------------------------------------------


class Suite:
    def __init__(self, args: argparse.Namespace, s: Setup):
        self.args, self.s = args, s
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows_path = self.out / ROWS_FILE
        self.rows_path.write_text("")
        self.phases = Phases()
        self.budget = Budget(args.budget_s, {"prune": 15.0, "prune-auto": 30.0, "tp": 15.0, "time": 5.0, "llama": 8.0 if s.smoke else 30.0,
                                             "compile": 60.0 if s.backend == "inductor" else 15.0})  # fmt: skip
        self.gpu = Gpu(s.device)
        self.rows: list[dict[str, Any]] = []
        self.skips: list[dict[str, Any]] = []
        self.models: dict[str, dict[str, Any]] = {}
        self.not_compiled: set[tuple[str, str]] = set()

    # -- output ----------------------------------------------------------------------------
    def write(self, rec: dict[str, Any]) -> None:
        with open(self.rows_path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def skip(self, what: str, why: str, **kw: Any) -> None:
        rec = {"type": "skip", "what": what, "why": why, "at_s": round(elapsed(), 1), **kw}
        self.skips.append(rec)
        self.write(rec)
        log(f"skipped: {what}: {why}")

    # -- steps -----------------------------------------------------------------------------
    def inputs(self, cnn: bool) -> torch.Tensor:
        torch.manual_seed(1)
        x = torch.randn(self.s.batch, 3, self.s.size, self.s.size, device=self.s.device, dtype=self.s.dtype)
        return x.contiguous(memory_format=torch.channels_last) if cnn else x

    def prepare(self, name: str) -> bool:
        """Build and place the original, count it, and prune every variant (fxprune on the
        placed model; Torch-Pruning on a CPU copy)."""
        s, cnn = self.s, is_cnn(name)
        if not self.budget.fits("build"):
            self.skip(f"{name}: every row", "budget")
            return False
        t = time.perf_counter()
        with self.phases("build + place models"):
            cpu_model = build(name, s)
            base = place(copy.deepcopy(cpu_model), s, cnn)
            x = self.inputs(cnn)
        with self.phases("count MACs"):
            base_macs = fxprune.count_macs(base, (x,))
        self.budget.took("build", time.perf_counter() - t)
        entry = {"name": name, "cnn": cnn, "base": base, "x": x, "macs": base_macs, "params": fxprune.count_params(base),
                 "variants": [], "compiled": {}, "batch": s.batch, "size": s.size,
                 "input": f"{s.batch}x3x{s.size}x{s.size}"}  # fmt: skip
        self.models[name] = entry
        log(f"{name}: {entry['params'] / 1e6:.2f}M params, {base_macs / s.batch / 1e9:.3f} GMACs per sample, "
            f"input {tuple(x.shape)} {str(s.dtype).replace('torch.', '')}"
            f"{' channels_last' if cnn else ''} (built in {time.perf_counter() - t:.1f} s)")  # fmt: skip
        plan = [("fxprune", 0.0, 8), ("fxprune", 0.5, 8), ("fxprune", 0.5, "auto"), ("torch-pruning", 0.5, 8),
                ("fxprune", 0.25, 8), ("fxprune", 0.25, "auto")]  # fmt: skip
        for method, ratio, rt in plan:
            label = f"{method} {'auto' if rt == 'auto' else 'r' + str(rt)} {ratio:.2f}"
            kind = "tp" if method == "torch-pruning" else ("prune-auto" if rt == "auto" else "prune")
            if method == "torch-pruning" and not self.args.tp:
                self.skip(f"{name}: {label}", self.args.tp_why, model=name)
                continue
            if not self.budget.fits(f"{kind}:{name}", kind):
                self.skip(f"{name}: {label} (pruning, all its rows)", "budget", model=name)
                continue
            t = time.perf_counter()
            try:
                with self.phases(f"prune: {kind}"):
                    info: dict[str, Any] = {}
                    if method == "torch-pruning":
                        small, info = torch_pruning_model(cpu_model, s, name)
                        small = place(small, s, cnn)
                    else:
                        small = fxprune.compile(base, ratio, example_inputs=x, round_to=rt)
                        hw = small.meta["fxprune.report"].plan.meta.get("round_to") or {}
                        if hw:
                            info = {"device_key": hw.get("device"), "step": hw.get("step"), "measured": hw.get("measured"),
                                    "kept_whole": len(hw.get("kept_whole", {})), "end_to_end_ms": hw.get("end_to_end_ms"),
                                    "gave_up": hw.get("gave_up")}  # fmt: skip
                        place(small, s, cnn)  # the rewrite builds new weights contiguous
                    synchronize(s.device)
            except Exception as e:  # noqa: BLE001 - one failure costs its rows only
                traceback.print_exc()
                self.skip(f"{name}: {label} (pruning, all its rows)", f"failed: {type(e).__name__}: {e}"[:300], model=name)
                continue
            dt = time.perf_counter() - t
            self.budget.took(f"{kind}:{name}", dt)
            v = Variant(label, method, ratio, rt, small, dt, info)
            with self.phases("count MACs"):
                v.macs, v.params = fxprune.count_macs(small, (x,)), fxprune.count_params(small)
            v.widths = widths_of(small)
            entry["variants"].append(v)
            extra = ""
            if rt == "auto" and info:
                extra = (f", auto: step {info['step']}, {info['measured']} layer timings, {info['kept_whole']} groups kept whole"
                         + (f", GAVE UP: {info['gave_up']}" if info.get("gave_up") else ""))  # fmt: skip
            log(f"{name}: {label}: pruned in {dt:.1f} s, {base_macs / v.macs:.2f}x fewer MACs, "
                f"{entry['params'] / v.params:.2f}x fewer params{extra}")  # fmt: skip
        return True

    def graphed(self, name: str, key: str, module: nn.Module) -> Any:
        """``module`` at the model's input captured in one CUDA graph and replayed: the eager
        kernels without Python and launch overhead (a launch cost tens of microseconds on the
        lent machine, so at batch 64 eager timings were launch-bound). Cached per model."""
        cache = self.models[name].setdefault("graphs", {})
        if key not in cache:
            x = self.models[name]["x"]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.no_grad(), torch.cuda.stream(side):
                for _ in range(3):
                    module(x)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(g):
                module(x)
            cache[key] = lambda _x, g=g: g.replay()
        return cache[key]

    def time_pair(self, name: str, v: Variant, backend: str) -> None:
        entry, a = self.models[name], self.args
        if backend == "cudagraph":
            try:
                base_fn, fn = self.graphed(name, "base", entry["base"]), self.graphed(name, v.label, v.model)
            except Exception as e:  # noqa: BLE001 - one failure costs its row only
                traceback.print_exc()
                self.skip(f"{name}: {v.label} cudagraph (capture)", f"failed: {type(e).__name__}: {e}"[:300], model=name)
                return
        else:
            base_fn = entry["base"] if backend == "eager" else entry["compiled"].get("base")
            fn = v.model if backend == "eager" else entry["compiled"].get(v.label)
        kind = f"time:{name}"
        if base_fn is None or fn is None:
            return
        if not self.budget.fits(kind, "time"):
            self.skip(f"{name}: {v.label} {backend} (timing)", "budget", model=name)
            return
        t = time.perf_counter()
        try:
            with self.phases(f"time: {backend}"):
                base_r, small_r = models_ms([base_fn, fn], (entry["x"],), rounds=a.rounds, iters=a.iters,
                                            warmup=a.warmup, round_warmup=1)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one failure costs its row only
            traceback.print_exc()
            self.skip(f"{name}: {v.label} {backend} (timing)", f"failed: {type(e).__name__}: {e}"[:300], model=name)
            return
        self.budget.took(kind, time.perf_counter() - t)
        b, p = spread(base_r), spread(small_r)
        speed, macs_x = b["median"] / p["median"], entry["macs"] / v.macs
        row = {
            "type": "row", "model": name, "method": v.method, "ratio": v.ratio, "round_to": v.round_to,
            "backend": backend if backend in ("eager", "cudagraph") else ("inductor" if self.s.backend == "inductor" else f"compile:{self.s.backend}"),
            "batch": entry["batch"], "size": entry["size"], "input": entry["input"],
            "dtype": str(self.s.dtype).replace("torch.", ""), "memory_format": "channels_last" if entry["cnn"] else "contiguous",
            "macs": v.macs // entry["batch"], "base_macs": entry["macs"] // entry["batch"], "params": v.params,
            "base_params": entry["params"], "base_ms": b, "pruned_ms": p, "speedup": speed, "macs_x": macs_x,
            "speedup_over_macs_x": speed / macs_x,
            "pruned_faster_in": sum(y < x for x, y in zip(base_r, small_r)) / len(base_r),
            "rounds": a.rounds, "iters": a.iters, "prune_s": round(v.prune_s, 2),
            "compile_s": entry["compiled"].get(f"{v.label} s") if backend not in ("eager", "cudagraph") else None,
            "same_widths_as_original": v.widths == widths_of(entry["base"]),
            **({"round_to_auto": v.info} if v.round_to == "auto" else {}),
            **({"torch_pruning": v.info} if v.method == "torch-pruning" else {}),
            **self.gpu.row_fields(), "at_s": round(elapsed(), 1),
        }  # fmt: skip
        self.rows.append(row)
        self.write(row)
        log(f"ROW {name:<13}{v.label:<24}{row['backend']:<10} MACs {macs_x:5.2f}x  base {b['median']:8.3f} ms "
            f"±{b['rel']:.1%}  pruned {p['median']:8.3f} ms ±{p['rel']:.1%}  speed-up {speed:5.2f}x  "
            f"latency/MACs {speed / macs_x:.2f}  clocks {_clock_str(row['clocks'])}")  # fmt: skip

    def compile_one(self, name: str, key: str, module: nn.Module) -> bool:
        """torch.compile ``module`` and run it once (the compile), unless it does not fit."""
        entry = self.models[name]
        if key in entry["compiled"]:
            return True
        if (name, key) in self.not_compiled:
            return False
        # the first compile of the process also pays one-time costs (importing Inductor and
        # Triton, starting the compile workers): it sets the estimate only until a later
        # compile is seen, and without a margin
        est = ("compile:" + name, "compile", "compile-first")
        if not self.budget.fits(*est):
            self.not_compiled.add((name, key))
            self.skip(f"{name}: {key} compiled ({self.s.backend})", f"budget (estimated {self.budget.estimate(*est):.0f} s, "
                      f"{self.budget.left():.0f} s left)", model=name)  # fmt: skip
            return False
        first = "compile-first" not in self.budget.seen
        t = time.perf_counter()
        try:
            with self.phases(f"compile: {self.s.backend}"), torch.no_grad():
                fn = torch.compile(module, backend=self.s.backend, dynamic=False)
                fn(entry["x"])
                synchronize(self.s.device)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.not_compiled.add((name, key))
            self.skip(f"{name}: {key} compiled ({self.s.backend})", f"failed: {type(e).__name__}: {e}"[:300], model=name)
            return False
        dt = time.perf_counter() - t
        if first:
            self.budget.took("compile-first", dt, margin=1.0)
        else:
            self.budget.took(f"compile:{name}", dt)
        entry["compiled"][key], entry["compiled"][f"{key} s"] = fn, round(dt, 1)
        log(f"{name}: compiled {key} ({self.s.backend}) in {dt:.1f} s")
        return True

    def compiled_rows(self) -> None:
        """In priority order (with the default ``--compile-first 0.5``): resnet50's 0.5 rows
        (round_to=8, auto, Torch-Pruning), its 0.25 rows, the other models' 0.5 rows, their
        0.25 rows, then the ratio-0 rows."""
        first = self.args.compile_first
        second = 0.25 if first == 0.5 else 0.5
        order = []
        for tier in (lambda v, n: v.ratio == first and n == "resnet50", lambda v, n: v.ratio == second and n == "resnet50",
                     lambda v, n: v.ratio == first, lambda v, n: v.ratio == second, lambda v, n: True):  # fmt: skip
            for name, entry in self.models.items():
                for v in entry["variants"]:
                    if tier(v, name) and (name, v) not in order:
                        order.append((name, v))
        for i, (name, v) in enumerate(order):
            if self.args.compile_limit is not None and i >= self.args.compile_limit:
                self.skip(f"{name}: {v.label} compiled ({self.s.backend})", f"--compile-limit {self.args.compile_limit}", model=name)
                continue
            if not self.compile_one(name, "base", self.models[name]["base"]):
                self.skip(f"{name}: {v.label} compiled ({self.s.backend})", "its original is not compiled", model=name)
                continue
            if self.compile_one(name, v.label, v.model):
                self.time_pair(name, v, "compiled")

    def llama(self) -> None:
        """A random-weight HF LlamaForCausalLM (bf16, sdpa attention, use_cache=False; about
        0.45B parameters with the default 32 layers), its prefill of 1 x ``--llama-tokens``
        tokens timed against fxprune's pruned graphs at 0.25 and 0.5 (``round_to=8``, the
        default heads mode) and the unpruned captured graph (ratio 0). The graph comes from
        fxprune's torch.export capture, analysed once; it is frozen to that input shape,
        which is all a fixed-shape prefill timing needs. Eager only."""
        s, a, name = self.s, self.args, "llama"
        if not self.budget.fits("llama"):
            self.skip("llama: prefill rows", f"budget (estimated {self.budget.estimate('llama'):.0f} s, "
                      f"{self.budget.left():.0f} s left)")  # fmt: skip
            return
        try:
            import transformers as tr
        except ImportError:
            self.skip("llama: prefill rows", "transformers is not installed")
            return
        t0 = time.perf_counter()
        try:
            if s.smoke:
                dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=1000)  # fmt: skip
            else:
                # full multi-head attention: on CUDA, transformers calls SDPA with enable_gqa for
                # grouped-query attention, which torch 2.11's flop counter rejects ("query/key/value
                # shapes are incompatible", the first GPU run), so MACs could not be counted
                dims = dict(hidden_size=1024, num_hidden_layers=a.llama_layers, num_attention_heads=16,
                            num_key_value_heads=16, intermediate_size=2816, vocab_size=32000)  # fmt: skip
            tokens = a.llama_tokens or (32 if s.smoke else 2048)
            cfg = tr.LlamaConfig(**dims, max_position_embeddings=max(4096, tokens), use_cache=False,
                                 attn_implementation="sdpa")  # fmt: skip
            with self.phases("llama: build"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.manual_seed(0)
                with torch.device(s.device):
                    base = tr.LlamaForCausalLM(cfg)
                base = place(base, s, cnn=False)
                x = torch.randint(0, cfg.vocab_size, (1, tokens), device=s.device)
                base_macs = fxprune.count_macs(base, (x,))
            with self.phases("llama: capture (export) + analyze"):
                gm = fxprune.analyze(base, (x,), capture="export")
            entry = {"name": name, "cnn": False, "base": base, "x": x, "macs": base_macs,
                     "params": fxprune.count_params(base), "variants": [], "compiled": {}, "batch": 1, "size": None,
                     "input": f"1x{tokens} tokens (prefill)"}  # fmt: skip
            self.models[name] = entry
            log(f"llama: {entry['params'] / 1e9:.3f}B params ({dims['num_hidden_layers']} layers, hidden "
                f"{dims['hidden_size']}), prefill 1x{tokens}: {base_macs / 1e9:.1f} GMACs; captured in "
                f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            for ratio in (0.0, 0.25, 0.5):
                t = time.perf_counter()
                with self.phases("llama: prune"):
                    small = fxprune.compile(gm, ratio, example_inputs=x, round_to=8)
                    place(small, s, cnn=False)
                v = Variant(f"fxprune r8 {ratio:.2f}", "fxprune", ratio, 8, small, time.perf_counter() - t)
                v.macs, v.params, v.widths = fxprune.count_macs(small, (x,)), fxprune.count_params(small), widths_of(small)
                entry["variants"].append(v)
                self.time_pair(name, v, "eager")
        except Exception as e:  # noqa: BLE001 - the lowest priority: never costs the other rows
            traceback.print_exc()
            self.skip("llama: prefill rows", f"failed: {type(e).__name__}: {e}"[:300])
        self.budget.took("llama", time.perf_counter() - t0)

    def run(self) -> None:
        s, a = self.s, self.args
        meta = {"type": "meta", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "python": platform.python_version(),
                "torch": torch.__version__, "torchvision": torchvision.__version__, "fxprune": fxprune.__version__,
                "device": self.gpu.info, "batch": s.batch, "size": s.size, "dtype": str(s.dtype).replace("torch.", ""),
                "compile_backend": s.backend, "rounds": a.rounds, "iters": a.iters, "warmup": a.warmup,
                "budget_s": a.budget_s, "smoke": s.smoke, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "fxprune_cache": os.environ.get("FXPRUNE_CACHE_DIR")}  # fmt: skip
        self.write(meta)
        for k in ("date", "command", "python", "torch", "torchvision", "fxprune"):
            log(f"{k}: {meta[k]}")
        log(f"device: {json.dumps(self.gpu.info)}")
        log(f"batch {s.batch}, {s.size}x{s.size}, {meta['dtype']}, CNNs channels_last; compiled rows: "
            f"torch.compile(backend={s.backend!r}, dynamic=False); {a.rounds} interleaved rounds of {a.iters} "
            f"after {a.warmup} warm-up calls; budget {a.budget_s:.0f} s (imports took {T_IMPORT:.1f} s)")  # fmt: skip
        if s.backend == "inductor":
            try:  # start Inductor's compile workers now, while the eager rows run
                import torch._inductor.config as inductor_config
                from torch._inductor.async_compile import AsyncCompile

                AsyncCompile.warm_pool()
                log(f"Inductor: {inductor_config.compile_threads} compile threads, fx graph cache "
                    f"{inductor_config.fx_graph_cache}, worker pool warming up")  # fmt: skip
            except Exception as e:  # noqa: BLE001
                log(f"note: could not warm Inductor's worker pool ({type(e).__name__})")
        # 1. eager: prune and time, model by model
        for name in a.models:
            try:
                if not self.prepare(name):
                    continue
            except Exception as e:  # noqa: BLE001 - the original itself failed: the next model
                traceback.print_exc()
                self.skip(f"{name}: every row", f"failed: {type(e).__name__}: {e}"[:300], model=name)
                self.models.pop(name, None)
                continue
            for v in self.models[name]["variants"]:
                self.time_pair(name, v, "eager")
            if a.cuda_graphs and self.s.device.type == "cuda":
                for v in self.models[name]["variants"]:
                    self.time_pair(name, v, "cudagraph")
        if a.cuda_graphs and self.s.device.type != "cuda":
            log("cudagraph rows: left out (CUDA graphs need a CUDA device)")
        # 2. compiled, by priority, while the budget lasts
        if a.compile:
            self.compiled_rows()
        else:
            log("compiled rows: off (--no-compile)")
        # 3. lowest priority: the Llama-style decoder's prefill, eager
        if a.llama:
            self.llama()
        log("llama decode tokens/s with generate(): left out: it needs fxprune to return the user's module class "
            "(output='module', not landed); the exported graph is frozen to one input shape and returns no KV cache")
        self.finish()

    def finish(self) -> None:
        log("timing report:\n" + self.phases.report())
        summary = {"type": "summary", "rows": len(self.rows), "skipped": len(self.skips),
                   "phases_s": {k: round(v, 2) for k, v in self.phases.seconds.items()}, "wall_s": round(elapsed(), 1),
                   "budget_s": self.args.budget_s}  # fmt: skip
        self.write(summary)
        print(table(self.rows), flush=True)
        if self.args.plot:
            try:
                plot_rows(self.rows, self.args.plot)
                log(f"wrote {self.args.plot}")
            except Exception as e:  # noqa: BLE001 - matplotlib missing: the rows can be plotted later
                log(f"plot not drawn ({type(e).__name__}: {e}); later: --plot-rows {self.rows_path} --plot OUT.png")
        log(f"{len(self.rows)} rows, {len(self.skips)} skipped, in {self.rows_path}; wall time {elapsed():.1f} s "
            f"of a {self.args.budget_s:.0f} s budget")  # fmt: skip


def _clock_str(c: dict[str, Any]) -> str:
    if "sm_mhz" in c:
        return f"SM {c['sm_mhz']}/{c['max_sm_mhz']} MHz, mem {c['mem_mhz']} MHz"
    if "clocks.sm" in c:
        return f"SM {c['clocks.sm']}/{c['clocks.max.sm']} MHz, mem {c['clocks.mem']} MHz"
    return c.get("note") or c.get("error") or "?"


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<14}{'method':<15}{'round_to':>9}{'ratio':>6}  {'backend':<16}{'params':>9}{'MACs':>9}"
            f"{'MACs x':>8}{'base ms':>10}{'pruned ms':>11}{'speed-up':>10}{'lat/MACs':>10}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<14}{r['method']:<15}{str(r['round_to']):>9}{r['ratio']:>6.2f}  {r['backend']:<16}"
                     f"{r['params'] / 1e6:>8.2f}M{r['macs'] / 1e9:>8.3f}G{r['macs_x']:>7.2f}x"
                     f"{r['base_ms']['median']:>10.3f}{r['pruned_ms']['median']:>11.3f}{r['speedup']:>9.2f}x"
                     f"{r['speedup_over_macs_x']:>10.2f}")  # fmt: skip
    lines.append("MACs per sample; ms: median over rounds of the per-round medians, batch as in the meta line; "
                 "lat/MACs = latency speed-up / MACs speed-up")  # fmt: skip
    return "\n".join(lines)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [r for r in map(json.loads, filter(str.strip, f)) if r.get("type") == "row"]


def plot_rows(rows: list[dict[str, Any]], path: str) -> None:
    """latency.py's plot (latency speed-up against MACs speed-up, and against the ratio), one
    line per (model, method, round_to, backend); the ratio-0 row starts every fxprune line."""
    from latency import plot

    series: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["ratio"]):
        keys = [(r["method"], r["round_to"])]
        if r["method"] == "fxprune" and r["ratio"] == 0:
            keys = [("fxprune", 8), ("fxprune", "auto")]
        for method, rt in keys:
            label = f"{r['model']} {'TP' if method == 'torch-pruning' else 'fx'} {'auto' if rt == 'auto' else 'r' + str(rt)}"
            series.setdefault(f"{label}|{r['backend']}", []).append(r)
    flat = []
    for key, rs in series.items():
        if len(rs) == 1 and rs[0]["ratio"] == 0:
            continue  # a ratio-0 row without pruned rows after it
        for r in rs:  # latency.plot draws one line per (model, key of "speedup")
            flat.append({"model": key.replace("|", " "), "ratio": r["ratio"], "macs_x": r["macs_x"],
                         "speedup": {"": r["speedup"]}, "device": r.get("gpu") or "?"})  # fmt: skip
    if not flat:
        raise ValueError("no rows to plot")
    plot(flat, path)


def preset_step(device: torch.device, dtype: torch.dtype, step: int = 8) -> None:
    """Smoke only: put a channel step into round_to="auto"'s cache, for both memory formats,
    unless one is there. Measuring it (``fxprune.hardware.measure_step``: 128 widths of a
    256-channel 1x1 conv over 56x56) takes ~15 s on one CPU thread; tests/test_hardware.py
    runs it for real. Every layer timing of the groups still runs."""
    from fxprune import hardware

    path = hardware.cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        data.setdefault(hardware.device_key(device, dtype, fmt), {}).setdefault("step", step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    print(f"smoke: round_to='auto' channel step preset to {step} in {path} (not measured)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output folder: latency_rows.jsonl, and fxprune's latency cache (latency.json)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-time budget, imports included (190; smoke 50)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--smoke", action="store_true", help="the same code paths on the CPU, tiny sizes")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--batch", type=int, default=None, help="64 (smoke 2)")
    ap.add_argument("--size", type=int, default=None, help="224 (smoke 64)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (7; smoke 2)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per round (10; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls of each model first (5; smoke 1)")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                    help="bfloat16 (smoke: float32; bf16 convolutions on a CPU without bf16 units are ~30x slower)")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="also time each eager pair replayed from CUDA graphs (no launch overhead)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; smoke: eager)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--compile-first", type=float, default=0.5, choices=(0.5, 0.25),
                    help="the ratio whose compiled rows come first, resnet50's before the others' (0.5)")
    ap.add_argument("--compile-limit", type=int, default=None,
                    help="compile at most this many pruned models, by priority (default: as the budget allows; smoke 2)")
    ap.add_argument("--no-tp", dest="tp", action="store_false", help="leave Torch-Pruning out")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (default: torch's default, False)")
    ap.add_argument("--no-llama", dest="llama", action="store_false", help="leave the Llama prefill rows out")
    ap.add_argument("--llama-layers", type=int, default=32, help="decoder layers (32: about 0.45B parameters)")
    ap.add_argument("--llama-tokens", type=int, default=None, help="prefill length (2048; smoke 32)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: as torch sets them; smoke 1: spinning OpenMP workers on a busy "
                         "2-core machine made it ~100x slower)")  # fmt: skip
    ap.add_argument("--plot", default=None, help="PNG of latency speed-up vs MACs speed-up (matplotlib)")
    ap.add_argument("--plot-rows", default=None, help="only plot these rows (a latency_rows.jsonl) to --plot")
    a = ap.parse_args(argv)
    if a.plot_rows:
        if not a.plot:
            ap.error("--plot-rows needs --plot OUT.png")
        plot_rows(read_rows(a.plot_rows), a.plot)
        print(f"wrote {a.plot}")
        return
    if not a.out:
        ap.error("--out DIR is required")
    smoke = a.smoke
    dflt = (lambda big, small: small if smoke else big)  # noqa: E731
    a.budget_s = a.budget_s if a.budget_s is not None else dflt(190.0, 50.0)
    if a.compile_limit is None and smoke:
        a.compile_limit = 2
    a.rounds, a.iters, a.warmup = a.rounds or dflt(7, 2), a.iters or dflt(10, 2), a.warmup if a.warmup is not None else dflt(5, 1)
    device = torch.device(a.device or dflt("cuda", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke (CPU), or --device cpu")
    if a.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if a.threads or smoke:
        torch.set_num_threads(a.threads or 1)
    warnings.filterwarnings("ignore")
    if "FXPRUNE_CACHE_DIR" not in os.environ:  # round_to="auto"'s measurements come back with the rows
        os.environ["FXPRUNE_CACHE_DIR"] = str(Path(a.out).resolve())
    a.tp_why = "off (--no-tp)"
    if a.tp:
        try:
            import torch_pruning  # noqa: F401
        except ImportError:
            a.tp, a.tp_why = False, "torch_pruning is not installed"
    if smoke:
        preset_step(device, getattr(torch, a.dtype or "float32"))
    s = Setup(device=device, dtype=getattr(torch, a.dtype or dflt("bfloat16", "float32")), batch=a.batch or dflt(64, 2), size=a.size or dflt(224, 64),
              smoke=smoke, backend=a.compile_backend or dflt("inductor", "eager"))  # fmt: skip
    Suite(a, s).run()


if __name__ == "__main__":
    main()
