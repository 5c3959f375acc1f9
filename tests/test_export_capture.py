"""Capture with torch.export where symbolic_trace fails, ATen spellings of the rules, and
Hugging Face transformers models (small random configs) pruned masked-equals-pruned."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from fxprune.passes.registry import key_of
from torch import fx, nn

import fxprune
from fxprune.testing import randomize_, snapshot, unchanged


def _shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------
# the fallback
# ------------------------------------------------------------------------------------------
class _ShapeBranch(nn.Module):
    """Branches on a size: symbolic_trace cannot (a Proxy has no truth value); export can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.b = nn.Linear(32, 4)
        self.c = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if h.shape[0] > 1:
            return self.b(h)
        return self.c(h)


def test_shape_dependent_control_flow_falls_back_to_export() -> None:
    m = randomize_(_ShapeBranch()).train()
    x = torch.randn(3, 8)
    snap = snapshot(m)
    with pytest.raises(torch.fx.proxy.TraceError):
        fx.symbolic_trace(m)
    small = fxprune.compile(m, 0.5, example_inputs=x, exact=True, verify=True)
    report = small.meta["fxprune.report"]
    assert report.capture == "torch.export" and small.meta["fxprune.capture"] == "torch.export"
    assert "capture: torch.export" in str(report)
    assert report.verification.passed and report.verification.max_rel_err <= 1e-4
    # the hidden layer is halved; the branch taken (b) is pruned, the other (c) is not in the graph
    assert small.a.weight.shape == (16, 8) and small.b.weight.shape == (4, 16)
    assert _n_params(small) < _n_params(m)
    assert unchanged(m, snap) and m.training  # the user's model and its mode are untouched
    # independently of the report: the pruned module equals the masked original
    res = fxprune.verify(m, small, x)
    assert res.passed, res


def test_capture_fx_only_says_what_to_try() -> None:
    with pytest.raises(fxprune.CaptureError, match="symbolic_trace could not trace _ShapeBranch") as e:
        fxprune.compile(_ShapeBranch(), 0.5, example_inputs=torch.randn(3, 8), capture="fx")
    assert "capture='export'" in str(e.value)
    with pytest.raises(ValueError, match="capture='jit' is not one of 'auto', 'fx', 'export'"):
        fxprune.compile(_ShapeBranch(), 0.5, example_inputs=torch.randn(3, 8), capture="jit")


def test_both_captures_fail_quotes_both() -> None:
    class ValueBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # depends on a value: neither capture can follow it
                return self.c(x)
            return x

    with pytest.raises(fxprune.CaptureError) as e:
        fxprune.compile(ValueBranch(), 0.5, example_inputs=torch.randn(2, 4))
    msg = str(e.value)
    assert "symbolic_trace could not trace ValueBranch" in msg
    assert "torch.export.export(strict=False) could not export ValueBranch" in msg
    assert "Try:" in msg and "torch.cond" in msg


# ------------------------------------------------------------------------------------------
# ATen spellings: the same widths as through symbolic_trace
# ------------------------------------------------------------------------------------------
class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.c1(x)))
        y = F.relu(self.bn2(self.c2(y)))
        y = F.adaptive_avg_pool2d(self.c3(y), 4)
        return self.fc(torch.flatten(y, 1))


