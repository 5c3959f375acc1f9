"""The default output, a GraphModule, stays usable in the user's workflow: torch.export
captures take other batch sizes, lengths and resolutions; the state_dict keys are exactly
the model's; ``train()`` trains; bfloat16 and float16 models compile and verify."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.testing import randomize_


def _run_and_check(model: nn.Module, x, others, **options) -> torch.nn.Module:
    """Prune ``model`` at ``x``; the result has exactly the model's state_dict keys, fewer
    parameters, and equals the masked original (``fxprune.verify``, which re-captures the
    original at that shape) at ``x`` and at each of the ``others`` inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fxprune.compile(model, 0.5, example_inputs=x, verify=True, **options)
        assert small.meta["fxprune.report"].verification.passed, small.meta["fxprune.report"].verification
        assert set(small.state_dict()) == set(model.state_dict())
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
        small.graph.lint()
        for y in others:
            res = fxprune.verify(model, small, y)
            assert res.passed, (tuple(y.shape), res)
    return small


# ------------------------------------------------------------------------------------------
# torch.export captures take other shapes
# ------------------------------------------------------------------------------------------
def _llama(**cfg):
    tr = pytest.importorskip("transformers")
    config = tr.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=100, max_position_embeddings=64, **cfg)  # fmt: skip
    torch.manual_seed(0)
    return randomize_(tr.LlamaForCausalLM(config)).eval()


def test_llama_default_config_runs_at_other_batch_sizes_and_lengths() -> None:
    """Grouped-query Llama with its default config (use_cache=True: the cache is turned off
    on the copy being captured, the user's config keeps it): the exported graph takes other
    batch sizes and sequence lengths, and no input dim stays static."""
    m = _llama()
    assert m.config.use_cache is True
    ids = lambda *s: torch.randint(0, 100, s)  # noqa: E731
    small = _run_and_check(m, ids(2, 8), [ids(3, 8), ids(2, 13), ids(1, 5)])
    assert small.meta["fxprune.capture"] == "torch.export"
    assert not {d.input for d in small.meta["fxprune.static_dims"]} & {"input_ids"}
    assert m.config.use_cache is True and small(ids(1, 4)).logits.shape == (1, 4, 100)


def test_yolo_at_batch_one_runs_at_other_batch_sizes_and_resolutions() -> None:
    """ultralytics YOLOv8n (built from its yaml, no download) pruned from a batch of one:
    exported with the batch at 2, so it runs at 1 and at 3, and at another resolution; its
    ``stride`` tensor attribute (a constant of the graph) is no state_dict key."""
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    m = randomize_(tasks.DetectionModel("yolov8n.yaml", verbose=False)).eval()
    x = torch.randn(1, 3, 64, 64)
    small = _run_and_check(m, x, [torch.randn(3, 3, 96, 128)])
    assert small.meta["fxprune.capture"] == "torch.export"
    assert "stride" not in small.state_dict()
    assert {(d.input, d.dim) for d in small.meta["fxprune.static_dims"]} == {("x", 1)}  # 3 colour channels


class _Branchy(nn.Module):
    """Branches on the batch size (symbolic_trace cannot), and flattens time into features
    (the length meets a weight: it must stay static)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.b = nn.Linear(32 * 5, 4)
        self.c = nn.Linear(32 * 5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 5, 8)
        h = torch.relu(self.a(x)).flatten(1)
        return self.b(h) if h.shape[0] > 1 else self.c(h)


def test_static_dims_are_reported_with_the_reason() -> None:
    """A dim the code fixes stays static and the report says so; so does a batch of one
    where the model takes another branch at size 1 than at size 2 (exporting at 2 would
    silently run the other branch at 1)."""
    m = randomize_(_Branchy()).eval()
    small = _run_and_check(m, torch.randn(2, 5, 8), [torch.randn(4, 5, 8)])
    dims = {(d.input, d.dim): d for d in small.meta["fxprune.static_dims"]}
    assert set(dims) == {("x", 1), ("x", 2)} and "the model's code fixes it" in dims["x", 1].why
    assert "static input dim: x dim 1 stays 5" in str(small.meta["fxprune.report"])
    one = fxprune.compile(m, 0.5, example_inputs=torch.randn(1, 5, 8))
    dims = {(d.input, d.dim): d for d in one.meta["fxprune.static_dims"]}
    assert "branches on the size" in dims["x", 0].why
    assert one.c.weight.shape[1] < 32 * 5 and not fxprune.verify(m, one, torch.randn(1, 5, 8)).approx_rel_err


# ------------------------------------------------------------------------------------------
# state_dict keys
# ------------------------------------------------------------------------------------------
class _Constants(nn.Module):
    """A tensor built in forward (fx: ``_tensor_constant0``), a non-persistent buffer, a
    traced-through BatchNorm subclass (``num_batches_tracked`` is read only in train mode) and
    a parameter the forward never reads."""

    class _BN(nn.BatchNorm2d):
        """timm's BatchNormAct2d in short: F.batch_norm on its own buffers, then more ops."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                             self.momentum, self.eps)  # fmt: skip
            return y * 2

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = self._BN(8)
        self.c2 = nn.Conv2d(8, 4, 1)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 4).view(1, 4, 1, 1), persistent=False)
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(torch.relu(self.bn(self.c1(x)))) * self.scale
        return y + torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_state_dict_keys_are_the_models(capture: str) -> None:
    m = randomize_(_Constants()).eval()
    small = _run_and_check(m, torch.randn(2, 3, 8, 8), [torch.randn(3, 3, 12, 10)], capture=capture)
    assert "bn.num_batches_tracked" in small.state_dict() and "unused" in small.state_dict()
    assert small.bn.running_mean.shape == (4,)


