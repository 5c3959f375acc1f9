"""DepGraph's CIFAR-10 / ResNet-56 setting (paper Table 1 and the Table 2 grouping ablation)
on the shared CIFAR-10 JPEG copy, with fxprune (and torch_pruning when it is installed).

Table 1: train ResNet-56, then prune to 2.11x fewer MACs (global ranking, group L2)
  * without sparse learning: prune, fine-tune;
  * with sparse learning: ``fxprune.sparsify(scope="full")`` phase, prune, fine-tune;
  * torch_pruning ``GroupNormPruner`` (when importable): the same recipe (its sparse learning
    row; ``--tp-rows both`` adds its row without sparse learning).
Table 2 (``--ablation``): sparse learning with no grouping / conv-only / full grouping
(``sparsify`` scope "none" / "conv" / "full"), each pruned to 3x and 6x and fine-tuned the same
way, next to the same targets without sparse learning. The pruning call (global group L2) is the
same for every fxprune row; only the sparse-learning phase differs.

Two recipes:

* ``--recipe fast`` (default; the GPU run): the whole experiment fits in ``--budget-s`` seconds
  of wall clock (default 320, data decoding and evaluation included). CIFAR-10 is decoded once
  into a uint8 tensor on the device; random crop (pad 4) and flip run there; channels_last,
  bf16 autocast (on CUDA), batch 512, SGD nesterov momentum 0.9, label smoothing 0.1, weight
  decay 5e-4 (none while sparse learning), one-cycle lr (linear warm-up over 15% of the base
  run / 5% of the others, then linear to 0), peak lr 0.4 (base) and 0.04 (sparse learning and
  fine-tuning: the paper's 0.01 at batch 128, scaled linearly). The schedule is sized to the
  budget: a few timed steps of every kind of phase (base, each sparse learning, a pruned model)
  and of an evaluation come first; then the base gets ``--base-frac`` of the training time and
  the rows share the rest, every fine-tune the same number of epochs and every sparse-learning
  phase ``--sl-ratio`` times that. After the base the rest is re-planned on the time actually
  left. A row whose predicted end passes the budget plus ``--slack`` is skipped, and any phase
  still running then stops (the row says "truncated"). ``reg`` is scaled so that
  ``reg * sum(lr)`` over the sparse-learning phase equals the paper's (2.5e-4 over 100 epochs of
  lr 0.01 at batch 128, decayed x0.1 at 60%/80%): the same total group shrinkage in fewer steps.
  The clock starts when ``main()`` does (after the Python imports). No ``torch.compile`` unless
  ``--compile``: every pruned model has new shapes and would compile again (tens of seconds each
  of a 320 s budget), while eager bf16 channels_last needs no warm-up; cuDNN autotunes only the
  unpruned model's few conv shapes. fxprune prunes and analyses on the device, and on a CPU copy
  if that raises there (the row's schedule names the error under "cpu_fallback").
* ``--recipe classic`` (``--quick`` uses it): after Torch-Pruning's CIFAR benchmark: fp32,
  batch 128, SGD momentum 0.9; training lr 0.1, weight decay 5e-4, decay x0.1 at 60%/75%/90% of
  the epochs (plus a 1-epoch linear warm-up); sparse learning lr 0.01, no weight decay, decay
  at 60%/80%; fine-tuning lr 0.01, weight decay 5e-4, decay at 60%/80%; epochs 200/100/100.

Every fine-tune and every sparse-learning phase sees the same batches (seeded by phase, not by
row). ``--reg`` is fxprune's ``reg``; torch_pruning's ``reg`` is twice it (its update is
``reg * gamma * w``, ours ``2 * reg * gamma * w``: the same step) and its alpha is
``2**--alpha``. torch_pruning prunes progressively (``--tp-steps`` steps to 100%, at most 90% of
a layer) until the target, as its CIFAR benchmark does; fxprune keeps at least 10% of every
group under global ranking.

    python benchmarks/cifar10_resnet56.py --gpu --out runs/cifar           # GPU, 320 s in all
    python benchmarks/cifar10_resnet56.py --smoke --out /tmp/smoke         # CPU, the same code, ~20 s
    python benchmarks/cifar10_resnet56.py --quick                          # CPU, classic recipe, minutes
    python benchmarks/cifar10_resnet56.py --recipe classic --device cuda --ablation \\
        --base-ckpt runs/resnet56_base.pt                                  # the paper's 200/100/100 epochs

``--out DIR`` writes ``DIR/cifar_rows.jsonl``: a header line (device, versions, arguments), the
plan, one line per row as soon as it is done, and a summary (the time of every phase). The
data is found at ``$FXPRUNE_DATA`` or ``../shared/data`` beside the repository root.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from _checkout import import_fxprune_from_checkout
from _data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    cifar10_jpeg_labels,
    load_cifar10_jpeg,
    stratified_subset,
)

import_fxprune_from_checkout()
import fxprune  # noqa: E402

# The paper's sparse-learning phase (Torch-Pruning's CIFAR benchmark): 100 epochs of 390 steps
# (batch 128), lr 0.01 decayed x0.1 at 60% and 80%, fxprune reg 2.5e-4 (its reg 5e-4).
PAPER_SL_REG = 2.5e-4
PAPER_SL_LR_SUM = 100 * 390 * (0.6 * 0.01 + 0.2 * 0.001 + 0.2 * 0.0001)
PAPER_ACC = {"base": 93.53, "SL": 93.77, "w/o SL": 93.46}  # Table 1, ResNet-56 at 2.11x

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

    def __init__(
        self,
        train_size: int | None,
        test_size: int | None,
        device: torch.device,
        seed: int,
        decoder: str = "pil",
        channels_last: bool = False,
    ):
        def pick(split: str, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            labels = cifar10_jpeg_labels(split)
            idx = stratified_subset(labels, size, seed) if size and size < len(labels) else None
            x, y = load_cifar10_jpeg(split, idx, decoder)
            return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).to(device)

        self.x, self.y = pick("train", train_size)
        self.xt, self.yt = pick("test", test_size)
        self.mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def example(self) -> torch.Tensor:
        return ((self.xt[:1].float() / 255 - self.mean) / self.std).contiguous()

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random crop of the 4-pixel zero-padded image and a random horizontal flip; ``g``
        is a generator on the data's device (no host round trip, no sync)."""
        b, dev = x.shape[0], x.device
        padded = F.pad(x, (4, 4, 4, 4))
        i = torch.randint(0, 9, (b,), generator=g, device=dev)
        j = torch.randint(0, 9, (b,), generator=g, device=dev)
        ar = torch.arange(32, device=dev)
        rows, cols = (i[:, None] + ar)[:, :, None], (j[:, None] + ar)[:, None, :]
        out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=dev)[:, None, None], rows, cols]
        out = out.permute(0, 3, 1, 2)
        flip = (torch.rand(b, generator=g, device=dev) < 0.5).view(b, 1, 1, 1)
        return self.norm(torch.where(flip, out.flip(3), out))


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def lr_factor(kind: str, steps: int, warmup_steps: int, milestones: tuple[float, ...] = ()) -> Callable[[int], float]:
    """The lr multiplier of step ``s``. "onecycle": linear from 1/w up to 1 over ``warmup_steps``
    = w steps, then linear down to 0 at ``steps``; "step": a linear warm-up, then x0.1 at each
    milestone (fractions of ``steps``)."""
    if kind == "onecycle":
        w = max(1, warmup_steps)
        return lambda s: (s + 1) / w if s < w else max(0.0, (steps - s) / max(1, steps - w))
    marks = [round(m * steps) for m in milestones]
    return lambda s: min(1.0, (s + 1) / warmup_steps if warmup_steps else 1.0) * 0.1 ** sum(s >= m for m in marks)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainResult:
    steps: int  # steps run
    planned: int
    seconds: float
    loss: float  # mean training loss over the last logged interval
    truncated: bool


