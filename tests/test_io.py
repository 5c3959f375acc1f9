"""Save / load / export: round trips are bit-exact (also in a fresh process), nothing is
unpickled, and a corrupted or mismatched directory fails with a message naming what differs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import fxprune
from fxprune.io import MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE, SaveFormatError
from fxprune.testing import randomize_

REPO = Path(__file__).resolve().parents[1]
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return randomize_(torchvision.models.resnet18(num_classes=10)).eval()


@pytest.fixture(scope="module")
def pruned() -> torch.fx.GraphModule:
    return fxprune.compile(_resnet18(), 0.5, example_inputs=X[:1])


@pytest.fixture()
def saved(pruned, tmp_path) -> Path:
    return fxprune.save(pruned, tmp_path / "r18", example_inputs=X[:1])


def test_save_writes_plan_weights_and_manifest(pruned, saved) -> None:
    assert sorted(os.listdir(saved)) == sorted([PLAN_FILE, WEIGHTS_FILE, MANIFEST_FILE])
    plan = fxprune.Plan.from_json((saved / PLAN_FILE).read_text())
    assert plan == pruned.meta["fxprune.report"].plan
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert manifest["inputs"] == [{"shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert manifest["fxprune_version"] == fxprune.__version__ and manifest["torch_version"] == torch.__version__
    sd = pruned.state_dict()
    assert manifest["state_dict"] == {k: {"shape": list(v.shape), "dtype": str(v.dtype)[6:]} for k, v in sd.items()}
    assert set(manifest["sha256"]) == {PLAN_FILE, WEIGHTS_FILE}


def test_load_is_bit_exact_and_leaves_the_fresh_model_alone(pruned, saved) -> None:
    fresh = torchvision.models.resnet18(num_classes=10)  # other random weights: they must not matter
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    loaded = fxprune.load(saved, fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert loaded.state_dict().keys() == pruned.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in pruned.state_dict().items())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(X), pruned.eval()(X))
    assert loaded.meta["fxprune.plan"] == pruned.meta["fxprune.report"].plan
    # the loaded module still verifies against the original it came from
    assert fxprune.verify(_resnet18(), loaded, X[:1], plan=loaded.meta["fxprune.plan"]).passed


def test_load_in_a_fresh_process_gives_identical_outputs(pruned, tmp_path) -> None:
    out = fxprune.save(pruned, tmp_path / "r18", example_inputs=X[:1], spec="torchvision:resnet18")
    # the spec builds the default 1000-class head, so spell the factory out instead
    factory = tmp_path / "factory.py"
    factory.write_text("import torchvision\ndef make():\n    return torchvision.models.resnet18(num_classes=10)\n")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["model"] = f"{factory}:make"
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    torch.save(X, tmp_path / "x.pt")
    code = textwrap.dedent(f"""
        import torch, fxprune
        torch.set_num_threads(1)
        m = fxprune.load({str(out)!r}, trust_code=True).eval()  # no model: built from the manifest's spec (our own file)
        x = torch.load({str(tmp_path / "x.pt")!r})      # default weights_only=True
        with torch.no_grad():
            torch.save(m(x), {str(tmp_path / "y.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            want = pruned.eval()(X)
    finally:
        torch.set_num_threads(threads)
    got = torch.load(tmp_path / "y.pt")  # weights_only=True (the default) reads it
    assert torch.equal(got, want)


def test_tied_weights_and_modes_round_trip(tmp_path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.fc1 = nn.Linear(16, 32)
            self.drop = nn.Dropout(0.5)
            self.fc2 = nn.Linear(32, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.fc2(self.drop(torch.relu(self.fc1(self.emb(ids))))))

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 7))
    small = fxprune.compile(Tied(), 0.5, example_inputs=ids)
    small.eval()
    small.drop.train()  # a mode that differs from the root's must come back as saved
    out = fxprune.save(small, tmp_path / "tied", example_inputs=ids)
    loaded = fxprune.load(out, Tied())
    assert loaded.head.weight is loaded.emb.weight
    assert [m.training for m in loaded.modules()] == [m.training for m in small.modules()]
    small.drop.eval()
    loaded.drop.eval()
    assert torch.equal(loaded(ids), small(ids))


def test_corrupted_weights_name_the_file(saved) -> None:
    blob = bytearray((saved / WEIGHTS_FILE).read_bytes())
    blob[-5] ^= 0xFF
    (saved / WEIGHTS_FILE).write_bytes(bytes(blob))
    with pytest.raises(SaveFormatError, match=r"weights\.safetensors does not match its checksum"):
        fxprune.load(saved, _resnet18())


def test_missing_file_and_bad_manifest_are_named(saved) -> None:
    (saved / PLAN_FILE).unlink()
    with pytest.raises(SaveFormatError, match=r"plan\.json is missing"):
        fxprune.load(saved, _resnet18())
    (saved / PLAN_FILE).write_text("{}")
    (saved / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(SaveFormatError, match=r"manifest\.json is not valid JSON"):
        fxprune.load(saved, _resnet18())


def test_manifest_shape_mismatch_names_the_key(saved) -> None:
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    manifest["state_dict"]["layer2.0.conv1.weight"]["shape"][0] += 1
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SaveFormatError, match=r"layer2\.0\.conv1\.weight is \[\d+, \d+, 3, 3\] float32 after applying"):
        fxprune.load(saved, _resnet18())


def test_other_architecture_is_refused_clearly(saved, tmp_path) -> None:
    with pytest.raises(SaveFormatError, match=r"has 96 tensors that were not saved \(layer1\.2\.conv1\.weight"):
        fxprune.load(saved, torchvision.models.resnet34(num_classes=10))
    with pytest.raises(SaveFormatError, match=r"fc\.weight is \[7, 256\] float32 after applying the plan, but the manifest saved \[10, 256\]"):
        fxprune.load(saved, torchvision.models.resnet18(num_classes=7))
    # same tensor names, other widths: the plan's groups do not fit
    mlp = lambda hidden: nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))  # noqa: E731
    x = torch.randn(1, 8)
    out = fxprune.save(fxprune.compile(mlp(16), 0.5, example_inputs=x), tmp_path / "mlp", example_inputs=x)
    with pytest.raises(fxprune.PlanError, match="does not fit the Sequential given"):
        fxprune.load(out, mlp(32))


