"""Depth pruning (whole residual blocks) against width pruning (channels), and both.

Part ``fmnist``: a small residual CNN (9 identity-shortcut BasicBlocks, 16/32/64 channels) is
trained briefly on Fashion-MNIST (CPU), then pruned to the same MACs target three ways, the
candidates of ``fxprune.compile(mode="joint")`` (``fxprune.depth.joint_candidates``):

* ``width``: channels only (``speedup=``, uniform group L2);
* ``depth``: whole blocks only, lowest linear-CKA score first, the fewest that reach the target;
* ``mixed 0.50``: blocks for about half of the MAC reduction, channels for the rest.

Each is checked masked-equals-pruned, fine-tuned for the same steps on the same batches, and
tested. ``joint`` is the candidate ``mode="joint"`` keeps: the highest CKA to the original's
logits on a calibration set, before any fine-tuning.

Part ``latency``: torchvision ResNet-50, MobileNetV2, ViT-B/16 and ConvNeXt-T (random
weights) lose half of their removable residual blocks (``depth=0.5``, CKA-scored on one
random batch); parameters, MACs and measured CPU latency (``fxprune.latency_ms``, batch 1,
224x224, median) before and after, and the masked-equals-pruned check.

    python benchmarks/depth_vs_width.py --part fmnist         # about 7 min (1 thread, busy 2-core box)
    python benchmarks/depth_vs_width.py --part latency        # a few minutes
    python benchmarks/depth_vs_width.py --threads 2           # both parts, 2 torch threads

The data is found at ``$FXPRUNE_DATA`` or ``../shared/data`` beside the repository root.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
import torch.nn.functional as F
import torchvision
from tabulate import tabulate
from torch import nn

import fxprune
from _train import accuracy, fmnist_tensors, train
from fxprune.depth import joint_candidates


# ----------------------------------------------------------------------------------------------
# model
class Block(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _down(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ResCNN(nn.Module):
    """28x28x1 -> 16 @28 (3 blocks) -> 32 @14 (3 blocks) -> 64 @7 (3 blocks) -> 10 logits."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, w in enumerate(widths):
            layers.append(_down(cin, w, 1 if i == 0 else 2))
            layers.extend(Block(w) for _ in range(blocks))
            cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# ----------------------------------------------------------------------------------------------