def train(
    model: nn.Module,
    data: Data,
    *,
    steps: int,
    lr: float,
    wd: float,
    factor: Callable[[int], float],
    batch_size: int,
    seed: int,
    desc: str,
    after_backward: Callable[[], None] | None = None,
    nesterov: bool = False,
    label_smoothing: float = 0.0,
    amp: bool = False,
    compile: bool = False,
    deadline: float | None = None,
    log: Callable[[str], None] | None = None,
    log_points: int = 0,
) -> TrainResult:
    """SGD with momentum 0.9 for ``steps`` steps, lr ``lr * factor(step)``; trains ``model`` in
    place. No host-device sync inside the loop except at the ``log_points`` progress lines.
    Stops early (``truncated``) once ``time.perf_counter()`` passes ``deadline``."""
    dev = data.device
    n = len(data.y)
    bs = min(batch_size, n)
    g = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, nesterov=nesterov, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    fwd = torch.compile(model) if compile else model
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
    model.train()
    every = max(1, steps // log_points) if log_points else 0
    loss_sum = torch.zeros((), device=dev)
    loss_n, last_loss = 0, float("nan")
    t = time.perf_counter()
    perm, k, done, truncated = torch.randperm(n, generator=g, device=dev), 0, 0, False
    for s in range(steps):
        if deadline is not None and time.perf_counter() > deadline:
            truncated = True
            break
        if k + bs > n:  # drop_last, reshuffle
            perm, k = torch.randperm(n, generator=g, device=dev), 0
        idx = perm[k : k + bs]
        k += bs
        with autocast:
            loss = F.cross_entropy(fwd(data.augment(data.x[idx], g)), data.y[idx], label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        sched.step()
        done = s + 1
        loss_sum += loss.detach().float()
        loss_n += 1
        if every and (done % every == 0 or done == steps):
            last_loss = float(loss_sum) / loss_n  # the one sync per progress line
            loss_sum.zero_()
            loss_n = 0
            if log is not None:
                log(f"  {desc}: step {done}/{steps} (epoch {done * bs / n:.1f}), loss {last_loss:.3f}, "
                    f"lr {opt.param_groups[0]['lr']:.4f}, {time.perf_counter() - t:.1f} s")  # fmt: skip
    if loss_n:
        last_loss = float(loss_sum) / loss_n
    sync(dev)
    return TrainResult(done, steps, time.perf_counter() - t, last_loss, truncated)


@torch.no_grad()
def accuracy(model: nn.Module, data: Data, batch: int = 1000, amp: bool = False) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    autocast = torch.autocast(data.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for i in range(0, len(data.yt), batch):
        with autocast:
            out = model(data.norm(data.xt[i : i + batch]))
        correct += (out.argmax(1) == data.yt[i : i + batch]).sum()
    return int(correct) / len(data.yt)


# ----------------------------------------------------------------------------------------------
# the schedule: sized to the budget from timed steps


def plan_schedule(
    *,
    train_s: float,
    steps_per_epoch: int,
    base_step_s: float | None,
    ft_step_s: float,
    sl_step_s: list[float],
    n_ft: int,
    base_frac: float,
    sl_ratio: float,
    max_epochs: dict[str, float],
    min_steps: int = 1,
) -> dict[str, Any]:
    """Steps of each phase so that the training fits ``train_s`` seconds: the base (when
    ``base_step_s`` is given) gets ``base_frac`` of it; every one of the ``n_ft`` fine-tunes the
    same ``ft`` steps and every sparse-learning phase (one per entry of ``sl_step_s``, seconds
    per step) ``sl_ratio * ft`` steps, out of what is left. Each phase is capped at
    ``max_epochs[kind]`` (time a cap frees on the base goes to the rest) and floored at
    ``min_steps``. Returns the steps, the epochs and the predicted seconds of each kind."""
    spe = max(1, steps_per_epoch)

    def clamp(steps: float, kind: str) -> int:
        return max(min_steps, min(int(steps), max(min_steps, round(max_epochs[kind] * spe))))

    base = 0
    if base_step_s is not None:
        base = clamp(base_frac * train_s / base_step_s, "base")
    rest = max(0.0, train_s - base * (base_step_s or 0.0))
    per_ft_step = n_ft * ft_step_s + sl_ratio * sum(sl_step_s)
    ft = clamp(rest / per_ft_step if per_ft_step > 0 else math.inf, "ft")
    sl = clamp(sl_ratio * ft, "sl") if sl_step_s else 0
    predicted = {
        "base": base * (base_step_s or 0.0),
        "sl": [sl * c for c in sl_step_s],
        "ft": n_ft * ft * ft_step_s,
    }
    predicted["total"] = predicted["base"] + sum(predicted["sl"]) + predicted["ft"]
    return {
        "steps": {"base": base, "sl": sl, "ft": ft},
        "epochs": {k: round(v / spe, 2) for k, v in (("base", base), ("sl", sl), ("ft", ft))},
        "predicted_s": predicted,
        "train_s": train_s,
    }


SL_REG_CAP = 2.5e-3  # 10x the paper's; at 1e-2 (half an epoch, the second H200 run) SL took the model to chance


def sl_reg_for(sl_lr_sum: float) -> float:
    """fxprune ``reg`` that gives the paper's total shrinkage ``reg * sum(lr)``, capped at
    ``SL_REG_CAP``: a short phase cannot make up the paper's shrinkage without wrecking the model."""
    return min(SL_REG_CAP, PAPER_SL_REG * PAPER_SL_LR_SUM / max(sl_lr_sum, 1e-12))


# ----------------------------------------------------------------------------------------------
# output


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples lists, unknown objects strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


class Recorder:
    """``DIR/cifar_rows.jsonl``, one JSON object a line, flushed as each is written."""

    def __init__(self, out: str | None):
        self.path: Path | None = None
        if out:
            self.path = Path(out) / "cifar_rows.jsonl"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, obj: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(_clean(obj)) + "\n")


# ----------------------------------------------------------------------------------------------
# the rows


class Bench:
    def __init__(self, args: argparse.Namespace, data: Data, recorder: Recorder, t0: float, env: dict[str, Any]):
        self.args, self.data, self.rec, self.t0, self.env = args, data, recorder, t0, env
        self.example = data.example()
        self.fast = args.recipe == "fast"
        self.amp = args.amp
        self.spe = max(1, len(data.y) // min(args.batch_size, len(data.y)))
        budget = args.budget_s if args.budget_s and args.budget_s > 0 else None
        self.budget = budget
        self.hard_end = None if budget is None else t0 + budget * (1 + args.slack)
        self.base: nn.Module | None = None
        self.base_acc = float("nan")
        self.base_macs = 0
        self.base_params = 0
        self.rows: list[list[Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.costs: dict[str, float] = {}
        self.plan: dict[str, Any] = {}
        epochs = {"base": args.epochs, "sl": args.sl_epochs, "ft": args.ft_epochs}  # None: planned
        self.steps = {k: max(1, round(v * self.spe)) if v else 0 for k, v in epochs.items()}
        self.reg = args.reg
        self.set_reg()
        self._sl_cache: dict[str, tuple[nn.Module, float, float]] = {}
        self.cpu_fallback: dict[str, str] = {}  # fxprune step -> the error that sent it to the CPU

    # -- helpers ---------------------------------------------------------------------------------
    def set_reg(self) -> None:
        """Fast recipe without ``--reg``: the reg whose ``reg * sum(lr)`` over the planned
        sparse-learning steps is the paper's."""
        if self.fast and not self.args.reg_fixed and self.steps["sl"]:
            f = self.factor("sl", self.steps["sl"])
            self.reg = sl_reg_for(self.args.sl_lr * sum(f(s) for s in range(self.steps["sl"])))

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.now():6.1f} s] {msg}", flush=True)

    def phase(self, name: str, seconds: float, predicted: float | None = None, **extra: Any) -> None:
        self.phases.append({"phase": name, "seconds": round(seconds, 2),
                            "predicted_s": None if predicted is None else round(predicted, 2), **extra})  # fmt: skip
        pred = "" if predicted is None else f" (predicted {predicted:.1f} s)"
        self.log(f"phase {name}: {seconds:.1f} s{pred}")

    def cl(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.args.channels_last else model

    def acc(self, model: nn.Module) -> float:
        return accuracy(model, self.data, self.args.eval_batch, self.amp)

    def hp(self, kind: str) -> dict[str, Any]:
        """lr, weight decay and schedule of a phase kind ("base", "sl", "ft") for ``steps``."""
        a = self.args
        lr = {"base": a.lr, "sl": a.sl_lr, "ft": a.ft_lr}[kind]
        wd = 0.0 if kind == "sl" else a.wd
        return {"lr": lr, "wd": wd}

    def factor(self, kind: str, steps: int) -> Callable[[int], float]:
        a = self.args
        if self.fast:
            frac = a.warmup_frac if kind == "base" else a.warmup_frac_ft
            return lr_factor("onecycle", steps, round(frac * steps))
        if kind == "base":
            return lr_factor("step", steps, round(a.warmup * self.spe), (0.6, 0.75, 0.9))
        return lr_factor("step", steps, 0, (0.6, 0.8))

    def run_train(
        self,
        model: nn.Module,
        kind: str,
        steps: int,
        desc: str,
        *,
        after_backward: Callable[[], None] | None = None,
        seed_tag: str | None = None,
        log_points: int | None = None,
        deadline: bool = True,
        lr_scale: float = 1.0,
    ) -> TrainResult:
        a = self.args
        hp = self.hp(kind)
        if self.data.device.type == "cuda":  # autotune the base's few conv shapes, not each pruned one's
            torch.backends.cudnn.benchmark = kind in ("base", "sl")
        return train(
            model, self.data, steps=steps, lr=hp["lr"] * lr_scale, wd=hp["wd"], factor=self.factor(kind, steps),
            batch_size=a.batch_size, seed=_seed(a.seed, seed_tag or kind), desc=desc, after_backward=after_backward,
            nesterov=self.fast, label_smoothing=a.label_smoothing, amp=self.amp,
            compile=a.compile and after_backward is None and kind != "sl",
            deadline=self.hard_end if deadline else None, log=self.log,
            log_points=a.log_points if log_points is None else log_points,
        )  # fmt: skip

    # -- calibration and plan --------------------------------------------------------------------
    def _time_steps(self, model: nn.Module, kind: str, after_backward: Callable[[], None] | None = None) -> tuple[float, float]:
        a = self.args
        dev = self.data.device
        sync(dev)
        t = time.perf_counter()
        self.run_train(model, kind, a.calib_warm, f"calibrate {kind}", after_backward=after_backward,
                       seed_tag="calibrate", log_points=0, deadline=False, lr_scale=0.0)  # fmt: skip
        warm = time.perf_counter() - t
        t = time.perf_counter()
        self.run_train(model, kind, a.calib_steps, f"calibrate {kind}", after_backward=after_backward,
                       seed_tag="calibrate", log_points=0, deadline=False, lr_scale=0.0)  # fmt: skip
        return (time.perf_counter() - t) / a.calib_steps, warm

    def calibrate(self, init: nn.Module, use_tp: bool) -> None:
        """Seconds per training step of each kind of phase and of the fixed costs, timed on
        throw-away copies of the untrained base at lr 0 (the weights stay the random init;
        the steps also warm up cuDNN). A part that fails is logged and estimated instead."""
        t_all = time.perf_counter()
        a, c = self.args, self.costs
        failed: dict[str, str] = {}

        def guard(name: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the plan estimates what could not be timed
                failed[name] = f"{type(e).__name__}: {e}"[:500]
                self.log(f"calibration of {name} failed ({failed[name]}); its cost is estimated")

        m = self.cl(copy.deepcopy(init))
        c["base_step"], c["base_warm"] = self._time_steps(m, "base")  # without it nothing can run

        def evaluate() -> None:
            t = time.perf_counter()
            self.acc(m)
            c["eval"] = time.perf_counter() - t

        def sl_fx() -> None:
            t = time.perf_counter()
            handle = self.sparsify(m, "full", 1e-4)
            c["sparsify_setup"] = time.perf_counter() - t
            try:
                c["sl_fx_step"], _ = self._time_steps(m, "sl")
            finally:
                handle.remove()

        def ft() -> None:
            t = time.perf_counter()
            pruned = self.cl(self.fx_prune(m, a.speedup))
            c["fx_prune"] = time.perf_counter() - t
            c["ft_step"], c["ft_warm"] = self._time_steps(pruned, "ft")

        def tp() -> None:
            mm = self.cl(copy.deepcopy(init))
            t = time.perf_counter()
            pruner = self.tp_pruner(mm)
            c["tp_setup"] = time.perf_counter() - t
            c["sl_tp_step"], _ = self._time_steps(mm, "sl", lambda: pruner.regularize(mm, alpha=2**a.alpha))
            # the whole progressive prune, once, on the throw-away copy: estimates from a few
            # steps were 8x (first GPU run) and 11x (second) too high and left the base no time
            if not self.base_macs:  # MACs depend on the architecture only (set again after training)
                self.base_macs = fxprune.count_macs(init, (self.example,))
            t = time.perf_counter()
            self.tp_prune_to(mm, pruner, a.speedup)
            c["tp_prune"] = time.perf_counter() - t

        guard("evaluation", evaluate)
        guard("sparse learning fxprune", sl_fx)
        guard("fine-tuning a pruned model", ft)
        if use_tp:
            guard("torch_pruning", tp)
        b = c["base_step"]
        estimates = {"eval": 20 * b, "sparsify_setup": 2.0, "sl_fx_step": 2 * b, "fx_prune": 5.0, "ft_step": b,
                     "ft_warm": c["base_warm"], "tp_setup": 2.0, "sl_tp_step": 4 * b, "tp_prune": 30.0}  # fmt: skip
        for k, v in estimates.items():
            c.setdefault(k, v)
        self.phase("calibrate", time.perf_counter() - t_all, costs={k: round(v, 4) for k, v in c.items()},
                   failed=failed)  # fmt: skip

    def _rows_cost(self, use_tp: bool, tp_plain: bool) -> tuple[int, list[float], float]:
        """(fine-tunes, seconds per step of each sparse-learning phase, fixed seconds) of the T1 rows."""
        c = self.costs
        n_ft, sl, fixed = 2, [c["sl_fx_step"]], 2 * c["fx_prune"] + c["sparsify_setup"] + 5 * c["eval"]
        if use_tp:
            n_ft += 1
            sl.append(c["sl_tp_step"])
            fixed += c["tp_setup"] + c["tp_prune"] + 3 * c["eval"]
            if tp_plain:
                n_ft += 1
                fixed += c["tp_setup"] + c["tp_prune"] + 2 * c["eval"]
        if self.args.compile:
            fixed += n_ft * c["ft_warm"]
        return n_ft, sl, fixed

    def make_plan(self, use_tp: bool, tp_plain: bool, with_base: bool) -> None:
        a = self.args
        n_ft, sl, fixed = self._rows_cost(use_tp, tp_plain)
        if with_base:
            fixed += self.costs["eval"]
        margin = a.margin * self.budget
        train_s = self.budget - self.now() - fixed - margin
        p = plan_schedule(
            train_s=train_s, steps_per_epoch=self.spe, base_step_s=self.costs["base_step"] if with_base else None,
            ft_step_s=self.costs["ft_step"], sl_step_s=sl, n_ft=n_ft, base_frac=a.base_frac, sl_ratio=a.sl_ratio,
            max_epochs={"base": a.max_epochs, "sl": a.max_ft_epochs * a.sl_ratio, "ft": a.max_ft_epochs},
            min_steps=a.min_steps,
        )  # fmt: skip
        p.update(fixed_s=round(fixed, 2), margin_s=round(margin, 2), at_s=round(self.now(), 2), with_base=with_base)
        if with_base:
            self.steps["base"] = p["steps"]["base"]
        self.steps["sl"], self.steps["ft"] = p["steps"]["sl"], p["steps"]["ft"]
        self.set_reg()
        p["sl_reg"] = self.reg
        self.plan = p
        e = p["epochs"]
        self.log(
            f"plan ({'with' if with_base else 'after'} the base, {train_s:.0f} s of training left): base "
            f"{e['base']:g} epochs ({p['steps']['base']} steps), sparse learning {e['sl']:g} epochs, fine-tune "
            f"{e['ft']:g} epochs, each; {self.spe} steps/epoch; predicted {p['predicted_s']['total']:.0f} s "
            f"training + {fixed:.0f} s fixed + {margin:.0f} s margin; sparse-learning reg {self.reg:.3g}"
        )
        self.rec.write({"type": "plan", **p, **self.env})

    def schedule(self) -> dict[str, Any]:
        a = self.args
        return {
            "recipe": a.recipe, "budget_s": self.budget, "batch_size": a.batch_size, "steps_per_epoch": self.spe,
            "epochs": {k: round(v / self.spe, 2) for k, v in self.steps.items()}, "steps": dict(self.steps),
            "lr": {"base": a.lr, "sl": a.sl_lr, "ft": a.ft_lr}, "wd": a.wd, "label_smoothing": a.label_smoothing,
            "sl_reg": self.reg, "alpha": a.alpha, "amp_bf16": self.amp, "channels_last": a.channels_last,
            "compile": a.compile, "train_images": len(self.data.y), "test_images": len(self.data.yt),
            "cpu_fallback": dict(self.cpu_fallback),
        }  # fmt: skip

    # -- phases ----------------------------------------------------------------------------------
    def train_base(self, init: nn.Module) -> None:
        a = self.args
        model = init
        ckpt = Path(a.base_ckpt) if a.base_ckpt else None
        t = time.perf_counter()
        res = None
        if ckpt is not None and ckpt.exists():
            model.load_state_dict(torch.load(ckpt, map_location=self.data.device))
            self.steps["base"] = 0
            self.log(f"loaded the trained base from {ckpt}")
        else:
            pred = self.steps["base"] * self.costs["base_step"] if "base_step" in self.costs else None
            res = self.run_train(model, "base", self.steps["base"], "base")
            self.phase("train base", res.seconds, pred, steps=res.steps, truncated=res.truncated)
            if ckpt is not None and not res.truncated:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), ckpt)
        self.base = model
        te = time.perf_counter()
        self.base_acc = self.acc(model)
        self.phase("evaluate base", time.perf_counter() - te)
        self.base_macs = fxprune.count_macs(model, (self.example,))
        self.base_params = fxprune.count_params(model)
        seconds = time.perf_counter() - t
        self.rows.append(["T1", "base (unpruned)", "-", "-", f"{self.base_macs / 1e6:.1f}", "1.00x",
                          f"{self.base_params / 1e6:.3f}", "-", "-", f"{self.base_acc:.2%}", "-",
                          f"{self.steps['base'] / self.spe:g}/-/-", f"{seconds:.0f}"])  # fmt: skip
        self.rec.write({
            "type": "row", "table": "T1", "method": "base", "sparse_learning": None, "target_speedup": None,
            "status": "truncated" if res is not None and res.truncated else "ok", "error": None,
            "macs": self.base_macs, "params": self.base_params, "speedup": 1.0, "acc_after_ft": self.base_acc,
            "acc": self.base_acc, "epochs": {"base": (res.steps if res else 0) / self.spe},
            "steps": {"base": res.steps if res else 0, "planned": self.steps["base"]},
            "seconds": {"train": res.seconds if res else 0.0, "total": seconds}, "final_loss": res.loss if res else None,
            "loaded_from": str(ckpt) if res is None else None, "schedule": self.schedule(), **self.env,
        })  # fmt: skip
        self.log(f"row base: top-1 {self.base_acc:.2%}, {self.base_macs / 1e6:.1f} M MACs, {seconds:.0f} s")

    def sl_model(self, scope: str) -> tuple[nn.Module, float, float]:
        """The base after a sparse-learning phase with ``scope`` (shared by every target):
        (model, its accuracy, seconds when it first ran, else 0)."""
        if scope not in self._sl_cache:
            t = time.perf_counter()
            model = copy.deepcopy(self.base)
            handle = self.sparsify(model, scope, self.reg)
            try:
                res = self.run_train(model, "sl", self.steps["sl"], f"sparse learning fxprune {scope}")
            finally:
                handle.remove()
            if res.truncated:
                raise TimeoutError(f"sparse learning stopped at the deadline, step {res.steps}/{res.planned}")
            pred = self.steps["sl"] * self.costs["sl_fx_step"] if self.costs else None
            self.phase(f"sparse learning fxprune {scope}", res.seconds, pred, steps=res.steps)
            acc = self.acc(model)
            self._sl_cache[scope] = (model, acc, time.perf_counter() - t)
            return self._sl_cache[scope]
        model, acc, _ = self._sl_cache[scope]
        return model, acc, 0.0

    def predict_row(self, method: str, sl: str | None) -> float:
        c = self.costs
        if not c:
            return 0.0
        t = self.steps["ft"] * c["ft_step"] + 2 * c["eval"]
        if method == "fxprune":
            t += c["fx_prune"]
            if sl is not None and sl not in self._sl_cache:
                t += self.steps["sl"] * c["sl_fx_step"] + c["sparsify_setup"] + c["eval"]
        else:
            t += c.get("tp_setup", 0.0) + c.get("tp_prune", 0.0)
            if sl is not None:
                t += self.steps["sl"] * c.get("sl_tp_step", 0.0) + c["eval"]
        return t

    # -- rows -----------------------------------------------------------------------------------
    def row(self, table: str, method: str, sl: str | None, target: float, make: Callable[[dict], tuple]) -> None:
        """``make(times) -> (pruned module, acc before pruning)`` (it records its phase seconds
        in ``times``); fine-tunes the module and adds the row. An error becomes the row's text
        instead of ending the run; a row predicted to end after the deadline is skipped."""
        a = self.args
        t = time.perf_counter()
        sl_name = "w/o SL" if sl is None else f"SL {sl}"
        record: dict[str, Any] = {
            "type": "row", "table": table, "method": method, "sparse_learning": sl_name, "target_speedup": target,
            "status": "ok", "error": None, "epochs": {"sl": 0.0 if sl is None else self.steps["sl"] / self.spe,
                                                      "ft": self.steps["ft"] / self.spe},
        }  # fmt: skip
        times: dict[str, float] = {}
        predicted = self.predict_row(method, sl)
        record["predicted_s"] = predicted
        try:
            if self.hard_end is not None and time.perf_counter() + predicted > self.hard_end:
                record["status"] = "skipped"
                raise TimeoutError(f"predicted {predicted:.0f} s, only {self.hard_end - time.perf_counter():.0f} s "
                                   f"left before the deadline (budget + {a.slack:.0%})")  # fmt: skip
            pruned, before = make(times)
            pruned = self.cl(pruned)
            macs = fxprune.count_macs(pruned, (self.example,))
            params = fxprune.count_params(pruned)
            te = time.perf_counter()
            after_prune = self.acc(pruned)
            times["eval"] = time.perf_counter() - te
            res = self.run_train(pruned, "ft", self.steps["ft"], f"fine-tune {method} {sl_name} {target:g}x")
            times["ft"] = res.seconds
            self.phase(f"fine-tune {method} {sl_name} {target:g}x", res.seconds,
                       self.steps["ft"] * self.costs["ft_step"] if self.costs else None, steps=res.steps)  # fmt: skip
            te = time.perf_counter()
            acc = self.acc(pruned)
            times["eval"] += time.perf_counter() - te
            if res.truncated:
                record["status"] = "truncated"
                record["error"] = f"fine-tuning stopped at the deadline, step {res.steps}/{res.planned}"
            record.update(
                macs=macs, params=params, speedup=self.base_macs / macs, acc_before_prune=before,
                acc_after_prune=after_prune, acc_after_ft=acc, delta_pts=(acc - self.base_acc) * 100,
                steps={"sl": 0 if sl is None else self.steps["sl"], "ft": res.steps}, final_loss=res.loss,
            )  # fmt: skip
            self.rows.append([table, method, sl_name, f"{target:g}x", f"{macs / 1e6:.1f}",
                              f"{self.base_macs / macs:.2f}x", f"{params / 1e6:.3f}",
                              f"{before:.2%}", f"{after_prune:.2%}", f"{acc:.2%}",
                              f"{(acc - self.base_acc) * 100:+.2f}",
                              f"-/{record['epochs']['sl']:g}/{record['epochs']['ft']:g}",
                              f"{time.perf_counter() - t:.0f}"])  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one failing row is reported, the rest still run
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            if record["status"] == "ok":
                record["status"] = "error"
            record["error"] = msg[:2000]
            self.rows.append([table, method, sl_name, f"{target:g}x", f"{record['status'].upper()} {msg[:100]}",
                              "-", "-", "-", "-", "-", "-", "-", f"{time.perf_counter() - t:.0f}"])  # fmt: skip
        times["total"] = time.perf_counter() - t
        record["seconds"] = {k: round(v, 2) for k, v in times.items()}
        record["schedule"] = self.schedule()
        self.rec.write({**record, **self.env})
        self.log("row " + " | ".join(map(str, self.rows[-1])))

    def fx_prune(self, model: nn.Module, target: float) -> nn.Module:
        """fxprune.compile on the device; if that raises there (fxprune's GPU path is young),
        on a CPU copy, moved back (and on the CPU from then on)."""
        dev = self.data.device
        if dev.type != "cpu" and "compile" not in self.cpu_fallback:
            try:
                return fxprune.compile(model, example_inputs=self.example, speedup=target, global_ranking=True)
            except Exception as e:  # noqa: BLE001 - retried on the CPU below
                self.cpu_fallback["compile"] = f"{type(e).__name__}: {e}"[:500]
                self.log(f"fxprune.compile on {dev} failed ({self.cpu_fallback['compile']}); pruning on the CPU")
        cpu = copy.deepcopy(model).cpu()
        pruned = fxprune.compile(cpu, example_inputs=self.example.cpu(), speedup=target, global_ranking=True)
        return pruned.to(dev)

    def sparsify(self, model: nn.Module, scope: str, reg: float) -> fxprune.SparsifyHandle:
        """fxprune.sparsify on the device; if its analysis raises there, the model is moved to
        the CPU for it (the hooks stay on the same Parameter objects) and back."""
        dev = self.data.device
        if dev.type != "cpu" and "sparsify" not in self.cpu_fallback:
            try:
                return fxprune.sparsify(model, self.example, reg=reg, alpha=self.args.alpha, scope=scope)
            except Exception as e:  # noqa: BLE001 - retried on the CPU below
                self.cpu_fallback["sparsify"] = f"{type(e).__name__}: {e}"[:500]
                self.log(f"fxprune.sparsify on {dev} failed ({self.cpu_fallback['sparsify']}); analysing on the CPU")
        model.cpu()
        try:
            return fxprune.sparsify(model, self.example.cpu(), reg=reg, alpha=self.args.alpha, scope=scope)
        finally:
            model.to(dev)

    def fx_row(self, table: str, scope: str | None, target: float) -> None:
        def make(times: dict) -> tuple:
            if scope is None:
                model, acc = self.base, self.base_acc
            else:
                model, acc, sl_s = self.sl_model(scope)
                times["sl"] = sl_s
            t = time.perf_counter()
            pruned = self.fx_prune(model, target)
            times["prune"] = time.perf_counter() - t
            self.phase(f"prune fxprune {scope or 'w/o SL'} {target:g}x", times["prune"],
                       self.costs.get("fx_prune"))  # fmt: skip
            return pruned, acc

        self.row(table, "fxprune", scope, target, make)

    def tp_pruner(self, model: nn.Module) -> Any:
        import torch_pruning as tp

        fc = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return tp.pruner.GroupNormPruner(
            model, self.example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            reg=2 * self.reg, alpha=self.args.alpha, global_pruning=True, pruning_ratio=1.0,
            max_pruning_ratio=0.9, iterative_steps=self.args.tp_steps, ignored_layers=fc,
        )  # fmt: skip

    def tp_prune_to(self, model: nn.Module, pruner: Any, target: float) -> dict[str, Any]:
        """Torch-Pruning's progressive pruning: ``pruner.step()`` until base/pruned MACs >= target.
        While below 85% of the target, MACs are counted every ``--tp-steps // 40`` steps (2.5%
        of the ratio; 10 at 400), then after every step: the same stopping step as counting
        every time, unless one stride jumps from below 85% of the target to past it, when
        ``overshoot`` is set."""
        model.eval()
        stride = max(1, self.args.tp_steps // 40)
        steps, counts, fine, overshoot = 0, 0, stride == 1, False
        while True:
            if fine or steps % stride == 0:
                got = self.base_macs / fxprune.count_macs(model, (self.example,))
                counts += 1
                if got >= target:
                    overshoot = not fine and steps > 0
                    break
                fine = got >= 0.85 * target
            if pruner.current_step >= pruner.iterative_steps:
                raise RuntimeError(f"torch_pruning reached its last step before {target}x")
            pruner.step()
            steps += 1
        return {"tp_steps": steps, "mac_counts": counts, "overshoot": overshoot}

    def tp_row(self, table: str, with_sl: bool, target: float) -> None:
        def make(times: dict) -> tuple:
            a = self.args
            t = time.perf_counter()
            model = copy.deepcopy(self.base)
            pruner = self.tp_pruner(model)
            times["setup"] = time.perf_counter() - t
            before = self.base_acc
            if with_sl:
                res = self.run_train(model, "sl", self.steps["sl"], "sparse learning torch_pruning",
                                     after_backward=lambda: pruner.regularize(model, alpha=2**a.alpha))  # fmt: skip
                times["sl"] = res.seconds
                self.phase("sparse learning torch_pruning", res.seconds,
                           self.steps["sl"] * self.costs["sl_tp_step"] if self.costs else None, steps=res.steps)  # fmt: skip
                if res.truncated:
                    raise TimeoutError(f"sparse learning stopped at the deadline, step {res.steps}/{res.planned}")
                te = time.perf_counter()
                before = self.acc(model)
                times["eval_sl"] = time.perf_counter() - te
            t = time.perf_counter()
            info = self.tp_prune_to(model, pruner, target)
            times["prune"] = time.perf_counter() - t
            self.phase(f"prune torch_pruning {'SL' if with_sl else 'w/o SL'} {target:g}x", times["prune"],
                       self.costs.get("tp_prune"), **info)  # fmt: skip
            return model, before

        self.row(table, "torch_pruning", "full" if with_sl else None, target, make)


# ----------------------------------------------------------------------------------------------
# command line

FAST = dict(
    batch_size=512, lr=0.4, sl_lr=0.04, ft_lr=0.04, wd=5e-4, label_smoothing=0.1, budget_s=320.0,
    eval_batch=2000, decoder="torchvision", tp_rows="sl", channels_last=True, amp=None,
)  # fmt: skip
CLASSIC = dict(
    batch_size=128, lr=0.1, sl_lr=0.01, ft_lr=0.01, wd=5e-4, label_smoothing=0.0, budget_s=0.0,
    eval_batch=1000, decoder="pil", tp_rows="both", channels_last=False, amp=False,
    epochs=200, sl_epochs=100, ft_epochs=100, reg=2.5e-4,
)  # fmt: skip
QUICK = dict(
    recipe="classic", device="cpu", epochs=6, sl_epochs=2, ft_epochs=2, lr=0.05, reg=5e-3, train_size=3000,
    test_size=2000, ablation=True,
)  # fmt: skip
SMOKE = dict(
    recipe="fast", device="cpu", threads=1, train_size=512, test_size=128, batch_size=32, budget_s=600.0,
    max_epochs=0.25, max_ft_epochs=0.125, min_steps=2, calib_warm=1, calib_steps=1, tp_steps=40, eval_batch=256, decoder="pil",
    log_points=2, channels_last=False,
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--gpu", action="store_true", help="the GPU run: --device cuda (an error without CUDA), fast recipe")
    add("--smoke", action="store_true", help="CPU smoke run of the fast recipe's code, 1 thread: 512 train / "
        "128 test images, batch 32, 4 base steps, 2 of each other phase, torch_pruning steps 40; the budget "
        "(600 s) does not bind")  # fmt: skip
    add("--quick", action="store_true",
        help="CPU run of the classic recipe: 3000 train / 2000 test images, 6+2+2 epochs, lr 0.05, reg 5e-3, ablation")  # fmt: skip
    add("--recipe", choices=("fast", "classic"), default=None, help="fast (default) or classic; see above")
    add("--budget-s", type=float, default=None,
        help="fast recipe: wall-clock budget of the whole run in seconds (320); 0: no budget, fixed --epochs")  # fmt: skip
    add("--base-frac", type=float, default=0.55, help="share of the training time that goes to the base")
    add("--sl-ratio", type=float, default=1.0, help="sparse-learning steps per fine-tuning step")
    add("--margin", type=float, default=0.05, help="share of the budget kept free when planning")
    add("--slack", type=float, default=0.1, help="deadline: budget * (1 + slack); no phase runs past it")
    add("--max-epochs", type=float, default=200.0, help="cap on the planned base epochs")
    add("--max-ft-epochs", type=float, default=100.0, help="cap on the planned fine-tuning epochs")
    add("--min-steps", type=int, default=1, help="floor on the planned steps of every phase")
    add("--calib-warm", type=int, default=5, help="untimed steps before each timed calibration")
    add("--calib-steps", type=int, default=20, help="timed steps of each calibration")
    add("--epochs", type=float, default=None, help="base training epochs (classic 200; fast: planned)")
    add("--sl-epochs", type=float, default=None, help="sparse learning epochs (classic 100; fast: planned)")
    add("--ft-epochs", type=float, default=None, help="fine-tuning epochs (classic 100; fast: planned)")
    add("--lr", type=float, default=None, help="peak base lr (fast 0.4; classic 0.1; --quick 0.05)")
    add("--warmup", type=float, default=1.0, help="classic: linear lr warm-up epochs of the base training")
    add("--warmup-frac", type=float, default=0.15, help="fast: warm-up share of the base run")
    add("--warmup-frac-ft", type=float, default=0.05, help="fast: warm-up share of sparse learning and fine-tuning")
    add("--sl-lr", type=float, default=None)
    add("--ft-lr", type=float, default=None)
    add("--wd", type=float, default=None)
    add("--label-smoothing", type=float, default=None)
    add("--reg", type=float, default=None,
        help="fxprune sparsify reg (classic 2.5e-4, --quick 5e-3; fast: scaled to the paper's reg * sum(lr))")  # fmt: skip
    add("--alpha", type=float, default=4.0)
    add("--batch-size", type=int, default=None, help="fast 512, classic 128")
    add("--eval-batch", type=int, default=None)
    add("--train-size", type=int, default=None, help="stratified subset of the 50000")
    add("--test-size", type=int, default=None, help="stratified subset of the 10000")
    add("--speedup", type=float, default=2.11)
    add("--ablation", action="store_true", help="add Table 2 (scope none/conv/full at --ablation-speedups)")
    add("--ablation-speedups", type=float, nargs="*", default=[3.0, 6.0])
    add("--no-ablation", action="store_true", help="(kept for old command lines) no Table 2")
    add("--tp-rows", choices=("sl", "both", "none"), default=None,
        help="torch_pruning rows: GroupNormPruner with sparse learning (fast default), also without (classic), none")  # fmt: skip
    add("--no-torch-pruning", action="store_true", help="same as --tp-rows none")
    add("--tp-steps", type=int, default=400, help="torch_pruning progressive steps to 100%%")
    add("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (fast: on CUDA)")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="(fast: on)")
    add("--compile", action="store_true",
        help="torch.compile the training forward of the base and the fine-tunes (off: every new shape recompiles)")  # fmt: skip
    add("--decoder", choices=("pil", "torchvision"), default=None, help="JPEG decoder (fast: torchvision)")
    add("--log-points", type=int, default=10, help="progress lines per training phase")
    add("--device", default="auto", help="auto: cuda when available, else cpu")
    add("--threads", type=int, default=None)
    add("--seed", type=int, default=0)
    add("--base-ckpt", default=None, help="load the trained base from here, or save it there")
    add("--out", default=None, help="write DIR/cifar_rows.jsonl (header, plan, rows, summary)")
    args = ap.parse_args(argv)
    for action in ap._actions:  # a second parse without defaults: what the command line gave
        action.default = argparse.SUPPRESS
    given = set(vars(ap.parse_args(argv)))

    presets = ([SMOKE] if args.smoke else []) + ([QUICK] if args.quick else [])
    args.recipe = args.recipe or next((p["recipe"] for p in presets if "recipe" in p), "fast")
    presets.append(FAST if args.recipe == "fast" else CLASSIC)
    for preset in presets:  # the command line, then --smoke / --quick, then the recipe
        for k, v in preset.items():
            if k not in given:
                setattr(args, k, v)
                given.add(k)
    if args.gpu:
        if args.smoke or args.quick:
            ap.error("--gpu cannot go with --smoke or --quick")
        if "device" not in given:
            args.device = "cuda"
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.amp is None:
        args.amp = args.recipe == "fast" and args.device.startswith("cuda")
    args.reg_fixed = args.reg is not None
    if args.no_torch_pruning:
        args.tp_rows = "none"
    if args.no_ablation:
        args.ablation = False
    if args.recipe == "fast" and args.epochs is not None:  # fixed epochs instead of the plan
        args.sl_epochs = args.epochs / 2 if args.sl_epochs is None else args.sl_epochs
        args.ft_epochs = args.epochs / 2 if args.ft_epochs is None else args.ft_epochs
    if args.recipe == "fast" and args.reg is None:
        args.reg = PAPER_SL_REG
    return args


def main(argv: list[str] | None = None) -> None:
    t0 = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    try:
        import importlib.metadata

        import torch_pruning  # noqa: F401

        tp_version = importlib.metadata.version("torch-pruning")
    except ImportError:
        tp_version = None
    use_tp = tp_version is not None and args.tp_rows != "none"
    tp_plain = use_tp and args.tp_rows == "both"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    env = {"device": gpu or f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)", "torch": torch.__version__}
    rec = Recorder(args.out)
    rec.write({
        "type": "header", "command": " ".join(sys.argv), "fxprune": fxprune.__version__,
        "torch_pruning": tp_version, "python": platform.python_version(), "cuda": torch.version.cuda,
        "args": vars(args), "paper_acc": PAPER_ACC, **env,
    })  # fmt: skip

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)

    log(f"device {env['device']}, torch {torch.__version__}, fxprune {fxprune.__version__}, "
        f"torch-pruning {tp_version or 'not installed'}; recipe {args.recipe}, budget {args.budget_s or 'none'} s")  # fmt: skip
    t = time.perf_counter()
    data = Data(args.train_size, args.test_size, device, args.seed, args.decoder, args.channels_last)
    sync(device)
    bench = Bench(args, data, rec, t0, env)
    bench.phase("load data", time.perf_counter() - t, images=[len(data.y), len(data.yt)], decoder=args.decoder)

    torch.manual_seed(args.seed)
    init = bench.cl(resnet56().to(device))
    planned = args.recipe == "fast" and bench.budget is not None and args.epochs is None
    have_base = bool(args.base_ckpt) and Path(args.base_ckpt).exists()
    if planned:
        bench.calibrate(init, use_tp)
        bench.make_plan(use_tp, tp_plain, with_base=not have_base)
    bench.train_base(init)
    if planned and not have_base:
        bench.make_plan(use_tp, tp_plain, with_base=False)  # the rows share the time actually left

    bench.fx_row("T1", None, args.speedup)
    bench.fx_row("T1", "full", args.speedup)
    if use_tp:
        bench.tp_row("T1", True, args.speedup)
        if tp_plain:
            bench.tp_row("T1", False, args.speedup)
    if args.ablation:
        for target in args.ablation_speedups:
            bench.fx_row("T2", None, target)
            for scope in ("none", "conv", "full"):
                bench.fx_row("T2", scope, target)

    total = time.perf_counter() - t0
    rec.write({"type": "summary", "total_s": total, "budget_s": bench.budget, "phases": bench.phases,
               "costs": bench.costs, "schedule": bench.schedule(), **env})  # fmt: skip
    headers = ["table", "method", "sparse learning", "target", "MACs (M)", "speedup", "params (M)",
               "acc before prune", "acc after prune", "acc after FT", "delta (pts)", "epochs base/SL/FT", "seconds"]  # fmt: skip
    s = bench.schedule()
    e = s["epochs"]
    head = "\n".join([
        f"ResNet-56 (option-B shortcuts), CIFAR-10 JPEG copy: {len(data.y)} train / {len(data.yt)} test images.",
        f"Recipe {args.recipe}: epochs base {e['base']:g} (lr {args.lr}), SL {e['sl']:g} (lr {args.sl_lr}, "
        f"reg {bench.reg:.3g}, alpha {args.alpha:g}), FT {e['ft']:g} (lr {args.ft_lr}); batch {s['batch_size']}, "
        f"wd {args.wd:g}, label smoothing {args.label_smoothing:g}, bf16 {bench.amp}, channels_last "
        f"{args.channels_last}, seed {args.seed}.",
        f"fxprune {fxprune.__version__}, torch {torch.__version__}, torch-pruning {tp_version or 'not installed'}; "
        f"device {env['device']}; total {total:.0f} s (budget {bench.budget or 'none'}).",
        "acc: top-1 on the test images; 'before prune' is after sparse learning in SL rows. seconds: the row's "
        "prune + fine-tune, plus its sparse-learning phase where that phase first ran (shared by targets).",
    ])  # fmt: skip
    print(head)
    print(tabulate(bench.rows, headers=headers, tablefmt="github"))
    print("phases:", ", ".join(f"{p['phase']} {p['seconds']:.1f} s" for p in bench.phases))


if __name__ == "__main__":
    main()