def test_load_without_spec_or_inputs_says_what_to_pass(pruned, tmp_path) -> None:
    bare = copy.copy(pruned)  # a module whose input shapes nobody recorded (e.g. built by fxprune.rewrite)
    bare.meta = {k: v for k, v in pruned.meta.items() if k != "fxprune.inputs"}
    out = fxprune.save(bare, tmp_path / "bare")
    with pytest.raises(ValueError, match="records no model spec"):
        fxprune.load(out)
    with pytest.raises(ValueError, match="pass example_inputs="):
        fxprune.load(out, _resnet18())
    loaded = fxprune.load(out, _resnet18(), example_inputs=X[:1])
    assert torch.equal(loaded.eval()(X), pruned.eval()(X))


def test_save_needs_a_plan(tmp_path) -> None:
    with pytest.raises(ValueError, match="carries no plan"):
        fxprune.save(nn.Linear(2, 2), tmp_path / "x")


def test_export_pt2_loads_with_torch_export(pruned, tmp_path) -> None:
    path = fxprune.export(pruned, tmp_path / "r18.pt2", X[:1])
    program = torch.export.load(str(path))
    with torch.no_grad():
        assert torch.equal(program.module()(X[:1]), pruned.eval()(X[:1]))
    with pytest.raises(ValueError, match=r"should end in \.pt2"):
        fxprune.export(pruned, tmp_path / "r18.pt", X[:1])


def test_depth_pruned_plan_round_trips(tmp_path) -> None:
    """A plan with removed blocks (depth pruning) is rebuilt by the same rewrite."""
    small = fxprune.compile(_resnet18(), 0.3, example_inputs=X[:1], depth=["layer3.1"])
    assert small.meta["fxprune.report"].plan.removed_blocks
    loaded = fxprune.load(fxprune.save(small, tmp_path / "d", example_inputs=X[:1]), _resnet18())
    assert loaded.state_dict().keys() == small.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(X), small.eval()(X))


def test_save_without_example_inputs_uses_the_shapes_compile_recorded(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    small = fxprune.compile(model, 0.5, example_inputs=x)
    fxprune.save(small, tmp_path / "r18")  # no example_inputs: compile recorded their shapes
    back = fxprune.load(tmp_path / "r18", torchvision.models.resnet18())
    with torch.no_grad():
        assert torch.equal(back(x), small(x))


def test_a_file_spec_in_a_manifest_runs_only_when_trusted(tmp_path) -> None:
    factory = tmp_path / "net.py"
    factory.write_text("import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n")
    x = torch.randn(2, 8)
    model = fxprune.io.build_model(f"{factory}:make")
    out = fxprune.save(fxprune.compile(model, 0.5, example_inputs=x), tmp_path / "s", spec=f"{factory}:make")
    with pytest.raises(ValueError, match="trust_code=True"):
        fxprune.load(out)
    assert fxprune.load(out, trust_code=True)(x).shape == (2, 4)


def test_a_manifest_without_checksums_is_refused(saved) -> None:
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    del manifest["sha256"]
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SaveFormatError, match="lacks the sha256"):
        fxprune.load(saved, _resnet18())
