"""DepGraph's CIFAR-10 / ResNet-56 setting (paper Table 1 and the Table 2 grouping ablation)
on the shared CIFAR-10 JPEG copy, with fxprune (and torch_pruning when it is installed).

Table 1: train ResNet-56, then prune to 2.11x fewer MACs (global ranking, group L2)
  * without sparse learning: prune, fine-tune;
  * with sparse learning: ``fxprune.sparsify(scope="full")`` phase, prune, fine-tune;
  * torch_pruning ``GroupNormPruner`` (when importable): the same two rows, the same recipe.
Table 2: sparse learning with no grouping / conv-only / full grouping (``sparsify`` scope
"none" / "conv" / "full"), each pruned to 3x and 6x and fine-tuned the same way, next to the
same targets without sparse learning. The pruning call (global group L2) is the same for every
fxprune row; only the sparse-learning phase differs.

Recipe (after Torch-Pruning's CIFAR benchmark): SGD momentum 0.9, batch 128, random crop
(pad 4) and flip; training lr 0.1, weight decay 5e-4, decay x0.1 at 60%/75%/90% of the epochs
(plus a 1-epoch linear warm-up); sparse learning lr 0.01, no weight decay, decay at 60%/80%;
fine-tuning lr 0.01, weight decay 5e-4, decay at 60%/80%. Every fine-tune and every
sparse-learning phase sees the same batches (seeded by phase, not by row). ``--reg`` is
fxprune's ``reg``; torch_pruning's ``reg`` is twice it (its update is ``reg * gamma * w``,
ours ``2 * reg * gamma * w``: the same step) and its alpha is ``2**--alpha``. torch_pruning
prunes progressively (``--tp-steps`` steps to 100%, at most 90% of a layer) until the target,
as its CIFAR benchmark does; fxprune keeps at least 10% of every group under global ranking.

    python benchmarks/cifar10_resnet56.py --quick                       # CPU, minutes
    python benchmarks/cifar10_resnet56.py --device cuda                 # full schedule (GPU)
    python benchmarks/cifar10_resnet56.py --device cuda --epochs 200 --sl-epochs 100 \\
        --ft-epochs 100 --base-ckpt runs/resnet56_base.pt

The data is found at ``$FXPRUNE_DATA`` or ``../shared/data`` beside the repository root.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10_jpeg, stratified_subset  # noqa: E402

import fxprune  # noqa: E402

# ----------------------------------------------------------------------------------------------
# model: CIFAR ResNet-56 (He et al. 2016, section 4.2), option-B shortcuts (1x1 conv + BN)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3 stages of ``n`` BasicBlocks with 16/32/64 channels; depth 6n+2 (n=9: ResNet-56)."""

    def __init__(self, n: int = 9, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for i, c in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, c, 2 if (i > 0 and j == 0) else 1))
                cin = c
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet56() -> CifarResNet:
    return CifarResNet(9)


# ----------------------------------------------------------------------------------------------
# data and training


