"""The fxprune command: the main job end to end, save then load, report, bench, and a clear exit
code and message on bad input."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torchvision

import fxprune
from fxprune.cli import main


def test_prune_prints_before_after_and_passes(capsys) -> None:
    assert main(["prune", "torchvision:resnet18", "--size", "32", "--speedup", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "parameters (M)" in out and "MACs (G)" in out and "CPU latency" in out
    assert "masked-equals-pruned: PASS" in out


def test_bad_ratio_exits_2_with_the_reason(capsys) -> None:
    assert main(["torchvision:resnet18", "--ratio", "1.5", "--size", "32"]) == 2
    assert "ratio must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_prune_out_then_load_equals_the_in_process_pruned_model(tmp_path, capsys) -> None:
    out = tmp_path / "r18"
    args = ["prune", "torchvision:resnet18", "--ratio", "0.5", "--size", "32", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    assert f"saved to {out}" in capsys.readouterr().out
    torch.manual_seed(0)  # the command's --seed default: the same random weights
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    here = fxprune.compile(model, 0.5, example_inputs=torch.randn(1, 3, 32, 32))
    loaded = fxprune.load(out)  # rebuilt from the manifest's spec, torchvision:resnet18
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), here.eval()(x))


def test_bench_a_saved_directory(tmp_path, capsys) -> None:
    out = tmp_path / "r18"
    assert main(["prune", "resnet18", "--size", "32", "--threads", "1", "--out", str(out), "--iters", "2"]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--threads", "1", "--iters", "2"]) == 0
    text = capsys.readouterr().out
    assert f"torchvision:resnet18 vs the pruned model saved in {out}" in text
    assert "MACs (G)" in text and "CPU latency" in text


def test_bench_a_model_spec(capsys) -> None:
    assert main(["bench", "torchvision:resnet18", "--size", "32", "--ratio", "0.25", "--threads", "1", "--iters", "2"]) == 0
    text = capsys.readouterr().out
    assert "ratio 0.25" in text and "parameters (M)" in text and "masked-equals-pruned" not in text


def test_report_names_groups_pins_and_ops_without_a_rule(tmp_path, capsys) -> None:
    src = tmp_path / "net.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

            def forward(self, x):
                return self.c(self.b(torch.renorm(self.a(x), 2, 1, 5.0)))

        def make():
            return Net()
    """))
    assert main(["report", f"{src}:make", "--size", "8"]) == 0
    text = capsys.readouterr().out
    assert "1 prunable groups" in text and "b.weight[0]" in text  # b -> c is free to prune
    assert "graph input x" in text and "graph output" in text
    assert "ops without a rule" in text and "torch.renorm" in text and "register_rule" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "torchvision:resnet81"], "torchvision has no model 'resnet81'; did you mean resnet18"),
        (["prune", "nowhere/model.py:make"], "model file 'nowhere/model.py' not found"),
        (["prune", "keras:resnet18"], "unknown model source 'keras'"),
        (["prune", "resnet18", "--ratio", "0.5", "--speedup", "2"], "give one of --ratio, --speedup or --params"),
        (["bench", "resnet18", "--speedup", "0.5"], "--speedup must be >= 1"),
        (["prune", "resnet18", "--shape", "1,three"], "--shape must be comma-separated ints"),
        (["prune", "resnet18", "--threads", "0"], "--threads must be >= 1"),
        (["bench", "resnet18", "--iters", "0"], "--iters must be >= 1"),
    ],
)
def test_bad_input_exits_2_and_says_why(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_untraceable_model_exits_2_with_the_capture_error(tmp_path, capsys) -> None:
    src = tmp_path / "bad.py"
    src.write_text(textwrap.dedent("""
        from torch import nn

        class Bad(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Conv2d(3, 8, 3)

            def forward(self, x):
                return self.a(x) if x.sum() > 0 else x

        def make():
            return Bad()
    """))
    assert main(["prune", f"{src}:make", "--size", "8"]) == 2
    assert "fxprune.capture" in capsys.readouterr().err


def test_a_broken_saved_directory_exits_2(tmp_path, capsys) -> None:
    out = tmp_path / "r18"
    assert main(["prune", "resnet18", "--size", "32", "--threads", "1", "--out", str(out), "--iters", "1"]) == 0
    (out / "weights.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["bench", str(out)]) == 2
    assert "weights.safetensors does not match its checksum" in capsys.readouterr().err


def test_keyword_inputs_from_the_command_line(tmp_path, capsys) -> None:
    src = tmp_path / "two.py"
    src.write_text(
        "import torch\nfrom torch import nn\n"
        "class Two(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(5, 16, 3, padding=1)\n"
        "        self.head = nn.Conv2d(16, 2, 1)\n"
        "    def forward(self, image, extra):\n"
        "        return self.head(torch.relu(self.a(image) + self.b(extra)))\n"
        "def build():\n    return Two()\n"
    )
    args = ["prune", f"{src}:build", "--input", "extra=2,5,8,8", "--input", "image=2,3,8,8", "--threads", "1", "--iters", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "extra=2x5x8x8, image=2x3x8x8" in out and "PASS" in out
    assert main(["report", f"{src}:build", "--input", "imgae=2,3,8,8", "--input", "extra=2,5,8,8"]) == 2
    assert "image" in capsys.readouterr().err
