"""The public API: bad input gets a clear error, the model is never touched, plans travel."""

import copy

import pytest
import torch
from torch import nn

import fxprune
from fxprune.testing import randomize_, snapshot, unchanged


class _Small(nn.Module):
    """conv-bn-relu, a residual add, a strided conv, flatten into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.b2 = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = y + self.b2(self.c2(y))
        return self.fc(torch.flatten(self.c3(y).relu(), 1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return randomize_(_Small().eval())


X = torch.randn(2, 3, 8, 8)


def test_compile_prunes_and_proves() -> None:
    """ratio 0.5 halves both prunable groups; the result passes masked-equals-pruned."""
    m = _model()
    out = fxprune.compile(m, 0.5, example_inputs=X, verify=True)
    sd = out.state_dict()
    assert sd["c1.weight"].shape == (8, 3, 3, 3)
    assert sd["b2.running_var"].shape == (8,)
    assert sd["c3.weight"].shape == (16, 8, 3, 3)
    assert sd["fc.weight"].shape == (10, 16 * 16)  # each kept channel keeps its 4x4 columns
    assert out.c3.in_channels == 8 and out.fc.in_features == 256
    report = out.meta["fxprune.report"]
    assert report.verification.passed and report.verification.max_rel_err < 1e-6
    assert out(X).shape == (2, 10)
    assert set(sd) == set(m.state_dict())


def test_ratio_zero_equals_eager() -> None:
    m = _model()
    out = fxprune.compile(m, 0.0, example_inputs=X)
    torch.testing.assert_close(out(X), m(X))
    assert fxprune.count_params(out) == fxprune.count_params(m)


def test_report_text_and_html() -> None:
    out = fxprune.compile(_model(), 0.5, example_inputs=X)
    report = out.meta["fxprune.report"]
    text = str(report)
    assert "parameters" in text and "MACs" in text
    assert report.macs_after < report.macs_before
    html = report._repr_html_()
    assert "<table>" in html
    assert "graph output" in report.details()  # the head's out features are pinned, with the reason


def test_plan_json_round_trip_and_rewrite() -> None:
    m = _model()
    gm = fxprune.analyze(m, X)
    plan = fxprune.make_plan(gm, 0.5)
    again = fxprune.Plan.from_json(plan.to_json())
    assert again.keep == plan.keep and again.groups == plan.groups
    a, b = fxprune.rewrite(gm, plan), fxprune.rewrite(gm, again)
    torch.testing.assert_close(a(X), b(X))


def test_rewrite_without_plan_says_what_to_do() -> None:
    gm = fxprune.analyze(_model(), X)
    with pytest.raises(ValueError, match="run fxprune.analyze and make_plan first"):
        fxprune.rewrite(gm)


def test_plan_for_another_model_is_refused() -> None:
    plan = fxprune.make_plan(fxprune.analyze(_model(), X), 0.5)

    class Other(_Small):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 24, 3, padding=1)
            self.b1 = nn.BatchNorm2d(24)
            self.c2 = nn.Conv2d(24, 24, 3, padding=1)
            self.b2 = nn.BatchNorm2d(24)
            self.c3 = nn.Conv2d(24, 32, 3, stride=2, padding=1)

    with pytest.raises(fxprune.PlanError, match="does not match"):
        fxprune.rewrite(fxprune.analyze(Other().eval(), X), plan)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half", True])
def test_bad_ratio(ratio: object) -> None:
    m = _model()
    snap = snapshot(m)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        fxprune.compile(m, ratio, example_inputs=X)  # type: ignore[arg-type]
    assert unchanged(m, snap)


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fxprune.compile(lambda x: x, 0.5, example_inputs=X)  # type: ignore[arg-type]


def test_unknown_criterion() -> None:
    with pytest.raises(ValueError, match="unknown importance criterion 'taylor2'"):
        fxprune.compile(_model(), 0.5, example_inputs=X, importance="taylor2")


def test_untraceable_model_quotes_the_failure() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                return self.c(x)
            return x

    m = Branchy()
    snap = snapshot(m)
    with pytest.raises(fxprune.CaptureError, match="symbolic_trace could not trace Branchy") as e:
        fxprune.compile(m, 0.5, example_inputs=X)
    assert "Try:" in str(e.value)
    assert unchanged(m, snap) and m.training


def test_inputs_that_do_not_run_the_model() -> None:
    m = _model()
    snap = snapshot(m)
    with pytest.raises(fxprune.CaptureError, match=r"example inputs \(\(2, 5, 8, 8\) float32\) do not run _Small"):
        fxprune.compile(m, 0.5, example_inputs=torch.randn(2, 5, 8, 8))
    assert unchanged(m, snap)


def test_model_untouched_and_modes_kept() -> None:
    """compile leaves parameters, buffers and train/eval flags as they were; the pruned
    module takes the model's flags."""
    m = _model().train()
    snap = snapshot(m)
    structure = copy.deepcopy(m)
    out = fxprune.compile(m, 0.5, example_inputs=X, verify=True)
    assert unchanged(m, snap)
    assert m.training and all(a.training == b.training for a, b in zip(m.modules(), structure.modules()))
    assert out.training and out.b1.training
    assert m.c1.out_channels == 16