class Data:
    """CIFAR-10 as uint8 tensors on the device; batches are augmented there (crop + flip)."""

    def __init__(self, train_size: int | None, test_size: int | None, device: torch.device, seed: int):
        x, y = load_cifar10_jpeg("train")
        xt, yt = load_cifar10_jpeg("test")
        if train_size and train_size < len(y):
            idx = stratified_subset(y, train_size, seed)
            x, y = x[idx], y[idx]
        if test_size and test_size < len(yt):
            idx = stratified_subset(yt, test_size, seed)
            xt, yt = xt[idx], yt[idx]
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
        self.y = torch.from_numpy(y).to(device)
        self.xt = torch.from_numpy(xt).permute(0, 3, 1, 2).contiguous().to(device)
        self.yt = torch.from_numpy(yt).to(device)
        self.mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
        self.device = device

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self.mean) / self.std

    def example(self) -> torch.Tensor:
        return self.norm(self.xt[:1])

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        padded = F.pad(x.float() / 255, (4, 4, 4, 4))
        i = torch.randint(0, 9, (b,), generator=g).to(x.device)
        j = torch.randint(0, 9, (b,), generator=g).to(x.device)
        ar = torch.arange(32, device=x.device)
        rows, cols = (i[:, None] + ar)[:, :, None], (j[:, None] + ar)[:, None, :]
        out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]
        out = out.permute(0, 3, 1, 2)
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device).view(b, 1, 1, 1)
        out = torch.where(flip, out.flip(3), out)
        return (out - self.mean) / self.std


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: float,
    lr: float,
    wd: float,
    milestones: tuple[float, ...],
    batch_size: int,
    seed: int,
    desc: str,
    after_backward: Callable[[], None] | None = None,
    warmup: float = 0.0,
) -> nn.Module:
    """SGD with momentum 0.9, lr x0.1 at each milestone (fractions of the run), a linear
    warm-up over the first ``warmup`` epochs; trains ``model`` in place."""
    n = len(data.y)
    steps_per_epoch = max(1, n // batch_size)
    steps = max(1, round(epochs * steps_per_epoch))
    warm = round(warmup * steps_per_epoch)
    marks = [round(m * steps) for m in milestones]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm if warm else 1.0) * 0.1 ** sum(s >= m for m in marks)
    )
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1.0, file=sys.stderr)
    perm, k = torch.randperm(n, generator=g), 0
    for _ in bar:
        if k + batch_size > n:  # drop_last, reshuffle
            perm, k = torch.randperm(n, generator=g), 0
        idx = perm[k : k + batch_size].to(data.device)
        k += batch_size
        loss = F.cross_entropy(model(data.augment(data.x[idx], g)), data.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, data: Data, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data.yt), batch):
        correct += int((model(data.norm(data.xt[i : i + batch])).argmax(1) == data.yt[i : i + batch]).sum())
    return correct / len(data.yt)


# ----------------------------------------------------------------------------------------------
# the rows


