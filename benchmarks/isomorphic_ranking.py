"""Isomorphic ranking against plain global ranking and uniform allocation, at the same MACs.

A small CIFAR-style ResNet (ResNet-20 layout: a 3x3 stem, then 3 stages x 3 BasicBlocks with
16/32/64 channels, option-B 1x1 conv + BN shortcuts where the shape changes, 1 input channel)
is trained briefly on Fashion-MNIST (CPU; images average-pooled to 14x14 to save time). Inside
each stage the blocks that keep the shape are isomorphic: their ``conv1`` output channels
form groups with equal ``fxprune.plan.signatures`` (stage 1: 3 groups; stages 2 and 3: 2
each, the first block of those stages has a stride-2 conv1 with other input channels).

Each base model is pruned to the same MACs target three ways, all with group L2 importance
(default targets 2.0x, and 2.11x, DepGraph's ResNet-56 target, where all three land within
0.3% of the same MACs: see below):

* ``uniform``: ``compile(speedup=s, global_ranking=False)``, the same fraction of every group;
* ``global``: ``compile(speedup=s, global_ranking=True)``, all groups ranked together;
* ``isomorphic``: ``compile(speedup=s, global_ranking="isomorphic")``, ranked only among
  groups of the same structure (Isomorphic Pruning, Fang et al., ECCV 2024).

Each pruned model is checked masked-equals-pruned (``fxprune.verify``), tested, fine-tuned
for the same steps on the same batches, and tested again. The whole thing is repeated for
several base seeds (the seed sets the base model's initialization and the batch order of
base training and of fine-tuning; the train and test subsets are the same for every seed).

MACs granularity: blocks of one stage cost the same per channel, so under isomorphic ranking
a stage's blocks together lose exactly the overall ratio and the MACs depend on the ratio
only, not on the weights; the stem/stage-1 width (16 channels at full resolution) moves the
MACs in steps of several percent. Near 2x the reachable speedups are 1.952x, 1.958x, 2.113x
(isomorphic) and 1.990x, 2.023x, 2.078x, 2.113x (uniform); ``compile`` returns the closest
plan it finds, so at 2.0x isomorphic keeps about 1.6% more MACs than uniform, and at 2.11x
the three land within 0.3% of each other. Every row prints its MACs.

    python benchmarks/isomorphic_ranking.py --threads 1     # about 9 min on a busy 2-core CPU

The data is found at ``$FXPRUNE_DATA`` or ``../shared/data`` beside the repository root.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

import tabulate as tabulate_mod
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

import fxprune
from _train import accuracy, fmnist_tensors, train

METHODS = (("uniform", False), ("global", True), ("isomorphic", "isomorphic"))


# ----------------------------------------------------------------------------------------------
# model
class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); option B: 1x1 conv + BN shortcut
    where the stride or the width changes, identity otherwise."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2), 1 input channel, 10 classes."""

    def __init__(self, n: int = 3, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0])
        cin, stages = widths[0], []
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else w, w, 2 if i > 0 and j == 0 else 1)
                                          for j in range(n)]))  # fmt: skip
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


# ----------------------------------------------------------------------------------------------
# data and training
def _widths(small: torch.fx.GraphModule) -> str:
    """Kept output channels: the stem, then for each stage every block's conv1 and, in
    brackets, the stage's residual width (its blocks' conv2): 'stem | a/b/c (w) | ...'."""
    mods = dict(small.named_modules())
    out = [str(mods["conv1"].out_channels)]
    for stage in ("layer1", "layer2", "layer3"):
        blocks = [k[: -len(".conv1")] for k in mods if k.startswith(stage + ".") and k.endswith(".conv1")]
        c1 = "/".join(str(mods[f"{b}.conv1"].out_channels) for b in blocks)
        out.append(f"{c1} ({mods[f'{blocks[0]}.conv2'].out_channels})")
    return " | ".join(out)


