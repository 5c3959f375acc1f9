"""round_to="auto": hardware-aware widths (fxprune.hardware).

The decision logic is tested against a synthetic cost model substituted for the timer (a
staircase device with a tile of 8 channels, and one layer that no narrower width speeds up),
so the expected widths are known exactly; one test runs the real timer end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import fxprune
from fxprune import hardware
from fxprune.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 40, 3, padding=1)
        self.c3 = nn.Conv2d(40, 48, 1)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = self.c3(self.c2(self.c1(x).relu()).relu()).relu()
        return self.head(x.mean((2, 3)))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(tmp_path))
    return tmp_path


def _tile(n: int, t: int = 8) -> int:
    return math.ceil(n / t) * t


@pytest.fixture
def staircase(monkeypatch):
    """A device whose convs cost (in tiles) x (out tiles) x pixels x taps, tiles of 8
    channels; c3 (Net's 1x1 conv) costs the same at any width: narrowing it buys nothing."""
    calls = []

    def cost(layer, x, device, repeat=15):
        calls.append(layer)
        if isinstance(layer, nn.Linear):
            return _tile(layer.in_features) * _tile(layer.out_features) * 1e-6
        if layer.kernel_size == (1, 1) and layer.in_channels != 256:  # (256: measure_step's probe)
            return 1.0  # c3 costs the same at any width
        pixels = x.shape[-1] * x.shape[-2]
        return _tile(layer.in_channels) * _tile(layer.out_channels) * pixels * layer.kernel_size[0] ** 2 * 1e-7

    monkeypatch.setattr(hardware, "_layer_ms", cost)
    # end to end, the pruned model is faster (the give-up path has its own test)
    monkeypatch.setattr(hardware, "end_to_end", lambda gm, pruned, inputs, **kw: (2.0, 1.0, 1.0))
    return calls


def _widths(out):
    return {k: tuple(v.shape) for k, v in out.state_dict().items() if k.endswith("weight")}


def test_step_is_the_staircase_tile(cache_dir, staircase):
    assert hardware.measure_step(torch.device("cpu"), torch.float32) == 8


def test_auto_rounds_to_the_step_and_keeps_unhelpful_groups_whole(cache_dir, staircase):
    m = Net().eval()
    out = fxprune.compile(m, 0.3, example_inputs=X, round_to="auto", verify=True)
    w = _widths(out)
    # c1: 64 * 0.7 = 44.8 -> 45 -> nearest multiple of 8: 48; c2: 40 * 0.7 = 28 -> 32 (nearest, ties up)
    assert w["c1.weight"][0] == 48 and w["c2.weight"][0] == 32
    # c3's outputs: narrowing is no faster on this device, so the group stays whole
    assert w["c3.weight"][0] == 48
    report = out.meta["fxprune.report"]
    hw = report.plan.meta["round_to"]
    assert hw["step"] == 8 and len(hw["kept_whole"]) == 1
    assert any("kept whole" in n and "no faster" in n for n in report.notes)
    assert report.verification.passed
    # an int round_to of the same step gives the same c1/c2 widths only where rounding up agrees
    plain = _widths(fxprune.compile(m, 0.3, example_inputs=X, round_to=1))
    assert plain["c1.weight"][0] == 45 and plain["c3.weight"][0] == 34


def test_auto_measurements_are_cached_per_device(cache_dir, staircase):
    m = Net().eval()
    fxprune.compile(m, 0.5, example_inputs=X, round_to="auto")
    first = len(staircase)
    data = json.loads((cache_dir / "latency.json").read_text())
    (key,) = data
    assert key == hardware.device_key(torch.device("cpu"), torch.float32) and data[key]["step"] == 8
    out = fxprune.compile(m, 0.5, example_inputs=X, round_to="auto")
    assert len(staircase) == first, "the second compile re-measured"
    assert out.meta["fxprune.report"].plan.meta["round_to"]["measured"] == 0


def test_auto_latency_monotonic_in_ratio_under_the_cost_model(cache_dir, staircase):
    """Under the staircase device, the summed cost of the pruned model's convs never rises
    with the ratio, and no ratio costs more than the original."""
    m = Net().eval()

    def total(out):
        s = 0.0
        for mod in out.modules():
            if isinstance(mod, nn.Conv2d):
                s += hardware._layer_ms(mod, torch.empty(1, mod.in_channels, 16, 16), torch.device("cpu"))
        return s

    base = total(m)
    costs = [total(fxprune.compile(m, r, example_inputs=X, round_to="auto")) for r in (0.0, 0.05, 0.1, 0.3, 0.5, 0.7)]
    assert costs[0] == pytest.approx(base)
    assert all(b <= a + 1e-12 for a, b in zip(costs, costs[1:])), costs
    assert max(costs) <= base + 1e-12


def test_auto_with_real_timer(cache_dir):
    """The real measurement path: a plan that verifies, a cache file, a step in 1..64."""
    m = Net().eval()
    out = fxprune.compile(m, 0.5, example_inputs=X, round_to="auto", verify=True)
    hw = out.meta["fxprune.report"].plan.meta["round_to"]
    assert hw["step"] in (1, 2, 4, 8, 16, 32, 64) and hw["measured"] > 0
    assert out.meta["fxprune.report"].verification.passed
    assert (cache_dir / "latency.json").exists()


def test_auto_with_speedup_target(cache_dir, staircase):
    m = Net().eval()
    out = fxprune.compile(m, speedup=1.5, example_inputs=X, round_to="auto")
    w = _widths(out)
    assert all(w[k][0] % 8 == 0 for k in ("c1.weight", "c2.weight", "c3.weight"))


def test_auto_unwritable_cache_still_works(tmp_path, monkeypatch, staircase):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(blocker / "sub"))
    out = fxprune.compile(Net().eval(), 0.5, example_inputs=X, round_to="auto")
    assert out.meta["fxprune.report"].plan.meta["round_to"]["step"] == 8


