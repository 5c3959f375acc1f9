"""benchmarks/gpu_suite.py --smoke: the GPU suite's code paths on the CPU, tiny sizes (issue 20).

It runs the script as a subprocess (it sets threads, warnings and fxprune's cache folder for
its own process) and checks the JSON lines it writes: a meta line, one row per (model,
pruned variant) eager, two compiled rows, a tiny Llama's prefill rows, skip lines for the rest,
and a summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODELS = ("resnet50", "mobilenet_v2", "vit_b_16")
ROW_KEYS = {
    "model", "method", "ratio", "round_to", "backend", "batch", "size", "input", "dtype", "memory_format", "macs", "base_macs",
    "params", "base_params", "base_ms", "pruned_ms", "speedup", "macs_x", "speedup_over_macs_x", "pruned_faster_in",
    "gpu", "driver", "torch", "clocks",
}  # fmt: skip


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    # a generous budget: a slow CI machine must not turn rows into budget skips
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(out),
           "--budget-s", "150", "--plot", str(out / "gpu.png")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "FXPRUNE_CACHE_DIR": str(out / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "latency_rows.jsonl").read_text().splitlines() if line.strip()]
    return out, proc.stdout, recs


def test_smoke_writes_every_row(smoke):
    out, log, recs = smoke
    assert recs[0]["type"] == "meta" and recs[-1]["type"] == "summary"
    assert recs[0]["smoke"] and recs[0]["compile_backend"] == "eager" and recs[0]["batch"] == 2
    rows = [r for r in recs if r["type"] == "row"]
    skips = [r for r in recs if r["type"] == "skip"]
    llama = [r for r in rows if r["model"] == "llama"]
    rows = [r for r in rows if r["model"] != "llama"]
    eager = {(r["model"], r["method"], r["round_to"], r["ratio"]) for r in rows if r["backend"] == "eager"}
    want = {(m, "fxprune", rt, ratio) for m in MODELS for rt, ratio in ((8, 0.0), (8, 0.25), (8, 0.5), ("auto", 0.25), ("auto", 0.5))}
    if _has("torch_pruning"):
        want |= {(m, "torch-pruning", 8, 0.5) for m in MODELS}
    else:
        assert sum("torch_pruning is not installed" in s["why"] for s in skips) == len(MODELS)
    assert eager == want, (eager ^ want, [s["what"] + ": " + s["why"] for s in skips])
    # compiled rows, by priority: resnet50 at 0.5 first (round_to=8, then auto); the rest is
    # skipped by --compile-limit 2 (smoke's default) and says so
    compiled = [r for r in rows if r["backend"] != "eager"]
    assert [(r["model"], r["round_to"], r["ratio"], r["backend"]) for r in compiled] == [
        ("resnet50", 8, 0.5, "compile:eager"), ("resnet50", "auto", 0.5, "compile:eager")]  # fmt: skip
    assert any("--compile-limit 2" in s["why"] for s in skips)
    assert not [s for s in skips if s["why"].startswith("failed")], skips
    for r in rows:
        assert ROW_KEYS <= r.keys(), ROW_KEYS - r.keys()
        assert r["dtype"] == "float32" and r["batch"] == 2 and r["size"] == 64
        assert r["memory_format"] == ("contiguous" if r["model"] == "vit_b_16" else "channels_last")
        assert r["base_ms"]["median"] > 0 and r["pruned_ms"]["median"] > 0
        assert r["speedup"] == pytest.approx(r["base_ms"]["median"] / r["pruned_ms"]["median"])
        assert r["macs_x"] == pytest.approx(r["base_macs"] / r["macs"], rel=1e-6)
        assert r["speedup_over_macs_x"] == pytest.approx(r["speedup"] / r["macs_x"])
        assert r["params"] <= r["base_params"] and r["macs"] <= r["base_macs"]
        assert isinstance(r["clocks"], dict) and r["torch"]
        if r["ratio"] == 0:
            assert r["macs_x"] == 1.0 and r["same_widths_as_original"]
        if r["round_to"] == "auto":
            assert r["round_to_auto"]["device_key"].endswith(r["memory_format"])
    # the lowest priority: a tiny random Llama's prefill, captured by torch.export, eager
    if _has("transformers"):
        assert [(r["ratio"], r["backend"], r["batch"], r["input"]) for r in llama] == [
            (ratio, "eager", 1, "1x32 tokens (prefill)") for ratio in (0.0, 0.25, 0.5)]  # fmt: skip
        assert llama[0]["macs_x"] == 1.0 and llama[1]["macs_x"] > 1.2 and llama[2]["macs_x"] > llama[1]["macs_x"]
    else:
        assert not llama and any(s["why"] == "transformers is not installed" for s in skips)
    assert "decode tokens/s with generate(): left out" in log
    by = {(r["model"], r["method"], r["round_to"], r["ratio"]): r for r in rows if r["backend"] == "eager"}
    assert by[("resnet50", "fxprune", 8, 0.5)]["macs_x"] > 3  # ratio 0.5 removes about 3/4 of a CNN's MACs
    # round_to="auto" measured in the suite's own cache, keyed by dtype and memory format
    keys = json.loads((out / "cache" / "latency.json").read_text()).keys()
    assert any(k.endswith("|float32|channels_last") for k in keys) and any(k.endswith("|float32|contiguous") for k in keys)
    summary = recs[-1]
    assert summary["rows"] == len(rows) + len(llama) and summary["wall_s"] < summary["budget_s"]
    assert "timing report" in log and "ROW resnet50" in log


def test_plot_and_table_from_rows(smoke, tmp_path):
    pytest.importorskip("matplotlib")
    import gpu_suite

    out, _, _ = smoke
    assert (out / "gpu.png").stat().st_size > 0  # drawn by the run itself
    rows = gpu_suite.read_rows(out / "latency_rows.jsonl")
    gpu_suite.plot_rows(rows, str(tmp_path / "again.png"))
    assert (tmp_path / "again.png").stat().st_size > 0
    text = gpu_suite.table(rows)
    assert text.count("\n") == len(rows) + 2 and "lat/MACs" in text and ("llama" in text) == _has("transformers")


def test_budget_estimates_from_what_steps_took():
    import gpu_suite

    b = gpu_suite.Budget(1e9, {"compile": 60.0})
    est = ("compile:resnet50", "compile", "compile-first")
    assert b.estimate(*est) == 60.0  # nothing seen yet: the default
    b.took("compile-first", 40.0, margin=1.0)  # the first compile, one-time costs included
    assert b.estimate(*est) == 40.0
    b.took("compile:resnet50", 20.0)
    assert b.estimate(*est) == 25.0  # the most seen after the first, with a margin
    assert b.estimate("compile:vit_b_16", "compile", "compile-first") == 25.0  # another model: any compile seen
    b.deadline = gpu_suite.elapsed() + 10
    assert not b.fits(*est)
