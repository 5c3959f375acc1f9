"""The JSON lines file: model records, run headers (machine, versions, the timm sample), resumption."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

import fxprune

from .build import Options
from .models import ModelSpec


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of each model (``source:name``) in a JSONL file; a model whose last
    record is still "running" (the process died on it) becomes status "crashed"."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if rec.get("type") == "meta":
            continue
        out[f"{rec['source']}:{rec['name']}"] = rec
    for rec in out.values():
        if rec.get("status") == "running":
            rec["status"] = "crashed"
            rec["error"] = "the process died while running this model (segfault, kill or OOM killer)"
    return out


def append(path: Path, rec: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def machine_meta(opts: Options, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = [f"torch {torch.__version__}"]
    for mod in ("torchvision", "timm", "torch_pruning"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            pass
    vers.append(f"fxprune {fxprune.__version__}")
    return {
        "type": "meta",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu}, {os.cpu_count()} cores, torch threads {threads}",
        "versions": ", ".join(vers),
        "ratio": opts.ratio, "tol": opts.tol, "timeout": opts.timeout,
    }  # fmt: skip


def load_meta(path: Path) -> list[dict[str, Any]]:
    """The run headers (``"type": "meta"`` lines) of a JSONL file, oldest first."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if '"type": "meta"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def merged_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest header, with every run's command (a resumed run is several commands)."""
    if not metas:
        return {}
    meta = dict(metas[-1])
    meta["command"] = "\n".join(dict.fromkeys(m["command"] for m in metas if m.get("command")))
    meta["date"] = " .. ".join(dict.fromkeys((metas[0].get("date"), metas[-1].get("date"))))
    meta["timeout"] = " / ".join(
        f"{t:g}" for t in dict.fromkeys(m.get("timeout") for m in metas) if t is not None
    )
    meta["notes"] = [n for m in metas for n in m.get("notes", [])]
    for m in reversed(metas):
        if m.get("timm_skipped"):
            meta["timm_skipped"] = m["timm_skipped"]
            break
    return meta


def cached_sample(
    metas: list[dict[str, Any]], n: int, max_params: float
) -> tuple[list[ModelSpec], list] | None:
    """The timm sample a previous run of the same settings and timm version recorded."""
    import timm

    for m in reversed(metas):
        c = m.get("timm_sample")
        if c and c.get("timm") == timm.__version__ and c.get("n") == n and c.get("max_params") == max_params:
            return [ModelSpec(a, "timm", f) for a, f in c["models"]], m.get("timm_skipped", [])
    return None


def finite(x: float | None) -> float | str | None:
    if x is None:
        return None
    return x if math.isfinite(x) else str(x)
