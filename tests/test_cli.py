"""The fxprune command: the main job end to end, and a clear exit code on bad input."""

from fxprune.cli import main


def test_prune_prints_before_after_and_passes(capsys) -> None:
    assert main(["prune", "torchvision:resnet18", "--size", "32", "--speedup", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "parameters (M)" in out and "MACs (G)" in out and "CPU latency" in out
    assert "masked-equals-pruned: PASS" in out


def test_bad_ratio_exits_2_with_the_reason(capsys) -> None:
    assert main(["torchvision:resnet18", "--ratio", "1.5", "--size", "32"]) == 2
    assert "ratio must be in [0, 1), got 1.5" in capsys.readouterr().err
