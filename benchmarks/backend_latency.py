"""Latency of ``torch.compile(model, backend="fxprune")`` next to the unpruned model.

For each model (random weights, eval mode, no grad) and batch size it prints the median
milliseconds of one forward pass of

* ``eager``: the original model, no compile;
* ``inductor``: ``torch.compile(model, backend="inductor")``, the original model;
* ``fxprune+eager``: ``torch.compile(model, backend="fxprune", options={..., "then": "eager"})``;
* ``fxprune+inductor``: the same with ``then="inductor"`` (the default),

and the speed-ups of the last three over ``eager``, with the MACs reduction the backend
reported. Compile time is not in the latency (each variant is warmed up first) but is printed.
Every compiled variant uses ``dynamic=False``, so each batch size gets its own static graph;
the fxprune backend re-applies the plan it decided for the first graph to the second.

Usage:
    python benchmarks/backend_latency.py [--models resnet50 mobilenet_v3_large] [--batch 1 32]
        [--size 224] [--ratio 0.5] [--exact] [--iters 5] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch
import torchvision

import fxprune
from _timing import median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v3_large"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--exact", action="store_true", help="prune exact groups only")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    dev = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    print(f"device: {dev}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"input Bx3x{args.size}x{args.size} float32, ratio {args.ratio}, exact={args.exact}, "
          f"median of {args.iters} after {args.warmup} warm-up, milliseconds\n")  # fmt: skip
    head = f"{'model':<20}{'batch':>6}{'eager':>10}{'inductor':>10}{'fx+eager':>10}{'fx+ind':>10}" \
           f"{'ind x':>8}{'fx+e x':>8}{'fx+i x':>8}{'MACs x':>8}{'compile s':>11}"  # fmt: skip
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval().to(device)
        options = {"ratio": args.ratio, "exact": args.exact}
        variants = {
            "inductor": torch.compile(model, backend="inductor", dynamic=False),
            "fx+eager": torch.compile(
                model, backend="fxprune", dynamic=False, options={**options, "then": "eager"}
            ),
            "fx+ind": torch.compile(
                model, backend="fxprune", dynamic=False, options={**options, "then": "inductor"}
            ),
        }
        for b in args.batch:
            x = torch.randn(b, 3, args.size, args.size, device=device)
            compile_s = 0.0
            ms = {"eager": median_ms(model, x, iters=args.iters, warmup=args.warmup, device=device)}
            for key, fn in variants.items():
                t0 = time.perf_counter()
                with torch.no_grad():
                    fn(x)  # compiles this batch size's graph
                compile_s += time.perf_counter() - t0
                ms[key] = median_ms(fn, x, iters=args.iters, warmup=args.warmup, device=device)
            report = fxprune.dynamo.reports()[-1]
            macs_x = report.macs_before / max(report.macs_after, 1)
            row = (f"{name:<20}{b:>6}{ms['eager']:>10.1f}{ms['inductor']:>10.1f}{ms['fx+eager']:>10.1f}"
                   f"{ms['fx+ind']:>10.1f}{ms['eager'] / ms['inductor']:>7.2f}x{ms['eager'] / ms['fx+eager']:>7.2f}x"
                   f"{ms['eager'] / ms['fx+ind']:>7.2f}x{macs_x:>7.2f}x{compile_s:>11.1f}")  # fmt: skip
            print(row, flush=True)
            rows.append(row)
        torch._dynamo.reset()
    print("\n" + head + "\n" + "-" * len(head))
    print("\n".join(rows))
    print(
        "\nx = eager ms / variant ms (higher is faster); MACs x = base / pruned MACs from the backend's report"
    )


if __name__ == "__main__":
    main()
