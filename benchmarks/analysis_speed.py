"""How long fxprune's passes take on torchvision models, next to Torch-Pruning's DepGraph.

For every model (random weights, eval mode, one ``1 x 3 x size x size`` input) it prints the
median over ``--repeat`` runs, in seconds, of

* fxprune: ``capture`` (deep copy + ``symbolic_trace`` + shape propagation, one forward pass),
  ``analyze`` (``fxprune.passes.dependency.analyze`` on the captured GraphModule),
  ``plan`` (``fxprune.make_plan(gm, 0.5)``, group L2 magnitude included) and
  ``rewrite`` (``fxprune.rewrite``: a new, smaller GraphModule), and their sum;
* Torch-Pruning, when ``torch_pruning`` is importable, each on a fresh deep copy of the same model:
  ``build`` (``tp.DependencyGraph().build_dependency(model, example_inputs=x)``, which runs a
  forward pass with autograd to trace), ``init`` (constructing the recommended pruner, which
  builds its own dependency graph again; shown, not in the ratio) and ``step`` (one
  ``pruner.step()`` at pruning_ratio 0.5, group L2 magnitude, the final classifier ignored);
* ``ratio`` = TP (build + step) / fxprune (analyze + plan + rewrite), and ``ratio_all`` =
  TP (build + step) / fxprune (capture + analyze + plan + rewrite). fxprune's forward pass is
  in ``capture`` while Torch-Pruning's is in ``build``, so ``ratio_all`` is the like-for-like one.

A second table gives parameter counts before and after each tool pruned, to show both did
comparable work. Deep copies made for Torch-Pruning are not timed; the one inside
``fxprune.capture`` is.

Usage:
    python benchmarks/analysis_speed.py [--models resnet50 ...] [--repeat 3] [--size 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import torch
from fxprune.passes.dependency import analyze as fx_analyze
from torch import nn

import fxprune

DEFAULT_MODELS = ["resnet50", "densenet121", "efficientnet_b0", "convnext_tiny"]
RATIO = 0.5


def _cpu_name() -> str:
    name = platform.processor()
    if not name:
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return name or platform.machine()


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unavailable"


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def _short(e: BaseException, n: int = 70) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ")
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _classifier(model: nn.Module) -> list[nn.Module]:
    """The final classifier: the last nn.Linear (every default model here ends in one)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def run_fxprune(model: nn.Module, x: torch.Tensor, repeat: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in ("capture", "analyze", "plan", "rewrite")}
    small = None
    for _ in range(repeat):
        dt, gm = _timed(fxprune.capture, model, x)
        times["capture"].append(dt)
        dt, gm = _timed(fx_analyze, gm)
        times["analyze"].append(dt)
        dt, plan = _timed(fxprune.make_plan, gm, RATIO)
        times["plan"].append(dt)
        dt, small = _timed(fxprune.rewrite, gm, plan)
        times["rewrite"].append(dt)
    with torch.no_grad():
        small(x)  # the pruned model must still run (not timed)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["params_after"] = _params(small)
    return med


def run_torch_pruning(tp: Any, model: nn.Module, x: torch.Tensor, repeat: int) -> dict[str, Any]:
    Pruner = getattr(tp.pruner, "MagnitudePruner", None) or tp.pruner.BasePruner
    Importance = getattr(tp.importance, "GroupMagnitudeImportance", None) or tp.importance.MagnitudeImportance
    times: dict[str, list[float]] = {k: [] for k in ("build", "init", "step")}
    after = None
    for _ in range(repeat):
        m = copy.deepcopy(model)
        dt, _dg = _timed(tp.DependencyGraph().build_dependency, m, example_inputs=x)
        times["build"].append(dt)
        del _dg, m
        m = copy.deepcopy(model)
        dt, pruner = _timed(
            Pruner, m, x, importance=Importance(p=2), pruning_ratio=RATIO, ignored_layers=_classifier(m)
        )
        times["init"].append(dt)
        dt, _ = _timed(pruner.step)
        times["step"].append(dt)
        after = _params(m)
        with torch.no_grad():
            m(x)  # the pruned model must still run (not timed)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["params_after"] = after
    return med