class Bench:
    def __init__(self, args: argparse.Namespace, data: Data):
        self.args, self.data = args, data
        self.example = data.example()
        self.base: nn.Module | None = None
        self.base_acc = float("nan")
        self.base_macs = 0
        self.base_params = 0
        self.rows: list[list[Any]] = []
        self._sl_cache: dict[str, tuple[nn.Module, float]] = {}

    # -- phases ----------------------------------------------------------------------------------
    def _finetune(self, model: nn.Module, tag: str) -> nn.Module:
        a = self.args
        return train(model, self.data, epochs=a.ft_epochs, lr=a.ft_lr, wd=a.wd, milestones=(0.6, 0.8),
                     batch_size=a.batch_size, seed=_seed(a.seed, "ft"), desc=f"fine-tune {tag}")  # fmt: skip

    def _sl_train(self, model: nn.Module, tag: str, after_backward: Callable[[], None] | None) -> nn.Module:
        a = self.args
        return train(model, self.data, epochs=a.sl_epochs, lr=a.sl_lr, wd=0.0, milestones=(0.6, 0.8),
                     batch_size=a.batch_size, seed=_seed(a.seed, "sl"), desc=f"sparse learning {tag}",
                     after_backward=after_backward)  # fmt: skip

    def train_base(self) -> None:
        a = self.args
        torch.manual_seed(a.seed)
        model = resnet56().to(self.data.device)
        ckpt = Path(a.base_ckpt) if a.base_ckpt else None
        t = time.perf_counter()
        if ckpt is not None and ckpt.exists():
            model.load_state_dict(torch.load(ckpt, map_location=self.data.device))
            tqdm.write(f"loaded the trained base from {ckpt}", file=sys.stderr)
        else:
            train(model, self.data, epochs=a.epochs, lr=a.lr, wd=a.wd, milestones=(0.6, 0.75, 0.9), warmup=a.warmup,
                  batch_size=a.batch_size, seed=_seed(a.seed, "base"), desc="train ResNet-56")  # fmt: skip
            if ckpt is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), ckpt)
        self.base = model
        self.base_acc = accuracy(model, self.data)
        self.base_macs = fxprune.count_macs(model, (self.example,))
        self.base_params = fxprune.count_params(model)
        self.rows.append(["T1", "base (unpruned)", "-", "-", f"{self.base_macs / 1e6:.1f}", "1.00x",
                          f"{self.base_params / 1e6:.3f}", "-", "-", f"{self.base_acc:.2%}", "-",
                          f"{time.perf_counter() - t:.0f}"])  # fmt: skip

    def sl_model(self, scope: str) -> tuple[nn.Module, float]:
        """The base after a sparse-learning phase with ``scope`` (shared by every target)."""
        if scope not in self._sl_cache:
            model = copy.deepcopy(self.base)
            handle = fxprune.sparsify(model, self.example, reg=self.args.reg, alpha=self.args.alpha, scope=scope)
            try:
                self._sl_train(model, scope, None)
            finally:
                handle.remove()
            self._sl_cache[scope] = (model, accuracy(model, self.data))
        return self._sl_cache[scope]

    # -- rows -----------------------------------------------------------------------------------
    def row(self, table: str, method: str, sl: str, target: float, make: Callable[[], tuple]) -> None:
        """``make() -> (pruned module, acc before pruning)``; fine-tunes it and adds the row;
        an error becomes the row's text instead of ending the run."""
        t = time.perf_counter()
        try:
            pruned, before = make()
            macs = fxprune.count_macs(pruned, (self.example,))
            after_prune = accuracy(pruned, self.data)
            self._finetune(pruned, f"{method} {sl} {target}x")
            acc = accuracy(pruned, self.data)
            self.rows.append([table, method, sl, f"{target:g}x", f"{macs / 1e6:.1f}",
                              f"{self.base_macs / macs:.2f}x", f"{fxprune.count_params(pruned) / 1e6:.3f}",
                              f"{before:.2%}", f"{after_prune:.2%}", f"{acc:.2%}",
                              f"{(acc - self.base_acc) * 100:+.2f}", f"{time.perf_counter() - t:.0f}"])  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one failing row is reported, the rest still run
            msg = f"ERROR {type(e).__name__}: {e}".replace("\n", " ")[:100]
            self.rows.append([table, method, sl, f"{target:g}x", msg, "-", "-", "-", "-", "-", "-",
                              f"{time.perf_counter() - t:.0f}"])  # fmt: skip
        tqdm.write(" | ".join(map(str, self.rows[-1])), file=sys.stderr)

    def fx_prune(self, model: nn.Module, target: float) -> nn.Module:
        return fxprune.compile(model, example_inputs=self.example, speedup=target, global_ranking=True)

    def fx_row(self, table: str, scope: str | None, target: float) -> None:
        def make() -> tuple:
            if scope is None:
                return self.fx_prune(self.base, target), self.base_acc
            model, acc = self.sl_model(scope)
            return self.fx_prune(model, target), acc

        self.row(table, "fxprune", "w/o SL" if scope is None else f"SL {scope}", target, make)

    def tp_row(self, table: str, with_sl: bool, target: float) -> None:
        def make() -> tuple:
            import torch_pruning as tp

            model = copy.deepcopy(self.base)
            fc = [m for m in model.modules() if isinstance(m, nn.Linear)]
            pruner = tp.pruner.GroupNormPruner(
                model, self.example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                reg=2 * self.args.reg, alpha=self.args.alpha, global_pruning=True, pruning_ratio=1.0,
                max_pruning_ratio=0.9, iterative_steps=self.args.tp_steps, ignored_layers=fc,
            )  # fmt: skip
            before = self.base_acc
            if with_sl:
                self._sl_train(model, "torch_pruning", lambda: pruner.regularize(model, alpha=2**self.args.alpha))
                before = accuracy(model, self.data)
            model.eval()
            while self.base_macs / fxprune.count_macs(model, (self.example,)) < target:
                if pruner.current_step >= pruner.iterative_steps:
                    raise RuntimeError(f"torch_pruning reached its last step before {target}x")
                pruner.step()
            return model, before

        self.row(table, "torch_pruning", "SL full" if with_sl else "w/o SL", target, make)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke run: 3000 train / 2000 test images, 6+2+2 epochs, lr 0.05, reg 5e-3")  # fmt: skip
    ap.add_argument("--epochs", type=float, default=None, help="base training epochs (200)")
    ap.add_argument("--sl-epochs", type=float, default=None, help="sparse learning epochs (100)")
    ap.add_argument("--ft-epochs", type=float, default=None, help="fine-tuning epochs (100)")
    ap.add_argument("--lr", type=float, default=None, help="base training lr (0.1; --quick 0.05)")
    ap.add_argument("--warmup", type=float, default=1.0, help="linear lr warm-up epochs of the base training")
    ap.add_argument("--sl-lr", type=float, default=0.01)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--reg", type=float, default=None, help="fxprune sparsify reg (2.5e-4; --quick 5e-3)")
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None, help="stratified subset of the 50000")
    ap.add_argument("--test-size", type=int, default=None, help="stratified subset of the 10000")
    ap.add_argument("--speedup", type=float, default=2.11)
    ap.add_argument("--ablation-speedups", type=float, nargs="*", default=[3.0, 6.0])
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--no-torch-pruning", action="store_true")
    ap.add_argument("--tp-steps", type=int, default=400, help="torch_pruning progressive steps to 100%%")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-ckpt", default=None, help="load the trained base from here, or save it there")
    args = ap.parse_args()
    quick = dict(epochs=6, sl_epochs=2, ft_epochs=2, lr=0.05, reg=5e-3, train_size=3000, test_size=2000)
    full = dict(epochs=200, sl_epochs=100, ft_epochs=100, lr=0.1, reg=2.5e-4, train_size=None, test_size=None)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = Data(args.train_size, args.test_size, device, args.seed)
    bench = Bench(args, data)
    bench.train_base()
    try:
        import importlib.metadata

        import torch_pruning  # noqa: F401

        tp_version = importlib.metadata.version("torch-pruning")
    except ImportError:
        tp_version = None
    use_tp = tp_version is not None and not args.no_torch_pruning

    bench.fx_row("T1", None, args.speedup)
    bench.fx_row("T1", "full", args.speedup)
    if use_tp:
        bench.tp_row("T1", False, args.speedup)
        bench.tp_row("T1", True, args.speedup)
    if not args.no_ablation:
        for target in args.ablation_speedups:
            bench.fx_row("T2", None, target)
            for scope in ("none", "conv", "full"):
                bench.fx_row("T2", scope, target)

    headers = ["table", "method", "sparse learning", "target", "MACs (M)", "speedup", "params (M)",
               "acc before prune", "acc after prune", "acc after FT", "delta (pts)", "seconds"]  # fmt: skip
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    head = "\n".join([
        f"ResNet-56 (option-B shortcuts), CIFAR-10 JPEG copy: {len(data.y)} train / {len(data.yt)} test images.",
        f"Epochs: base {args.epochs:g} (lr {args.lr}, warm-up {args.warmup:g}), SL {args.sl_epochs:g} "
        f"(lr {args.sl_lr}, reg {args.reg:g}, alpha {args.alpha:g}), FT {args.ft_epochs:g} (lr {args.ft_lr}); "
        f"batch {args.batch_size}, wd {args.wd:g}, seed {args.seed}.",
        f"fxprune {fxprune.__version__}, torch {torch.__version__}, torch-pruning {tp_version or 'not installed'}; "
        f"device {gpu or args.device} ({platform.machine()}, {torch.get_num_threads()} threads); "
        f"total {time.perf_counter() - t0:.0f} s.",
        "acc: top-1 on the test images; 'before prune' is after sparse learning in SL rows. seconds: the row's "
        "prune + fine-tune, plus its sparse-learning phase where that phase first ran (shared by targets).",
    ])  # fmt: skip
    print(head)
    print(tabulate(bench.rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