@pytest.mark.parametrize("bad", ["fast", 0, -8, 2.5, True])
def test_round_to_bad_values(bad):
    with pytest.raises(ValueError, match="round_to"):
        fxprune.compile(Net().eval(), 0.5, example_inputs=X, round_to=bad)


def test_cli_round_to_auto(cache_dir, staircase, tmp_path, capsys):
    rc = cli_main(["prune", "resnet18", "--ratio", "0.5", "--size", "32", "--round-to", "auto", "--iters", "1"])
    assert rc == 0
    assert "round_to=auto" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli_main(["prune", "resnet18", "--round-to", "fast"])
    assert e.value.code == 2
    assert "--round-to: expected a positive int or 'auto', got 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "profile, step",
    [
        (lambda w: _tile(w, 8) * 1e-3, 8),  # flat stairs of 8: pad up to the stair's top
        (lambda w: w * 1e-3, 1),  # latency grows with every channel: no step
        (lambda w: 0.26 if w % 16 == 0 else 0.30 + w * 1e-5, 16),  # multiples of 16 fast (oneDNN, AVX-512)
        (lambda w: _tile(w, 32) * 1e-3, 32),
    ],
    ids=["stairs8", "linear", "fast16", "stairs32"],
)
def test_step_from_profiles(profile, step):
    assert hardware._step_from({w: profile(w) for w in range(129, 257)}) == step


@pytest.mark.parametrize("spike_at", [201, 225, 161])
@pytest.mark.parametrize("base", ["flat", "linear", "stairs8"])
def test_step_ignores_a_single_spike(base, spike_at):
    """One noisy timing (5% high) repeats nowhere: it must not set a step (it used to give 8
    or 32 by where it fell), and it does not hide a real staircase either."""
    f = {"flat": lambda w: 1.0, "linear": lambda w: w * 1e-3, "stairs8": lambda w: _tile(w, 8) * 1e-3}[base]
    lat = {w: f(w) for w in range(129, 257)}
    lat[spike_at] *= 1.05
    assert hardware._step_from(lat) == (8 if base == "stairs8" else 1)


def test_auto_gives_up_when_the_pruned_model_is_slower(cache_dir, staircase, monkeypatch):
    """End to end, the pruned model measured slower than the original: nothing is removed,
    and the report says why with both timings."""
    monkeypatch.setattr(hardware, "end_to_end", lambda gm, pruned, inputs, **kw: (1.0, 1.2, 0.0))
    m = Net().eval()
    out = fxprune.compile(m, 0.5, example_inputs=X, round_to="auto", verify=True)
    assert fxprune.count_params(out) == fxprune.count_params(m)
    report = out.meta["fxprune.report"]
    assert not report.plan.keep and report.verification.passed
    assert any("ran slower than the original" in n and "1.20 ms vs 1.00 ms" in n for n in report.notes)
    with torch.no_grad():
        torch.testing.assert_close(out(X), m(X), rtol=0, atol=0)
    # a target that was given up is not reported as reached
    target = fxprune.compile(m, speedup=1.5, example_inputs=X, round_to="auto").meta["fxprune.report"]
    assert "reached" not in str(target) and "speedup" not in target.plan.meta