def _fmt(v: Any, width: int) -> str:
    if isinstance(v, float):
        return f"{v:>{width}.3f}"
    return f"{str(v):>{width}}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="torchvision model names")
    ap.add_argument("--repeat", type=int, default=3, help="runs per model; the median is printed")
    ap.add_argument("--size", type=int, default=224, help="input resolution")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args(argv)

    import torchvision

    torch.set_num_threads(args.threads)
    try:
        from importlib.metadata import PackageNotFoundError, version

        import torch_pruning as tp

        try:
            tp_version = version("torch-pruning")
        except PackageNotFoundError:
            tp_version = getattr(tp, "__version__", "unknown")
    except ImportError:
        tp, tp_version = None, None

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, fxprune {fxprune.__version__}, "
          f"torch-pruning {tp_version or 'not installed'}")
    print(f"machine: {_cpu_name()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}, "
          f"torch threads={torch.get_num_threads()}, "
          f"cuda available={torch.cuda.is_available()} (unused, CPU run)")
    print(f"load average at start (1/5/15 min): {_load()}  (other work on the machine skews timings)")
    print(f"input 1x3x{args.size}x{args.size}, pruning ratio {RATIO}, "
          f"median of {args.repeat} run(s), seconds")
    if tp is None:
        print("torch_pruning is not installed: Torch-Pruning columns skipped "
              "(install it with: pip install torch-pruning)")
    print()

    fx_cols = ["capture", "analyze", "plan", "rewrite", "fx_total"]
    tp_cols = ["tp_build", "tp_init", "tp_step", "ratio", "ratio_all"] if tp is not None else []
    head = f"{'model':<16}" + "".join(f"{c:>10}" for c in fx_cols + tp_cols)
    lines = [head, "-" * len(head)]
    params_lines = []
    errors = []
    for name in args.models:
        torch.manual_seed(0)
        row = f"{name:<16}"
        try:
            model = torchvision.models.get_model(name, weights=None).eval()
        except Exception as e:  # noqa: BLE001 - an unknown name should not stop the other models
            row += f"  torchvision error: {_short(e)}"
            lines.append(row)
            print(row, flush=True)
            continue
        x = torch.randn(1, 3, args.size, args.size)
        before = _params(model)
        fx_res = tp_res = None
        try:
            fx_res = run_fxprune(model, x, args.repeat)
            fx_res["fx_total"] = sum(fx_res[k] for k in ("capture", "analyze", "plan", "rewrite"))
            row += "".join(_fmt(fx_res[c], 10) for c in fx_cols)
        except Exception as e:  # noqa: BLE001 - report and go on to the next model
            row += f"  fxprune error: {_short(e)}"
            errors.append((name, "fxprune", e))
        if tp is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tp_res = run_torch_pruning(tp, model, x, args.repeat)
                tp_sum = tp_res["build"] + tp_res["step"]
                row += "".join(_fmt(tp_res[k], 10) for k in ("build", "init", "step"))
                if fx_res is not None:
                    fx_core = fx_res["analyze"] + fx_res["plan"] + fx_res["rewrite"]
                    row += f"{tp_sum / fx_core:>9.2f}x{tp_sum / fx_res['fx_total']:>9.2f}x"
            except Exception as e:  # noqa: BLE001
                row += f"  torch-pruning error: {_short(e)}"
                errors.append((name, "torch-pruning", e))
        lines.append(row)
        print(row, flush=True)  # progress; the full table is printed again below
        p = f"{name:<16}{before:>14,}"
        p += f"{fx_res['params_after']:>16,}" if fx_res else f"{'error':>16}"
        if tp is not None:
            p += f"{tp_res['params_after']:>16,}" if tp_res else f"{'error':>16}"
        params_lines.append(p)

    print()
    print("\n".join(lines))
    print()
    if tp is not None:
        print("ratio = TP (build + step) / fxprune (analyze + plan + rewrite); "
              "ratio_all = TP (build + step) / fxprune (capture + analyze + plan + rewrite)")
        print("tp_init = constructing the pruner (it builds its own dependency graph); not in either ratio")
        print()
    ph = f"{'model':<16}{'params':>14}{'fxprune 0.5':>16}" + (f"{'TP 0.5':>16}" if tp is not None else "")
    print(ph)
    print("-" * len(ph))
    print("\n".join(params_lines))
    print()
    print(f"load average at end (1/5/15 min): {_load()}")
    for name, who, e in errors:
        print(f"\n{name}: {who} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
