"""How fxprune's pass times grow with graph size, next to Torch-Pruning's graph build.

Two synthetic families (random weights, eval mode, batch 1):

* ``resnet``: a stem conv, then N residual blocks ``x + bn(conv(relu(bn(conv(x)))))`` at
  width 16 on a 16x16 input, N from 10 to 2,000;
* ``transformer``: a patch embedding, then L pre-norm blocks (fused qkv linear, reshape into
  4 heads, ``scaled_dot_product_attention``, projection, 4x MLP) at width 64 on 16 tokens,
  L from 2 to 200.

For each model it prints the graph's node count and the seconds of fxprune's ``capture``
(deep copy + symbolic_trace + shape propagation), ``analyze``, ``plan`` (ratio 0.5, L2
magnitude) and ``rewrite``, and, when ``torch_pruning`` is importable, Torch-Pruning's
``DependencyGraph().build_dependency`` on a deep copy (skipped above ``--tp-max-nodes``,
where it gets slow). Then it fits ``time = a * nodes^k`` by least squares in log-log space
over each family and prints the growth exponent ``k`` of ``analyze`` and of ``analyze +
plan + rewrite``: ``k`` near 1 is linear.

Usage:
    python benchmarks/analysis_scaling.py [--resnet 10 50 200 500 1000 2000]
        [--transformer 2 10 50 100 200] [--threads 2] [--tp-max-nodes 6000]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time
import warnings

import torch
import torch.nn.functional as F
from fxprune.passes.dependency import analyze as fx_analyze
from torch import nn

import fxprune


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNetN(nn.Module):
    def __init__(self, n: int, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(c) for _ in range(n)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Layer(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerN(nn.Module):
    def __init__(self, n: int, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, stride=4)
        self.layers = nn.Sequential(*[Layer(d, heads) for _ in range(n)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.layers(x)).mean(1))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(model: nn.Module, x: torch.Tensor, tp, tp_max_nodes: int) -> dict:
    gm, t_capture = _timed(lambda: fxprune.capture(model, x))
    nodes = len(gm.graph.nodes)
    _, t_analyze = _timed(lambda: fx_analyze(gm))
    plan, t_plan = _timed(lambda: fxprune.make_plan(gm, 0.5))
    small, t_rewrite = _timed(lambda: fxprune.rewrite(gm, plan))
    row = {"nodes": nodes, "capture": t_capture, "analyze": t_analyze, "plan": t_plan, "rewrite": t_rewrite,
           "params": fxprune.count_params(model), "params_after": fxprune.count_params(small), "tp_build": None}  # fmt: skip
    if tp is not None and nodes <= tp_max_nodes:
        work = copy.deepcopy(model)
        _, row["tp_build"] = _timed(lambda: tp.DependencyGraph().build_dependency(work, example_inputs=x))
    return row


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnet", nargs="*", type=int, default=[10, 50, 200, 500, 1000, 2000])
    ap.add_argument("--transformer", nargs="*", type=int, default=[2, 10, 50, 100, 200])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tp-max-nodes", type=int, default=6000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
    warnings.filterwarnings("ignore")
    print(f"python {platform.python_version()}, torch {torch.__version__}, fxprune {fxprune.__version__}, "
          f"torch-pruning {'not installed' if tp is None else tp.__version__}")  # fmt: skip
    print(f"machine: {platform.machine()}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    head = f"{'model':<18}{'nodes':>7}{'capture':>9}{'analyze':>9}{'plan':>9}{'rewrite':>9}{'a+p+r':>9}{'tp_build':>10}"
    families = {
        "resnet": [(f"resnet-{n}", ResNetN(n), torch.randn(1, 3, 16, 16)) for n in args.resnet],
        "transformer": [(f"transformer-{n}", TransformerN(n), torch.randn(1, 3, 16, 16)) for n in args.transformer],
    }
    print(head + "\n" + "-" * len(head))
    fits = []
    for fam, models in families.items():
        rows = []
        for name, model, x in models:
            torch.manual_seed(0)
            r = measure(model.eval(), x, tp, args.tp_max_nodes)
            total = r["analyze"] + r["plan"] + r["rewrite"]
            tpb = "-" if r["tp_build"] is None else f"{r['tp_build']:.3f}"
            print(f"{name:<18}{r['nodes']:>7}{r['capture']:>9.3f}{r['analyze']:>9.3f}{r['plan']:>9.3f}"
                  f"{r['rewrite']:>9.3f}{total:>9.3f}{tpb:>10}", flush=True)  # fmt: skip
            rows.append(r)
        if len(rows) >= 2:
            n = [r["nodes"] for r in rows]
            k_a = fit_exponent(n, [r["analyze"] for r in rows])
            k_t = fit_exponent(n, [r["analyze"] + r["plan"] + r["rewrite"] for r in rows])
            tp_rows = [r for r in rows if r["tp_build"] is not None]
            k_tp = fit_exponent([r["nodes"] for r in tp_rows], [r["tp_build"] for r in tp_rows]) if len(tp_rows) >= 2 else None
            fits.append((fam, k_a, k_t, k_tp))
    print("\ngrowth exponent k in time ~ nodes^k (least squares, log-log):")
    for fam, k_a, k_t, k_tp in fits:
        tp_txt = "" if k_tp is None else f", torch-pruning build {k_tp:.2f}"
        print(f"  {fam:<12} analyze {k_a:.2f}, analyze+plan+rewrite {k_t:.2f}{tp_txt}")


if __name__ == "__main__":
    main()