class _Views(nn.Module):
    """chunk, slices, cat (a rotate-half), permute, reshape with -1, transpose, layer_norm,
    select, mean, unsqueeze, expand, sum."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 24)
        self.b = nn.Linear(12, 6)
        self.c = nn.Linear(12, 6)
        self.ln = nn.LayerNorm(6)
        self.d = nn.Linear(6, 5)
        self.e = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 8)
        h = torch.relu(self.a(x))
        p, q = h.chunk(2, dim=-1)
        p2 = torch.cat([p[..., 6:], p[..., :6]], -1)
        y = self.b(p2 * 2) + self.c(q)
        y = y.permute(0, 2, 1).reshape(y.shape[0], 6, -1).transpose(1, 2)
        y = self.ln(y)
        z = self.e(h[:, 0])
        w = h.mean(1).unsqueeze(1).expand(-1, x.shape[1], -1)
        return self.d(y).sum(1) + z + self.e(w)[:, -1]


class _NormClamp(nn.Module):
    """GRN-style norm over H, W, clamps with per-channel tensor bounds and an expand_as
    (aten.clamp.Tensor, aten.linalg_vector_norm, aten.expand_as)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.lo = nn.Parameter(torch.randn(16, 1, 1) * 0.1)
        self.hi = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.c2 = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y = torch.clamp(y, min=self.lo, max=self.hi)
        y = y * y.amax((2, 3), keepdim=True).expand_as(y)  # aten.expand_as(t, other): not sizes
        return self.c2(y * torch.linalg.vector_norm(y, 2, dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("make, shape", [(_CNN, (2, 3, 8, 8)), (_Views, (2, 5, 8)), (_NormClamp, (2, 3, 8, 8))])
def test_aten_spellings_prune_like_symbolic_trace(make, shape) -> None:
    m = randomize_(make()).eval()
    x = torch.randn(*shape)
    by_fx = fxprune.compile(m, 0.5, example_inputs=x, exact=True, capture="fx")
    by_export = fxprune.compile(m, 0.5, example_inputs=x, exact=True, capture="export", verify=True)
    report = by_export.meta["fxprune.report"]
    assert report.capture == "torch.export" and not report.unsupported
    assert report.verification.passed, report.verification
    assert any(isinstance(n.target, torch._ops.OpOverload) for n in by_export.graph.nodes)
    assert _shapes(by_export) == _shapes(by_fx)
    assert _n_params(by_export) < _n_params(m)


@pytest.mark.parametrize("make, shape", [(_CNN, (2, 3, 8, 8)), (_Views, (2, 5, 8)), (_NormClamp, (2, 3, 8, 8))])
def test_decomposed_aten_graph(make, shape) -> None:
    """A core-ATen graph (run_decompositions: addmm, convolution, native batch norm, views,
    split_with_sizes, ...) passed in as a GraphModule."""
    m = randomize_(make()).eval()
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = torch.export.export(copy.deepcopy(m), (x,), strict=False).run_decompositions().module()
    for attr in ("train", "eval"):  # ExportedProgram.module() makes them raise
        gm.__dict__.pop(attr, None)
    fxprune.analyze(gm, x)
    analysis = gm.meta["fxprune.analysis"]
    assert not analysis.unsupported, [u.message() for u in analysis.unsupported]
    plan = fxprune.make_plan(gm, 0.5, exact=True)
    small = fxprune.rewrite(gm, plan)
    res = fxprune.verify(gm, small, x, plan=plan)
    assert res.passed, res
    ref = fxprune.compile(m, 0.5, example_inputs=x, exact=True, capture="fx")
    assert _n_params(small) == _n_params(ref) < _n_params(m)


def test_user_exported_graph_with_dynamic_batch() -> None:
    """A GraphModule the user exported with a dynamic batch dim: sizes come from
    ``aten.sym_size.int`` nodes, and the pruned module runs on other batch sizes."""
    m = randomize_(_Views()).eval()
    x = torch.randn(2, 5, 8)
    batch = torch.export.Dim("batch", min=2, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = torch.export.export(copy.deepcopy(m), (x,), dynamic_shapes=({0: batch},), strict=False).module()
    for attr in ("train", "eval"):
        gm.__dict__.pop(attr, None)
    assert any(n.target is torch.ops.aten.sym_size.int for n in gm.graph.nodes)
    fxprune.analyze(gm, x)
    plan = fxprune.make_plan(gm, 0.5, exact=True)
    small = fxprune.rewrite(gm, plan)
    assert fxprune.verify(gm, small, x, plan=plan).passed
    x4 = torch.randn(4, 5, 8)
    res = fxprune.verify(gm, small, x4, plan=plan)
    assert res.passed, res


def test_alias_table_covers_the_export_ops() -> None:
    aten = torch.ops.aten
    for op, key in [(aten.linear.default, "linear"), (aten.view.default, "reshape"), (aten.add.Tensor, "add"),
                    (aten.layer_norm.default, "layer_norm"), (aten.permute.default, "permute"),
                    (aten.transpose.int, "transpose"), (aten.slice.Tensor, "aten.slice"),
                    (aten.embedding.default, "torch.embedding"), (aten.sym_size.int, "meta"),
                    (aten._assert_tensor_metadata.default, "aten.assert"),
                    (aten.scaled_dot_product_attention.default, "sdpa")]:  # fmt: skip
        assert key_of(op) == key


# ------------------------------------------------------------------------------------------
# Hugging Face transformers (small random configs, no downloads)
# ------------------------------------------------------------------------------------------
def _bert():
    tr = pytest.importorskip("transformers")
    cfg = tr.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=100, max_position_embeddings=32, num_labels=3, attn_implementation="eager")  # fmt: skip
    return tr.BertForSequenceClassification(cfg), (torch.randint(0, 100, (2, 8)),)


def _vit():
    tr = pytest.importorskip("transformers")
    cfg = tr.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       image_size=32, patch_size=8, num_labels=5, attn_implementation="eager")  # fmt: skip
    return tr.ViTForImageClassification(cfg), (torch.randn(2, 3, 32, 32),)


def _llama(attn: str = "eager"):
    """Grouped-query attention (4 query heads share 2 key/value heads), rotary embeddings,
    RMSNorm, SwiGLU. use_cache=False: a DynamicCache output is not a pytree export knows."""
    tr = pytest.importorskip("transformers")
    cfg = tr.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=100, max_position_embeddings=32, use_cache=False,
                         attn_implementation=attn)  # fmt: skip
    return tr.LlamaForCausalLM(cfg), (torch.randint(0, 100, (2, 8)),)