def test_swin_tensor_constants_stay_out_of_state_dict() -> None:
    """timm Swin's relative-position and mask tensors are fx ``_tensor_constant*``."""
    timm = pytest.importorskip("timm")
    m = timm.create_model("swin_tiny_patch4_window7_224", embed_dim=32, depths=(1, 1), num_heads=(1, 2),
                          img_size=32, window_size=2, num_classes=5)  # fmt: skip
    m = randomize_(m).eval()
    small = _run_and_check(m, torch.randn(2, 3, 32, 32), [torch.randn(3, 3, 32, 32)])
    assert any(n.startswith("_tensor_constant") for n, _ in small.named_buffers())


# ------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_llama_compiles_and_verifies(dtype: torch.dtype) -> None:
    """The exported graph has the dtype baked in (casts, dtype asserts): verify runs both
    sides in the model's dtype, with the tolerance of that dtype, and says so."""
    m = _llama(use_cache=False).to(dtype)
    ids = torch.randint(0, 100, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fxprune.compile(m, 0.5, example_inputs=ids, verify=True)
        res = small.meta["fxprune.report"].verification
        assert res.passed and res.dtype == str(dtype).replace("torch.", ""), res
        assert res.tol == 4 * torch.finfo(dtype).eps and f"in {res.dtype}" in str(res)
        assert next(small.parameters()).dtype == dtype
        assert fxprune.verify(m, small, torch.randint(0, 100, (3, 11))).passed


# ------------------------------------------------------------------------------------------
# train() trains
# ------------------------------------------------------------------------------------------
class _TracedNorms(nn.Module):
    """A BatchNorm subclass that symbolic_trace traces through (``_Constants._BN``, like timm's
    BatchNormAct2d) and a functional dropout reading ``self.training``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = _Constants._BN(8)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(torch.relu(self.bn(self.c1(x))), 0.5, self.training)
        return self.c2(y)


def test_traced_norms_and_dropout_follow_the_mode() -> None:
    """Unpruned (ratio 0), the graph in train mode is the model in train mode: the same batch
    statistics, the same running-statistics update and count, the same dropout mask."""
    m = randomize_(_TracedNorms()).eval()
    x = torch.randn(4, 3, 8, 8)
    same = fxprune.compile(m, 0.0, example_inputs=x)
    assert same.meta["fxprune.capture"] == "symbolic_trace"
    ref = copy.deepcopy(m).train()
    same.train()
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    got = same(x)
    assert torch.allclose(got, want, atol=1e-6)
    for k, v in ref.state_dict().items():
        assert torch.allclose(same.state_dict()[k].float(), v.float()), k
    assert int(same.bn.num_batches_tracked) == 1
    same.eval()
    assert torch.equal(same(x), same(x)) and int(same.bn.num_batches_tracked) == 1  # eval: no dropout, no count
    small = _run_and_check(m, x, [torch.randn(2, 3, 6, 6)])
    small.train()
    before = small.bn.running_mean.clone()
    small(x).sum().backward()
    assert not torch.equal(before, small.bn.running_mean) and small.c1.weight.grad is not None


def test_efficientnet_b0_trains() -> None:
    """timm EfficientNet-B0: every BatchNormAct2d is traced through; the pruned graph in train
    mode updates the running statistics and gives other outputs than in eval mode, as the
    original does, and keeps the num_batches_tracked keys."""
    timm = pytest.importorskip("timm")
    m = randomize_(timm.create_model("efficientnet_b0", num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    small = _run_and_check(m, x, [])
    assert sum(k.endswith("num_batches_tracked") for k in small.state_dict()) == 49
    ref = copy.deepcopy(m)
    for model in (ref, small):
        with torch.no_grad():
            ev = model.eval()(x)
            stats = model.bn1.running_var.clone()
            tr = model.train()(x)
        assert not torch.allclose(ev, tr) and not torch.equal(stats, model.bn1.running_var)
        assert int(model.bn1.num_batches_tracked) == 1


class _DropPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # a branch: the eval-mode graph has no trace of it
            return x + torch.nn.functional.dropout(self.fc(x), 0.1) * 0.9
        return x + self.fc(x)


class _WithDropPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.block = _DropPath()
        self.b = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.block(torch.relu(self.a(x))))


def test_a_training_branch_makes_train_raise() -> None:
    """A traced ``if self.training`` branch cannot follow the mode: train() raises naming the
    module, and so does a forward in train mode (a check inside the graph, kept by copies)."""
    m = randomize_(_WithDropPath()).eval()
    small = _run_and_check(m, torch.randn(3, 4), [torch.randn(5, 4)])
    with pytest.raises(RuntimeError, match="cannot run in train mode: .*'block'.*output='module'"):
        small.train()
    assert not small.training
    small.eval()  # eval() stays allowed
    twin = copy.deepcopy(small)
    nn.Module.train(twin)
    with pytest.raises(RuntimeError, match="cannot run in train mode"):
        twin(torch.randn(3, 4))
