"""benchmarks/cifar10_resnet56.py, the CIFAR-10 ResNet-56 run made for a GPU: its schedule
planner and presets (instant), and its ``--smoke`` mode end to end on the CPU: the same code
paths as the GPU run (calibration, plan, base, fxprune without and with group sparse learning,
Torch-Pruning's GroupNormPruner when it is installed) on 512/128 images, checked through the
JSON lines it writes. The smoke run takes about 20 s on 2 idle cores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cifar10_resnet56 as cifar  # benchmarks/ is on pytest's pythonpath
from _data import DataUnavailable, cifar10_jpeg_labels

ROOT = Path(__file__).resolve().parents[1]

COSTS = dict(base_step_s=0.02, ft_step_s=0.015, sl_step_s=[0.03, 0.05])
CAPS = {"base": 200.0, "sl": 100.0, "ft": 100.0}


def test_plan_fits_the_time_and_splits_it() -> None:
    p = cifar.plan_schedule(train_s=300.0, steps_per_epoch=97, n_ft=3, base_frac=0.55, sl_ratio=1.0,
                            max_epochs=CAPS, **COSTS)  # fmt: skip
    st, pred = p["steps"], p["predicted_s"]
    assert st["sl"] == st["ft"] > 0 and st["base"] > 0
    assert pred["total"] <= 300.0 and pred["total"] > 0.97 * 300.0  # fits, and wastes little
    assert math.isclose(pred["base"], 0.55 * 300.0, rel_tol=0.01)
    assert p["epochs"]["base"] == round(st["base"] / 97, 2)
    # after the base: only the rows, on what is left
    q = cifar.plan_schedule(train_s=200.0, steps_per_epoch=97, n_ft=3, base_frac=0.55, sl_ratio=1.0,
                            max_epochs=CAPS, **{**COSTS, "base_step_s": None})  # fmt: skip
    assert q["steps"]["base"] == 0 and 0.97 * 200.0 < q["predicted_s"]["total"] <= 200.0
    assert q["steps"]["ft"] > st["ft"]  # 200 s left instead of the 135 s planned for the rows


def test_plan_caps_floors_and_sl_ratio() -> None:
    caps = {"base": 1.0, "sl": 0.5, "ft": 1.0}
    p = cifar.plan_schedule(train_s=1e6, steps_per_epoch=10, n_ft=3, base_frac=0.5, sl_ratio=0.5,
                            max_epochs=caps, **COSTS)  # fmt: skip
    assert p["steps"] == {"base": 10, "sl": 5, "ft": 10}
    short = cifar.plan_schedule(train_s=-5.0, steps_per_epoch=10, n_ft=3, base_frac=0.5, sl_ratio=1.0,
                                max_epochs=CAPS, min_steps=2, **COSTS)  # fmt: skip
    assert short["steps"] == {"base": 2, "sl": 2, "ft": 2}
    none = cifar.plan_schedule(train_s=50.0, steps_per_epoch=10, n_ft=2, base_frac=0.5, sl_ratio=1.0,
                               max_epochs=CAPS, **{**COSTS, "sl_step_s": []})  # fmt: skip
    assert none["steps"]["sl"] == 0 and none["steps"]["ft"] > 0


def test_lr_schedules_and_reg_scaling() -> None:
    f = cifar.lr_factor("onecycle", 100, 15)
    values = [f(s) for s in range(100)]
    assert max(values) == 1.0 == values[14] and values[0] < 0.1 and values[-1] < 0.02
    assert all(a <= b for a, b in zip(values[:15], values[1:15])) and all(a >= b for a, b in zip(values[14:], values[15:]))
    g = cifar.lr_factor("step", 100, 0, (0.6, 0.8))
    assert (g(59), g(60), g(80)) == (1.0, 0.1, pytest.approx(0.01))
    # the paper's own sum of lr gives the paper's reg; a tenth of it, ten times the reg
    assert cifar.sl_reg_for(cifar.PAPER_SL_LR_SUM) == pytest.approx(cifar.PAPER_SL_REG)
    assert cifar.sl_reg_for(cifar.PAPER_SL_LR_SUM / 5) == pytest.approx(5 * cifar.PAPER_SL_REG)
    assert cifar.sl_reg_for(1e-9) == cifar.SL_REG_CAP


def test_presets() -> None:
    gpu = cifar.parse_args(["--gpu", "--budget-s", "300"])
    assert (gpu.device, gpu.recipe, gpu.budget_s, gpu.batch_size, gpu.tp_rows) == ("cuda", "fast", 300.0, 512, "sl")
    assert gpu.channels_last and gpu.amp and not gpu.ablation and gpu.epochs is None and not gpu.compile
    assert gpu.train_size is None and gpu.test_size is None  # all 50,000 / 10,000 images
    smoke = cifar.parse_args(["--smoke"])
    assert (smoke.device, smoke.recipe, smoke.train_size, smoke.test_size, smoke.batch_size) == ("cpu", "fast", 512, 128, 32)
    assert not smoke.amp and smoke.threads == 1
    quick = cifar.parse_args(["--quick", "--epochs", "3"])
    assert (quick.recipe, quick.epochs, quick.sl_epochs, quick.batch_size, quick.reg) == ("classic", 3.0, 2, 128, 5e-3)
    assert quick.ablation and quick.tp_rows == "both"
    assert cifar.parse_args(["--quick", "--no-ablation"]).ablation is False


def test_smoke_run(tmp_path: Path) -> None:
    try:
        cifar10_jpeg_labels("test")
    except DataUnavailable as e:
        pytest.skip(f"CIFAR-10 JPEG copy not available: {e}")
    try:
        import torch_pruning  # noqa: F401

        have_tp = True
    except ImportError:
        have_tp = False
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cifar10_resnet56.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "cifar_rows.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in lines]
    assert kinds[0] == "header" and kinds[-1] == "summary" and "plan" in kinds
    header, summary = lines[0], lines[-1]
    assert header["torch"] and header["device"].startswith("cpu") and header["args"]["smoke"]
    rows = [r for r in lines if r["type"] == "row"]
    want = [("base", None), ("fxprune", "w/o SL"), ("fxprune", "SL full")]
    want += [("torch_pruning", "SL full")] if have_tp else []
    assert [(r["method"], r["sparse_learning"]) for r in rows] == want
    base = rows[0]
    assert base["status"] == "ok" and base["macs"] > 1e8 and 0 <= base["acc"] <= 1
    assert base["steps"]["base"] == base["steps"]["planned"] == 4  # 0.25 epoch of 512 at batch 32
    for r in rows[1:]:
        assert r["status"] == "ok", r
        assert r["device"] == header["device"] and r["torch"] == header["torch"]
        assert 1.9 < r["speedup"] < 2.6 and r["macs"] < base["macs"] and r["params"] < base["params"]
        for k in ("acc_before_prune", "acc_after_prune", "acc_after_ft"):
            assert 0.0 <= r[k] <= 1.0
        assert r["epochs"]["ft"] == 0.125 and r["steps"]["ft"] == 2
        assert r["epochs"]["sl"] == (0.0 if r["sparse_learning"] == "w/o SL" else 0.125)
        assert r["seconds"]["total"] > 0 and r["seconds"]["ft"] > 0 and r["seconds"]["prune"] >= 0
        assert r["schedule"]["steps"] == {"base": 4, "sl": 2, "ft": 2}
    names = [p["phase"] for p in summary["phases"]]
    assert names[:3] == ["load data", "calibrate", "train base"]
    assert any(n.startswith("sparse learning fxprune") for n in names)
    assert summary["total_s"] > 0 and {"base_step", "ft_step", "sl_fx_step", "eval"} <= set(summary["costs"])
    assert "phase train base" in proc.stdout and "| fxprune" in proc.stdout
