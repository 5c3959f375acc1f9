"""Does latency follow MACs? A pruning-ratio sweep with measured latency.

For each model (random weights, eval mode) and each ratio in the sweep it prunes with
``fxprune.compile(model, ratio, round_to=...)`` and measures MACs (torch.utils.flop_counter),
parameters and the median latency of one forward pass:

* on CPU at batch 1 and 32 (float32, ``torch.set_num_threads`` fixed and printed), eager;
* on a GPU when one is available (batch 64, bf16, channels_last for CNNs), eager and
  ``torch.compile`` (Inductor).

It prints one row per (model, ratio) with MACs and latency speed-ups over ratio 0, writes the
rows as JSON lines (``--out``) and, with matplotlib, a plot of latency speed-up against
MACs speed-up (``--plot``): points on the diagonal mean latency follows MACs exactly.

Usage:
    python benchmarks/latency.py [--models resnet50 mobilenet_v2 vit_b_16]
        [--ratios 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9] [--round-to 8|auto] [--size 224]
        [--batch 1 32] [--iters 5] [--rounds 3] [--threads 2] [--device cpu|cuda]
        [--out docs/latency.jsonl] [--plot docs/latency.png]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import warnings
from functools import partial

import torch
import torchvision

import fxprune
from fxprune.measure import interleaved


def variants(model: torch.nn.Module, device: str, is_cnn: bool):
    """(label, callable, input transform) for each way the model is run on ``device``."""
    if device == "cpu":
        yield "eager", model, lambda x: x
        return
    m = copy.deepcopy(model).to(device=device, dtype=torch.bfloat16)  # never the sweep's own model
    fmt = torch.channels_last if is_cnn else torch.contiguous_format
    m = m.to(memory_format=fmt)

    def cast(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=torch.bfloat16).contiguous(memory_format=fmt)

    yield "eager", m, cast
    yield "inductor", torch.compile(m, dynamic=False), cast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "vit_b_16"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--round-to", type=lambda v: v if v == "auto" else int(v), default=8,
                    help="an int, or 'auto' (widths measured on this device at the first --batch, cached)")  # fmt: skip
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", nargs="+", type=int, default=None, help="default: 1 32 on CPU, 64 on GPU")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of base and pruned timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON lines file for the rows")
    ap.add_argument("--plot", default=None, help="PNG of latency speed-up vs MACs speed-up (needs matplotlib)")
    args = ap.parse_args()
    if 0 not in args.ratios:
        args.ratios = [0.0, *args.ratios]  # speed-ups are measured against ratio 0
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = args.device
    batches = args.batch or ([64] if device == "cuda" else [1, 32])
    dev = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"device: {dev}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    dtype = "bf16, channels_last for CNNs" if device == "cuda" else "float32"
    print(f"input Bx3x{args.size}x{args.size} {dtype}, round_to={args.round_to}, "
          f"median of {args.iters} after {args.warmup} warm-up\n")  # fmt: skip
    head = f"{'model':<14}{'ratio':>6}{'params':>9}{'MACs':>9}{'MACs x':>8}  " + "  ".join(
        f"{'b' + str(b) + ' ' + v:>16}" for b in batches for v in (["eager", "inductor"] if device == "cuda" else ["eager"])
    )
    print(head + "\n" + "-" * len(head))
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        probe = torch.randn(1, 3, args.size, args.size)
        # round_to="auto" measures on the model's device and dtype, at the example's shapes:
        # the first batch, on the benchmark's device (bf16 on a GPU, as the timed variants)
        example = torch.randn(batches[0], 3, args.size, args.size) if args.round_to == "auto" else probe
        target = model
        is_cnn = not name.startswith(("vit", "swin", "maxvit"))
        if args.round_to == "auto" and device == "cuda":  # measured at the timed dtype and layout
            fmt = torch.channels_last if is_cnn else torch.contiguous_format
            target = copy.deepcopy(model).to(device=device, dtype=torch.bfloat16, memory_format=fmt)
            example = example.to(device=device, dtype=torch.bfloat16).contiguous(memory_format=fmt)
        base_macs = fxprune.count_macs(model, (probe,))
        inputs = {b: torch.randn(b, 3, args.size, args.size) for b in batches}
        base_runs = {b: list(variants(model, device, is_cnn)) for b in batches}
        for r in args.ratios:
            small = model if r == 0 else fxprune.compile(target, r, example_inputs=example, round_to=args.round_to)
            small = small.to(device="cpu", dtype=torch.float32)  # counted on the CPU; variants() moves a copy
            macs, params = fxprune.count_macs(small, (probe,)), fxprune.count_params(small)
            row = {"model": name, "ratio": r, "params": params, "macs": macs, "device": dev, "ms": {},
                   "base_ms": {}, "speedup": {}, "macs_x": base_macs / macs}  # fmt: skip
            for b in batches:
                for (label, fn0, cast), (_, fn, _) in zip(base_runs[b], variants(small, device, is_cnn)):
                    x = cast(inputs[b])
                    key = f"b{b} {label}"
                    # interleaved: the base and the pruned model take turns, so drift in the
                    # machine's speed (other load, clocks) hits both alike; on CUDA each call is
                    # timed by CUDA events from a synchronized device (fxprune.measure)
                    with torch.no_grad():
                        t0, t1 = interleaved([partial(fn0, x), partial(fn, x)], device, rounds=args.rounds,
                                             iters=args.iters, warmup=0, round_warmup=args.warmup)  # fmt: skip
                    row["base_ms"][key], row["ms"][key] = statistics.median(t0), statistics.median(t1)
                    row["speedup"][key] = row["base_ms"][key] / row["ms"][key]
            hw = (small.meta.get("fxprune.report").plan.meta.get("round_to") if r else None) or {}
            if hw:
                row["round_to_auto"] = {"step": hw["step"], "kept_whole": len(hw["kept_whole"]),
                                        "end_to_end_ms": hw.get("end_to_end_ms"), "gave_up": "gave_up" in hw}
            rows.append(row)
            cells = "  ".join(f"{v:>9.1f} {row['speedup'][k]:>5.2f}x" for k, v in row["ms"].items())
            print(f"{name:<14}{r:>6.2f}{params / 1e6:>8.2f}M{macs / 1e9:>8.2f}G{row['macs_x']:>7.2f}x  {cells}", flush=True)
        torch._dynamo.reset()
    print("\ncells: median ms of the pruned model and its speed-up over ratio 0 (same batch and variant),\n"
          f"the two timed in {args.rounds} interleaved rounds of {args.iters} (median of the rounds' medians)")
    if args.out:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {args.out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


def plot(rows: list[dict], path: str) -> None:
    """Two panels, one line per (model, batch, variant): latency speed-up against MACs
    speed-up (on the diagonal, latency follows MACs exactly), and latency speed-up against
    the ratio (below the line at 1, the pruned model is slower than the original)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    top = max(r["macs_x"] for r in rows)
    ax.plot([1, top], [1, top], ":", color="gray", label="latency follows MACs")
    bx.axhline(1.0, color="gray", ls=":", label="as fast as the original")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for key in mine[0]["speedup"]:
            ys = [r["speedup"][key] for r in mine]
            ax.plot([r["macs_x"] for r in mine], ys, "o-", ms=3, label=f"{model} {key}")
            bx.plot([r["ratio"] for r in mine], ys, "o-", ms=3, label=f"{model} {key}")
    ax.set_xlabel("MACs speed-up (base / pruned)")
    ax.set_ylabel("latency speed-up (base / pruned)")
    bx.set_xlabel("ratio")
    bx.set_ylabel("latency speed-up (base / pruned)")
    bx.set_yscale("log")
    ax.set_title(f"fxprune ratio sweep, {rows[0]['device']}")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main_plot(argv: list[str]) -> None:
    """``latency.py --plot-only OUT.png ROWS.jsonl[:label] ...``: one plot of several sweeps
    (e.g. round_to=8 against auto), each model labelled with its sweep's label."""
    out, specs = argv[0], argv[1:]
    rows = []
    for spec in specs:
        path, _, label = spec.partition(":")
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                row["model"] = f"{row['model']} {label}".strip()
                rows.append(row)
    plot(rows, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--plot-only"]:
        main_plot(sys.argv[2:])
    else:
        main()