def _llama_sdpa():
    """The same through ``aten.scaled_dot_product_attention`` (the sdpa rule)."""
    return _llama("sdpa")


def _hf(make):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m, x = make()
    return randomize_(m).train(), x


def _logits(out):
    return out.logits if hasattr(out, "logits") else out[0]


@pytest.mark.parametrize(
    "make", [_bert, _vit, _llama, _llama_sdpa], ids=["bert", "vit", "llama-gqa", "llama-gqa-sdpa"]
)
def test_hugging_face_exact(make) -> None:
    m, x = _hf(make)
    snap = snapshot(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fxprune.compile(m, 0.5, example_inputs=x, exact=True, verify=True)
    report = small.meta["fxprune.report"]
    assert report.capture == "torch.export" and "capture: torch.export" in str(report)
    assert report.verification.passed and report.verification.max_rel_err <= 1e-4, report.details()
    assert all(g.exact for g in report.plan.groups if g.id in report.plan.keep)
    assert _n_params(small) < _n_params(m)
    # the original FQNs: the pruned module's state_dict keys are the model's
    assert set(small.state_dict()) == set(m.state_dict())
    assert unchanged(m, snap) and m.training
    with torch.no_grad():
        ref, got = m.eval()(*x), small(*x)
    m.train()
    assert type(got) is type(ref) and _logits(got).shape == _logits(ref).shape


def test_llama_gqa_heads_stay_grouped() -> None:
    """Query heads are pruned within their key/value group: every kept kv head keeps the
    same number of query heads, so repeat_kv still lines them up."""
    m, x = _hf(_llama)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    attn = m.model.layers[0].self_attn
    hd = attn.head_dim
    q = small.get_parameter("model.layers.0.self_attn.q_proj.weight").shape[0]
    k = small.get_parameter("model.layers.0.self_attn.k_proj.weight").shape[0]
    v = small.get_parameter("model.layers.0.self_attn.v_proj.weight").shape[0]
    o = small.get_parameter("model.layers.0.self_attn.o_proj.weight").shape[1]
    assert q + k + v < attn.q_proj.out_features + attn.k_proj.out_features + attn.v_proj.out_features
    assert k % hd == 0 and q % hd == 0  # the q/k head dim is kept whole (it is contracted)
    n_q, n_kv = q // hd, k // hd
    assert n_q % n_kv == 0
    assert o == n_q * (v // n_kv)  # o_proj reads (query heads x value dim)


@pytest.mark.parametrize("make, why, norm", [(_bert, "layer_norm", "LayerNorm.weight"),
                                             (_vit, "layer_norm", "layernorm_before.weight"),
                                             (_llama, "statistic", "input_layernorm.weight")],
                         ids=["bert", "vit", "llama-gqa"])  # fmt: skip
def test_hugging_face_default_lists_approximate_groups(make, why, norm) -> None:
    """Default mode also prunes the hidden (embedding) dim through every LayerNorm (Llama's
    RMSNorm is captured as pow/mean/rsqrt: a mean statistic): an approximate group, listed
    apart in the report with the measured deviation."""
    m, x = _hf(make)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fxprune.compile(m, 0.5, example_inputs=x, verify=True)
    report = small.meta["fxprune.report"]
    approx = [g for g in report.plan.groups if not g.exact and g.id in report.plan.keep]
    assert any(why in (g.approx_reason or "") for g in approx)
    text = str(report)
    assert "approximate groups pruned" in text and "(relative, measured)" in text
    for g in approx:
        assert f"group {g.id}: {g.size} -> {len(report.plan.keep[g.id])}" in text
    res = report.verification
    assert res.passed and res.approx_rel_err is not None and res.approx_rel_err > 0
    norms = [s for k, s in _shapes(small).items() if k.endswith(norm)]
    assert norms and all(s[0] < m.config.hidden_size for s in norms)


def test_train_on_an_exported_capture_warns_that_the_graph_stays_eval():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    small = fxprune.compile(Branchy(), 0.5, example_inputs=torch.randn(2, 4), capture="export")
    with pytest.warns(UserWarning, match="graph keeps eval behaviour"):
        small.train()
    assert small.training
    small.eval()
    assert not small.training