@pytest.mark.parametrize("wins, kept", [(5 / 7, False), (6 / 7, True)])
def test_auto_needs_the_pruned_model_faster_in_most_rounds(cache_dir, staircase, monkeypatch, wins, kept):
    """A faster median is not enough: the pruned model must also win most paired rounds, or
    nothing is removed (noise alone can make an equally fast model's median look faster)."""
    monkeypatch.setattr(hardware, "end_to_end", lambda gm, pruned, inputs, **kw: (1.0, 0.97, wins))
    m = Net().eval()
    out = fxprune.compile(m, 0.5, example_inputs=X, round_to="auto")
    assert (fxprune.count_params(out) < fxprune.count_params(m)) == kept
    notes = " ".join(out.meta["fxprune.report"].notes)
    assert ("was not reliably faster than the original" in notes) != kept
    assert f"{wins:.0%}" in notes


def test_end_to_end_times_both_models_and_keeps_their_flags():
    m = Net().eval()
    small = fxprune.compile(m, 0.75, example_inputs=X)
    gm = fxprune.analyze(m, X)
    small.train()
    gm.c1.train()
    base, pruned, wins = hardware.end_to_end(gm, small, (X,), rounds=3, iters=2)
    assert base > 0 and pruned > 0 and wins in (0, 1 / 3, 2 / 3, 1)
    assert small.training and all(s.training for s in small.modules())
    assert not gm.training and gm.c1.training


def test_auto_rounds_only_where_it_cannot_time(cache_dir, staircase, monkeypatch):
    """A device whose clock is not trusted here (not CPU or CUDA): counts stay as the ratio
    gives them, nothing is timed, no end-to-end check."""
    monkeypatch.setattr(hardware, "measurable", lambda device: False)
    monkeypatch.setattr(fxprune.hardware, "end_to_end", lambda *a, **k: pytest.fail("timed end to end"))
    out = fxprune.compile(Net().eval(), 0.3, example_inputs=X, round_to="auto")
    assert _widths(out)["c1.weight"][0] == 45 and not staircase


# -- memory format: channels_last models are measured channels_last ---------------------------


def _channels_last(m: nn.Module) -> nn.Module:
    return m.to(memory_format=torch.channels_last)