# data and training
def _m(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


# ----------------------------------------------------------------------------------------------
def fmnist(args: argparse.Namespace) -> None:
    t0 = time.time()
    xtr, ytr = fmnist_tensors("train", args.train_size, args.seed)
    xte, yte = fmnist_tensors("test", args.test_size, args.seed)
    torch.manual_seed(args.seed)
    model = ResCNN()
    train(model, xtr, ytr, args.steps, args.lr, seed=args.seed)
    base_acc = accuracy(model, xte, yte)
    t_train = time.time() - t0
    example = xtr[:1]
    calib = [xtr[-args.calib:]]  # CKA data: the last training images, no labels needed
    t1 = time.time()
    rows = joint_candidates(model, example, args.speedup, calib)
    t_cands = time.time() - t1
    base_macs, base_params = fxprune.count_macs(model, (example,)), fxprune.count_params(model)
    table = [["base (unpruned)", "-", "-", "-", _m(base_macs), "1.00x", _m(base_params), "-", "-", "-", f"{base_acc:.2%}", "-"]]
    best = max((r for r in rows if r["model"] is not None), key=lambda r: r["cka"])
    for r in rows:
        m = r["model"]
        if m is None:
            table.append([r["candidate"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", r["note"]])
            continue
        check = fxprune.verify(model, m, example, plan=m.meta["fxprune.report"].plan)
        pruned_acc = accuracy(m, xte, yte)
        m = copy.deepcopy(m)
        train(m, xtr, ytr, args.ft_steps, args.ft_lr, seed=args.seed + 1)  # same batches for every row
        table.append([
            r["candidate"] + (" (= joint)" if r is best else ""), r["blocks removed"], r["width ratio"],
            f"{r['cka']:.4f}", _m(r["MACs"]), f"{r['speedup']:.2f}x", _m(r["params"]),
            "PASS" if check.passed else "FAIL", f"{check.max_rel_err:.1e}", f"{pruned_acc:.2%}",
            f"{accuracy(m, xte, yte):.2%}", f"{accuracy(m, xte, yte) - base_acc:+.2%}",
        ])  # fmt: skip
    print(f"Fashion-MNIST, ResCNN (9 residual blocks): {args.train_size} train / {args.test_size} test images; "
          f"base {args.steps} steps (lr {args.lr}), fine-tune {args.ft_steps} steps (lr {args.ft_lr}), batch 128, "
          f"seed {args.seed}; target {args.speedup}x MACs; CKA on {args.calib} training images.")  # fmt: skip
    print(f"base training {t_train:.0f} s, candidates {t_cands:.0f} s, total {time.time() - t0:.0f} s")
    print(tabulate(table, headers=["candidate", "blocks removed", "width ratio", "CKA to base", "MACs", "speedup",
                                   "params", "masked check", "max rel err", "acc after prune", "acc after FT",
                                   "delta vs base"], tablefmt="github", disable_numparse=True))  # fmt: skip


def latency(args: argparse.Namespace) -> None:
    rows = []
    for name in ("resnet50", "mobilenet_v2", "vit_b_16", "convnext_tiny"):
        t0 = time.time()
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
        with torch.no_grad():  # torchvision zero-initializes some heads: give every weight a value
            for p in model.parameters():
                if p.dim() >= 2 and not p.any():
                    p.normal_(0, 0.02)
        x = torch.randn(1, 3, 224, 224)
        data = [torch.randn(2, 3, 224, 224)]
        small = fxprune.compile(model, example_inputs=x, depth=0.5, data=data, verify=True)
        rep = small.meta["fxprune.report"]
        gm = fxprune.capture(model, x)
        before = fxprune.latency_ms(gm, (x,), warmup=3, iters=args.iters)
        after = fxprune.latency_ms(small, (x,), warmup=3, iters=args.iters)
        n_pool = len(fxprune.depth.removable_blocks(gm))
        rows.append([
            name, f"{len(rep.plan.removed_blocks)} / {n_pool}", _m(rep.params_before), _m(rep.params_after),
            _m(rep.macs_before), _m(rep.macs_after), f"{before:.1f}", f"{after:.1f}", f"{before / after:.2f}x",
            "PASS" if rep.verification.passed else "FAIL", f"{rep.verification.max_rel_err:.1e}", f"{time.time() - t0:.0f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    print(f"depth=0.5 (CKA on one random batch of 2), random weights, latency: median of {args.iters} runs, "
          f"batch 1, 224x224, eval, {torch.get_num_threads()} thread(s)")
    print(tabulate(rows, headers=["model", "blocks removed", "params before", "params after", "MACs before",
                                  "MACs after", "ms before", "ms after", "latency speedup", "masked check",
                                  "max rel err", "seconds"], tablefmt="github", disable_numparse=True))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "fmnist", "latency"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: polite on a shared machine)")
    ap.add_argument("--train-size", type=int, default=12000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=400, help="base training steps (batch 128)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--ft-steps", type=int, default=100, help="fine-tuning steps for every candidate")
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--calib", type=int, default=256, help="images for the CKA scores and selection")
    ap.add_argument("--iters", type=int, default=10, help="timed runs per model (latency part)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"fxprune {fxprune.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"device cpu ({platform.machine()}, {torch.get_num_threads()} threads), cuda available: {torch.cuda.is_available()}")  # fmt: skip
    if args.part in ("all", "fmnist"):
        fmnist(args)
    if args.part in ("all", "latency"):
        latency(args)


if __name__ == "__main__":
    main()
