"""benchmarks/zoo.py (the package benchmarks/modelzoo): the per-model record, the error categories, the markdown writer and the
Torch-Pruning side, on tiny models (seconds). The whole torchvision classification list runs
through the same function with ``pytest -m zoo`` (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import modelzoo as zoo  # benchmarks/modelzoo: benchmarks/ is on pytest's pythonpath

EXACT_KEYS = {
    "capture", "groups", "groups_exact", "groups_pruned", "pinned", "pinned_top", "unsupported",
    "unsupported_ops", "params_before", "params_after", "macs_before", "macs_after", "param_reduction",
    "verified", "max_rel_err", "seconds", "stage_seconds", "model_untouched",
}  # fmt: skip


@pytest.fixture(scope="module")
def tv_record() -> dict:
    torch.manual_seed(0)
    return zoo.run_model(zoo.ModelSpec("resnet18", "tv-cls", "resnet"), zoo.Options(size=32))


def test_torchvision_record(tv_record: dict) -> None:
    rec = tv_record
    assert rec["status"] == "pass", rec
    assert rec["input"] == "1x3x32x32"
    ex = rec["exact"]
    assert EXACT_KEYS <= set(ex)
    assert ex["capture"] == "symbolic_trace" and ex["verified"] and ex["max_rel_err"] < 1e-4
    assert ex["model_untouched"]
    assert ex["groups_pruned"] > 0 and ex["groups_exact"] == ex["groups"]
    assert ex["param_reduction"] > 0.3 and ex["params_after"] < ex["params_before"] == rec["params"]
    assert [k for k, _ in ex["pinned_top"]] == ["graph input", "graph output"]  # node names stripped
    assert rec["default"]["verified"] and rec["default"]["params_after"] <= ex["params_after"]
    json.dumps(rec)  # JSON-able as it is


def test_timm_record_and_size_ladder() -> None:
    """vit_tiny only runs at its own size unless built with img_size: the ladder finds that."""
    spec = zoo.ModelSpec("vit_tiny_patch16_224", "timm", "vision_transformer")
    rec = zoo.run_model(spec, zoo.Options(size=32, default_mode=False))
    assert rec["input"] == "1x3x32x32" and rec["input_note"] == "img_size=32x32", rec
    assert rec["status"] == "pass", rec
    assert "default" not in rec and rec["exact"]["verified"]


def test_failure_categories() -> None:
    """Capture failure, timeout and construction failure become categorized records."""

    class Branchy(nn.Module):  # branches on a tensor value: neither fx nor torch.export can capture it
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h if float(h.sum()) > 0 else -h)

    args = (torch.randn(2, 4),)
    with pytest.raises(Exception) as info:
        zoo.run_fxprune(Branchy(), args, zoo.Options(), exact=True)
    assert zoo.stage_of(info.value) == "capture"

    rec = zoo.run_model(zoo.ModelSpec("resnet18", "tv-cls", "resnet"), zoo.Options(size=32, timeout=0.05))
    assert rec["status"] == "timeout" and "timed out" in rec["error"], rec

    bad = zoo.run_model(zoo.ModelSpec("no_such_model", "timm", "x"), zoo.Options(size=32))
    assert bad["status"] == "construct" and bad["error"], bad


def test_resolve_and_sample() -> None:
    assert [s.key for s in zoo.resolve(["resnet18", "timm:resnet10t"])] == [
        "tv-cls:resnet18",
        "timm:resnet10t",
    ]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        zoo.resolve(["nope"])
    a, _ = zoo.timm_sample(4)
    b, _ = zoo.timm_sample(4)
    assert a == b and len({s.family for s in a}) == 4  # one per family in the first round
    assert zoo.reason_kind("Foo at conv_3 has no rule (conv_3)") == "Foo has no rule"


def test_jsonl_and_markdown(tv_record: dict, tmp_path: Path) -> None:
    out = tmp_path / "zoo.jsonl"
    zoo.append(out, {"type": "meta", "command": "python benchmarks/zoo.py x", "date": "d", "ratio": 0.5})
    zoo.append(out, tv_record)
    zoo.append(out, {"name": "dies", "source": "timm", "family": "f", "status": "running"})
    recs = zoo.load_records(out)
    assert recs["tv-cls:resnet18"]["status"] == "pass" and recs["timm:dies"]["status"] == "crashed"
    meta = zoo.merged_meta(zoo.load_meta(out))
    text = zoo.write_markdown(list(recs.values()), tmp_path / "zoo.md", command=meta["command"], meta=meta)
    assert text == (tmp_path / "zoo.md").read_text()
    assert "python benchmarks/zoo.py x" in text and "## Summary by family" in text
    row = next(line for line in text.splitlines() if line.startswith("| tv-cls | resnet18 |"))
    assert f"{tv_record['exact']['param_reduction']:.1%}" in row and "| pass |" in row
    assert "| crashed | 1 | timm:dies |" in text
    assert "1 pass in exact mode" in text


def _tp() -> None:
    pytest.importorskip("torch_pruning")


def test_torch_pruning_side() -> None:
    _tp()
    rec = zoo.run_torch_pruning(*_resnet18_32(), zoo.Options())
    assert rec["ran"] and rec["ignored"] == ["fc"], rec
    assert rec["check"] == "pass" and rec["max_rel_err"] < 1e-4, rec
    assert rec["params_after"] < 0.5 * rec["params_before"]


def test_torch_pruning_check_can_fail() -> None:
    """A LayerNorm over the pruned dim: removing channels changes its statistics, so the
    masked original and Torch-Pruning's model differ, and the check says so."""
    _tp()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 4)).eval()
    rec = zoo.run_torch_pruning(model, (torch.randn(3, 8),), zoo.Options())
    assert rec["ran"] and rec["check"] == "fail" and rec["max_rel_err"] > 1e-3, rec
    assert rec["ignored"] == ["3"]


def _resnet18_32() -> tuple[nn.Module, tuple]:
    import torchvision

    from fxprune.testing import randomize_

    torch.manual_seed(0)
    model = randomize_(torchvision.models.resnet18().eval())
    return model, (torch.randn(1, 3, 32, 32),)


@pytest.mark.zoo
@pytest.mark.parametrize("name", [s.name for s in zoo.torchvision_specs("tv-cls")])
def test_torchvision_classification_zoo(name: str) -> None:
    """The issue's bar: every torchvision classification model passes masked-equals-pruned in
    exact mode at ratio 0.5 with at least 30% fewer parameters."""
    rec = zoo.run_model(zoo.ModelSpec(name, "tv-cls", "?"), zoo.Options(default_mode=False))
    assert rec["status"] == "pass", (rec.get("status"), rec.get("error"))
    assert rec["exact"]["param_reduction"] >= 0.3, rec["exact"]["param_reduction"]