def test_rewrite_copies_like_deepcopy() -> None:
    """The pruned module owns copies of everything, as ``copy.deepcopy`` would make them: a
    submodule used twice stays one module, a mutable attribute, a hook and an unpruned
    buffer are copies, and a module class with its own ``__deepcopy__`` is copied through it
    (checked on rewrite's module copier directly: tracing inlines non-library modules)."""
    from fxprune.passes.rewrite import _copy_module

    class Tagged(nn.Conv2d):
        def __deepcopy__(self, memo):
            new = nn.Conv2d.__new__(type(self))
            memo[id(self)] = new
            new.__dict__ = copy.deepcopy(self.__dict__, memo)
            new.copied_by_own_deepcopy = True
            return new

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU()
            self.b = nn.Conv2d(8, 8, 1)
            self.c = nn.Conv2d(8, 4, 1)
            self.a.config = {"note": ["kept"]}
            self.register_buffer("scale", torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.act(self.b(self.act(self.a(x))))) * self.scale

    gm = fxprune.analyze(Net().eval(), X)  # the copy rewrite starts from
    calls = []
    gm.c.register_forward_hook(lambda mod, i, o: calls.append(o.shape))
    out = fxprune.rewrite(gm, fxprune.make_plan(gm, 0.5))
    assert out.a.config == gm.a.config and out.a.config is not gm.a.config
    assert out.a.config["note"] is not gm.a.config["note"]
    assert out.get_submodule("act") is not gm.act and sum(1 for _ in out.modules() if isinstance(_, nn.ReLU)) == 1
    assert out.scale.data_ptr() != gm.scale.data_ptr() and torch.equal(out.scale, gm.scale)
    assert out.b.weight.shape[:2] == (4, 4) and gm.b.weight.shape[:2] == (8, 8)
    out(X)
    assert calls and calls[-1][1] == 4  # the hook came along (c's 4 outputs are never pruned)
    out.c._forward_hooks.clear()
    assert len(gm.c._forward_hooks) == 1
    tagged = Tagged(8, 8, 1)
    twin = _copy_module(tagged, {})
    assert twin.copied_by_own_deepcopy and not hasattr(tagged, "copied_by_own_deepcopy")
    assert twin.weight.data_ptr() != tagged.weight.data_ptr() and torch.equal(twin.weight, tagged.weight)


def test_unknown_op_is_pinned_and_named() -> None:
    """torch.renorm has no rule: its classes keep every channel and the report names the node
    and the op; nothing is assumed element-wise."""

    class Rolled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 8, 1)
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(torch.renorm(self.a(x), 2, 1, 5.0)))

    out = fxprune.compile(Rolled(), 0.5, example_inputs=X)
    report = out.meta["fxprune.report"]
    assert [u.node for u in report.unsupported] == ["renorm"]
    assert "torch.renorm" in report.unsupported[0].message()
    assert out.state_dict()["a.weight"].shape[0] == 8
    assert out.state_dict()["b.weight"].shape[0] == 4  # b's own output channels are still free


def test_exact_mode_skips_layer_norm_coupled_dims() -> None:
    """A dim normalized by LayerNorm is approximate: exact=True keeps it, the default prunes
    it and reports the deviation."""

    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.norm = nn.LayerNorm(16)
            self.up = nn.Linear(16, 32)
            self.down = nn.Linear(32, 16)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            h = h + self.down(torch.relu(self.up(self.norm(h))))
            return self.head(h)

    torch.manual_seed(0)
    m = randomize_(Mixer())
    x = torch.randn(3, 8)
    exact = fxprune.compile(m, 0.5, example_inputs=x, exact=True, verify=True)
    assert exact.state_dict()["up.weight"].shape == (16, 16)
    assert exact.norm.normalized_shape == (16,)
    assert exact.meta["fxprune.report"].verification.approx_rel_err is None
    loose = fxprune.compile(m, 0.5, example_inputs=x, verify=True)
    assert loose.norm.normalized_shape == (8,) and loose.state_dict()["norm.weight"].shape == (8,)
    v = loose.meta["fxprune.report"].verification
    assert v.passed and v.approx_rel_err is not None and v.approx_rel_err > 1e-6


def test_measuring_keeps_each_submodules_train_flag() -> None:
    """count_macs and latency_ms run in eval mode and then give every submodule its own flag
    back, not the root's."""
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))
    m.train()
    m[1].eval()
    fxprune.count_macs(m, (X,))
    fxprune.latency_ms(m, (X,), warmup=0, iters=1)
    assert [s.training for s in m] == [True, False, True]


def test_count_macs_with_a_parameter_view_as_input() -> None:
    """An attention-pool latent expanded to the batch (timm's PE-Core ViT): under no_grad the
    view still "requires grad" without a grad_fn, which the flop counter's module tracker
    rejected. Counting works, and every parameter requires grad again afterwards."""

    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.latent = nn.Parameter(torch.randn(1, 1, 8))
            self.q = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.q(self.latent.expand(x.shape[0], -1, -1)) + x.mean()

    m = Pool()
    assert fxprune.count_macs(m, (X,)) == X.shape[0] * 64  # one 8x8 linear per batch row
    assert all(p.requires_grad for p in m.parameters())


def test_verify_refuses_a_plan_made_on_another_analysis() -> None:
    """Group ids belong to one analysis. Verifying at another batch size re-analyzes, and
    there mobilenet_v3_small's ids differ: verify must refuse rather than mask wrong slices
    (it used to report a false FAIL)."""
    import torchvision

    m = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 32, 32)
    small = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    with pytest.raises(fxprune.PlanError, match="does not match this model's class"):
        fxprune.verify(m, small, torch.randn(3, 3, 32, 32), plan=small.meta["fxprune.report"].plan)