def _ms(vals: list[float], scale: float = 100.0, fmt: str = "{:.2f}") -> str:
    """mean ± sample std (ddof 1) of ``vals`` x ``scale``."""
    v = [x * scale for x in vals]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{fmt.format(statistics.mean(v))} ± {fmt.format(sd)}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="base seeds (init + batch order)")
    ap.add_argument("--train-size", type=int, default=12000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--pool", type=int, default=2, help="average-pool the 28x28 images by this factor (2: 14x14)")
    ap.add_argument("--blocks", type=int, default=3, help="BasicBlocks per stage (3: ResNet-20)")
    ap.add_argument("--steps", type=int, default=300, help="base training steps")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--ft-steps", type=int, default=80, help="fine-tuning steps (every method, same batches)")
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--speedup", type=float, nargs="+", default=[2.0, 2.11],
                    help="MACs targets (base MACs / pruned MACs); each is run on the same base models")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    xtr, ytr = fmnist_tensors("train", args.train_size, pool=args.pool)
    xte, yte = fmnist_tensors("test", args.test_size, pool=args.pool)
    example = xtr[:1]
    keys = [(target, name) for target in args.speedup for name, _ in METHODS]
    fields = ("macs", "params", "speedup", "pruned", "ft", "delta", "prune_s", "ft_s", "check")
    per: dict[tuple[float, str], dict[str, list]] = {k: {f: [] for f in fields} for k in keys}
    rows: list[list] = []
    base_accs, base_secs, widths = [], [], {}
    for seed in args.seeds:
        t = time.time()
        torch.manual_seed(seed)
        model = ResNet(args.blocks)
        train(model, xtr, ytr, args.steps, args.lr, seed=seed, batch=args.batch)
        base_acc = accuracy(model, xte, yte)
        base_accs.append(base_acc)
        base_secs.append(time.time() - t)
        base_macs, base_params = fxprune.count_macs(model, (example,)), fxprune.count_params(model)
        _log(f"seed {seed}: base {base_acc:.2%} in {base_secs[-1]:.0f} s")
        rows.append([seed, "-", "base (unpruned)", f"{base_macs / 1e6:.3f}", "1.000x", f"{base_params / 1e3:.1f}",
                     "-", "-", f"{base_acc:.2%}", "-", "-", f"{base_secs[-1]:.0f}"])  # fmt: skip
        for target, name in keys:
            gr = dict(METHODS)[name]
            t = time.time()
            small = fxprune.compile(model, speedup=target, example_inputs=example, global_ranking=gr)
            prune_s = time.time() - t
            check = fxprune.verify(model, small, example, plan=small.meta["fxprune.report"].plan)
            macs, params = fxprune.count_macs(small, (example,)), fxprune.count_params(small)
            pruned_acc = accuracy(small, xte, yte)
            t = time.time()
            tuned = copy.deepcopy(small)
            train(tuned, xtr, ytr, args.ft_steps, args.ft_lr, seed=1000 + seed, batch=args.batch)  # same batches
            ft_s = time.time() - t
            ft_acc = accuracy(tuned, xte, yte)
            if seed == args.seeds[0]:
                widths[(target, name)] = _widths(small)
            d = per[(target, name)]
            for k, v in zip(fields, (macs, params, base_macs / macs, pruned_acc, ft_acc, ft_acc - base_acc, prune_s,
                                     ft_s, check)):  # fmt: skip
                d[k].append(v)
            rows.append([seed, f"{target:g}x", name, f"{macs / 1e6:.3f}", f"{base_macs / macs:.3f}x",
                         f"{params / 1e3:.1f}", "PASS" if check.passed else "FAIL", f"{pruned_acc:.2%}",
                         f"{ft_acc:.2%}", f"{(ft_acc - base_acc) * 100:+.2f}", f"{prune_s:.1f}", f"{ft_s:.0f}"])  # fmt: skip
            _log(f"seed {seed} {target:g}x {name}: {base_macs / macs:.3f}x, {check}, after prune {pruned_acc:.2%}, "
                 f"after FT {ft_acc:.2%} ({prune_s:.1f} s + {ft_s:.0f} s)")  # fmt: skip

    summary = [["-", "base (unpruned)", f"{base_macs / 1e6:.3f}", "1.000x", f"{base_params / 1e3:.1f}", "-", "-",
                _ms(base_accs), "-", "-", _ms(base_secs, 1, "{:.0f}")]]  # fmt: skip
    for target, name in keys:
        d = per[(target, name)]
        n_pass = sum(c.passed for c in d["check"])
        summary.append([
            f"{target:g}x", name, _ms(d["macs"], 1e-6, "{:.3f}"), _ms(d["speedup"], 1, "{:.3f}") + "x",
            _ms(d["params"], 1e-3, "{:.1f}"), f"{n_pass}/{len(d['check'])} PASS", _ms(d["pruned"]), _ms(d["ft"]),
            _ms(d["delta"]), _ms(d["prune_s"], 1, "{:.1f}"), _ms(d["ft_s"], 1, "{:.0f}"),
        ])  # fmt: skip
    pairs = []
    for target in args.speedup:
        for a, b in (("isomorphic", "uniform"), ("isomorphic", "global"), ("global", "uniform")):
            for k, what in (("pruned", "after prune"), ("ft", "after FT")):
                diffs = [x - y for x, y in zip(per[(target, a)][k], per[(target, b)][k])]
                macs = statistics.mean(per[(target, a)]["macs"]) / statistics.mean(per[(target, b)]["macs"]) - 1
                pairs.append([f"{target:g}x", f"{a} - {b}", what, _ms(diffs), f"{sum(x > 0 for x in diffs)}/{len(diffs)}",
                              " ".join(f"{x * 100:+.2f}" for x in diffs), f"{macs:+.1%}"])  # fmt: skip

    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: .venv/bin/python benchmarks/isomorphic_ranking.py {argv}".rstrip())
    print(f"fxprune {fxprune.__version__}, torch {torch.__version__}, tabulate {tabulate_mod.__version__}, "
          f"Python {platform.python_version()}; {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, cuda available: {torch.cuda.is_available()}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    print(f"Fashion-MNIST {28 // args.pool}x{28 // args.pool} (28x28 avg-pooled by {args.pool}), {args.train_size} "
          f"train / {args.test_size} test images (stratified, fixed); ResNet-{6 * args.blocks + 2} (3 stages x "
          f"{args.blocks} BasicBlocks, 16/32/64, option-B shortcuts); base {args.steps} steps (lr {args.lr}), "
          f"fine-tune {args.ft_steps} steps (lr {args.ft_lr}), SGD momentum 0.9, wd 5e-4, cosine, batch "
          f"{args.batch}; targets {', '.join(f'{s:g}x' for s in args.speedup)} MACs (compile(speedup=...)), group "
          f"L2; base seeds {' '.join(map(str, args.seeds))} (init and batch order; fine-tune batches seeded "
          "1000 + seed, the same for every method).")  # fmt: skip
    print(f"total {time.time() - t0:.0f} s")
    print()
    print(f"Per method, mean ± std over {len(args.seeds)} base seeds (sample std; acc in %, delta in points vs "
          "that seed's base; seconds: compile (importance + MAC-target search + rewrite) and fine-tune):")
    print(tabulate(summary, headers=["target", "method", "MACs (M)", "speedup", "params (K)", "masked check",
                                     "acc after prune", "acc after FT", "delta after FT", "prune s", "FT s"],
                   tablefmt="github", disable_numparse=True))  # fmt: skip
    print()
    print("Paired differences (same base model and fine-tune batches), points: mean ± std, seeds where the first "
          "is higher, each seed; and how many more MACs the first has:")
    print(tabulate(pairs, headers=["target", "pair", "when", "difference", "first higher", "per seed",
                                   "MACs, first vs second"], tablefmt="github", disable_numparse=True))  # fmt: skip
    print()
    print(f"Kept channels, seed {args.seeds[0]}: stem | for each stage, every block's conv1 output "
          "(the stage's residual width):")
    for target, name in keys:
        print(f"  {f'{target:g}x':<6} {name:<10} {widths[(target, name)]}")
    print()
    print("Per seed:")
    print(tabulate(rows, headers=["seed", "target", "method", "MACs (M)", "speedup", "params (K)", "masked check",
                                  "acc after prune", "acc after FT", "delta (pts)", "prune s", "FT s"],
                   tablefmt="github", disable_numparse=True))  # fmt: skip


if __name__ == "__main__":
    main()