def _is_cl(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_device_key_names_the_memory_format():
    cpu = torch.device("cpu")
    plain = hardware.device_key(cpu, torch.float32)
    assert plain == hardware.device_key(cpu, torch.float32, torch.contiguous_format)
    cl = hardware.device_key(cpu, torch.float32, torch.channels_last)
    assert plain.endswith("|float32|contiguous") and cl.endswith("|float32|channels_last")
    assert hardware.device_key(cpu, torch.bfloat16, torch.channels_last).endswith("|bfloat16|channels_last")


def test_memory_format_of():
    assert hardware.memory_format_of(Net()) == torch.contiguous_format
    assert hardware.memory_format_of(_channels_last(Net())) == torch.channels_last
    assert hardware.memory_format_of(nn.Linear(3, 4)) == torch.contiguous_format
    # 1x1 kernels are both layouts at once: they decide nothing
    assert hardware.memory_format_of(_channels_last(nn.Conv2d(8, 8, 1))) == torch.contiguous_format


def test_probe_builds_in_the_memory_format():
    conv = hardware._Probe(nn.Conv2d(8, 16, 3), (2, 8, 10, 10), 0, 16)
    layer, x = conv.build(12, torch.device("cpu"), torch.bfloat16, torch.channels_last)
    assert layer.weight.shape == (12, 8, 3, 3) and layer.weight.dtype == torch.bfloat16
    assert _is_cl(layer.weight) and _is_cl(x) and x.dtype == torch.bfloat16
    layer, x = conv.build(12, torch.device("cpu"), torch.float32)
    assert layer.weight.is_contiguous() and x.is_contiguous()
    lin = hardware._Probe(nn.Linear(8, 16), (2, 5, 8), 1, 8)
    layer, x = lin.build(4, torch.device("cpu"), torch.float32, torch.channels_last)  # not 4-d: unchanged
    assert layer.weight.shape == (16, 4) and x.shape == (2, 5, 4)


def test_auto_measures_a_channels_last_model_channels_last(cache_dir, monkeypatch):
    """The cache key says channels_last, the step's probe and every rebuilt 2-d conv (and its
    input) are channels_last, and the pruned model comes back channels_last."""
    seen = []

    def cost(layer, x, device, repeat=15):
        seen.append((layer, x))
        if isinstance(layer, nn.Linear):
            return _tile(layer.in_features) * _tile(layer.out_features) * 1e-6
        return _tile(layer.in_channels) * _tile(layer.out_channels) * layer.kernel_size[0] ** 2 * 1e-7

    monkeypatch.setattr(hardware, "_layer_ms", cost)
    real_end_to_end = hardware.end_to_end

    def e2e(gm, pruned, inputs, **kw):  # the real one (it converts the layout), then "faster"
        real_end_to_end(gm, pruned, inputs, rounds=1, iters=1)
        return (2.0, 1.0, 1.0)

    monkeypatch.setattr(hardware, "end_to_end", e2e)
    m = _channels_last(Net().eval())
    x = X.contiguous(memory_format=torch.channels_last)
    out = fxprune.compile(m, 0.5, example_inputs=x, round_to="auto")
    key = hardware.device_key(torch.device("cpu"), torch.float32, torch.channels_last)
    assert json.loads((cache_dir / "latency.json").read_text()).keys() == {key}
    assert out.meta["fxprune.report"].plan.meta["round_to"]["device"] == key
    convs = [(layer, x) for layer, x in seen if isinstance(layer, nn.Conv2d)]
    assert convs and all(_is_cl(x) for _, x in convs)
    assert all(layer.weight.is_contiguous(memory_format=torch.channels_last) for layer, _ in convs)
    assert any(_is_cl(layer.weight) for layer, _ in convs)  # the 3x3 ones tell the layouts apart
    assert hardware.memory_format_of(out) == torch.channels_last  # end_to_end converted it
    # the same model, contiguous: another key, measured again
    fxprune.compile(Net().eval(), 0.5, example_inputs=X, round_to="auto")
    keys = json.loads((cache_dir / "latency.json").read_text()).keys()
    assert keys == {key, hardware.device_key(torch.device("cpu"), torch.float32)}


def test_end_to_end_times_a_channels_last_pruned_model_channels_last():
    m = _channels_last(Net().eval())
    x = X.contiguous(memory_format=torch.channels_last)
    gm = fxprune.analyze(m, x)
    small = fxprune.rewrite(gm, fxprune.make_plan(gm, 0.5))
    assert hardware.memory_format_of(small) == torch.contiguous_format  # the rewrite's new weights
    base, pruned, wins = hardware.end_to_end(gm, small, (x,), rounds=2, iters=1)
    assert base > 0 and pruned > 0
    assert hardware.memory_format_of(small) == torch.channels_last


# -- fxprune.measure: the shared timer ---------------------------------------------------------


def test_time_calls_and_interleaved_on_cpu():
    from fxprune import measure

    calls = []
    t = measure.time_calls(lambda: calls.append(1), "cpu", iters=4, warmup=2)
    assert len(t) == 4 and len(calls) == 6 and all(v >= 0 for v in t)
    with pytest.raises(ValueError, match="iters"):
        measure.time_calls(lambda: None, "cpu", iters=0)
    order = []
    a, b = measure.interleaved([lambda: order.append("a"), lambda: order.append("b")], "cpu",
                               rounds=3, iters=2, warmup=1, round_warmup=1, reduce=min)  # fmt: skip
    assert len(a) == len(b) == 3
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    s = measure.spread([1.0, 2.0, 4.0])
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 4.0 and s["rel"] == 0.75


def test_models_ms_and_latency_ms_keep_flags():
    from fxprune import measure

    m = Net()
    m.c1.eval()
    base, other = measure.models_ms([m, nn.Identity()], (X,), rounds=2, iters=1)
    assert len(base) == len(other) == 2
    assert m.training and not m.c1.training and m.c2.training
    assert fxprune.latency_ms(m, (X,), warmup=1, iters=3) > 0
    assert m.training and not m.c1.training
    assert measure.device_of((X,), m) == torch.device("cpu") and measure.device_of(nn.ReLU()) == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_latency_ms_on_cuda_measures_the_kernels():
    """On a GPU the timer waits for the work: a matmul chain takes measurably longer than
    its launch, and a bf16 channels_last model is timed and measured at its layout."""
    from fxprune import measure

    a = torch.randn(4096, 4096, device="cuda")

    def work():
        for _ in range(20):
            a @ a

    ms = measure.time_calls(work, "cuda", iters=3, warmup=1)
    assert min(ms) > 1.0  # 20 products of 4096^3 take milliseconds, their launches microseconds
    m = _channels_last(Net().eval().to("cuda", torch.bfloat16))
    x = X.to("cuda", torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert fxprune.latency_ms(m, (x,), warmup=1, iters=3) > 0
    assert hardware.device_key(torch.device("cuda"), torch.bfloat16, torch.channels_last).startswith("cuda:")
