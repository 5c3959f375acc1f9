"""Prune every torchvision CNN of the core families at a ratio (exact groups only) and print
one row per model: parameters and MACs before/after, masked-equals-pruned error, seconds.

    python benchmarks/cnn_zoo.py --ratio 0.5 --out docs/cnn-zoo.md

benchmarks/zoo.py supersedes this for the zoo report (every torchvision task, a timm sample,
Torch-Pruning side by side, docs/zoo.md); this script stays as the quick table of the 64
core CNNs (``modelzoo.torchvision_cnns()``) behind docs/cnn-zoo.md and ``tests/test_zoo.py``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torchvision
from tabulate import tabulate
from tqdm import tqdm

import fxprune
from fxprune.testing import randomize_
from modelzoo import torchvision_cnns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="*", default=torchvision_cnns())
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="also write a markdown table here")
    args = ap.parse_args()
    rows = []
    for name in tqdm(args.models, desc="models"):
        torch.manual_seed(0)
        model = randomize_(torchvision.models.get_model(name, weights=None).eval())
        size = max(args.size, 299 if name == "inception_v3" else 0)
        x = torch.randn(1, 3, size, size)
        t = time.perf_counter()
        try:
            pruned = fxprune.compile(model, args.ratio, example_inputs=x, exact=True)
            seconds = time.perf_counter() - t
            r = pruned.meta["fxprune.report"]
            v = fxprune.verify(model, pruned, x)
            rows.append([name, f"{r.params_before / 1e6:.2f}", f"{r.params_after / 1e6:.2f}",
                         f"{1 - r.params_after / r.params_before:.1%}", f"{r.macs_before / r.macs_after:.2f}x",
                         len(r.plan.groups), len(r.unsupported), f"{v.max_rel_err:.1e}",
                         "PASS" if v.passed else "FAIL", f"{seconds:.1f}"])  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a failing model is a row, not the end of the run
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", f"ERROR {type(e).__name__}: {e}"[:80], "-"])
    headers = ["model", "params (M)", "after (M)", "fewer params", "MACs", "groups", "no-rule ops",
               "max rel err", "masked==pruned", "compile s"]  # fmt: skip
    table = tabulate(rows, headers=headers, tablefmt="github")
    passed = sum(r[8] == "PASS" for r in rows)
    head = (f"ratio {args.ratio}, exact groups only, input 1x3x{args.size}x{args.size} (inception_v3: 299), "
            f"random weights; torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"{platform.machine()} with {torch.get_num_threads()} threads. {passed}/{len(rows)} pass.")  # fmt: skip
    print(head)
    print(table)
    if args.out:
        args.out.write_text(
            "# torchvision CNN zoo\n\nCommand: `python benchmarks/cnn_zoo.py --out docs/cnn-zoo.md`\n"
            f"(date: {time.strftime('%Y-%m-%d')}).\n\n{head}\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
