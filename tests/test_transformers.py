"""Attention, heads, embeddings, tying and norms: tiny handwritten modules (fast), and the
transformer zoo behind ``-m zoo``. Every case is proved masked-equals-pruned."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fxprune
from fxprune.modules import PrunedMultiheadAttention
from fxprune.testing import compile_checked, randomize_

E, H, D, N = 32, 4, 8, 6


def _check(model: nn.Module, x, *, ratio=0.5, exact=True, heads="heads"):
    randomize_(model)
    model.eval()
    out, rep, res = compile_checked(model, ratio, x, exact=exact, heads=heads)
    assert rep.params_after < rep.params_before, rep.details()
    assert not rep.unsupported, rep
    return out, rep, res


def _reshape_literals(gm: fx.GraphModule) -> list[tuple]:
    """The int arguments of every reshape/view in the pruned graph."""
    out = []
    for n in gm.graph.nodes:
        if n.target in ("reshape", "view") or n.target is torch.reshape:
            sizes = n.args[1:] if n.op == "call_method" else (n.args[1],)
            if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
                sizes = tuple(sizes[0])
            out.append(tuple(s for s in sizes if isinstance(s, int)))
    return out


# ------------------------------------------------------------------------------------------
# attention spellings
# ------------------------------------------------------------------------------------------
class FusedQKV(nn.Module):
    """timm style: one qkv linear, reshape(b, n, 3, H, D), sdpa or explicit softmax."""

    def __init__(self, sdpa: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.sdpa = H, D, sdpa
        self.scale = D**-0.5
        self.qkv = nn.Linear(E, 3 * H * D)
        self.proj = nn.Linear(H * D, E)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            y = attn.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class SeparateQKV(nn.Module):
    """Hugging Face style: q/k/v projections, view + transpose, matmul / softmax / matmul,
    grouped-query attention by repeat_interleave or by expand + reshape."""

    def __init__(self, kv_heads: int = H, gqa: str = "repeat_interleave"):
        super().__init__()
        self.kv_heads, self.gqa = kv_heads, gqa
        self.q_proj = nn.Linear(E, H * D)
        self.k_proj = nn.Linear(E, kv_heads * D)
        self.v_proj = nn.Linear(E, kv_heads * D)
        self.o_proj = nn.Linear(H * D, E)

    def _repeat(self, t):
        rep = H // self.kv_heads
        if rep == 1:
            return t
        if self.gqa == "repeat_interleave":
            return t.repeat_interleave(rep, dim=1)
        b, hk, n, d = t.shape
        return t[:, :, None, :, :].expand(b, hk, rep, n, d).reshape(b, hk * rep, n, d)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, H, D).transpose(1, 2)
        k = self._repeat(self.k_proj(x).view(b, n, self.kv_heads, D).transpose(1, 2))
        v = self._repeat(self.v_proj(x).view(b, n, self.kv_heads, D).transpose(1, 2))
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
        y = torch.matmul(F.softmax(w, dim=-1), v)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, H * D))


class RelPosAttention(nn.Module):
    """Swin style: a (num_rel, H) table gathered by a buffer of indices, added per head."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(E, 3 * H * D)
        self.proj = nn.Linear(H * D, E)
        self.relative_position_bias_table = nn.Parameter(torch.randn(2 * N - 1, H))
        idx = torch.arange(N)[:, None] - torch.arange(N)[None, :] + N - 1
        self.register_buffer("relative_position_index", idx)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (q * D**-0.5) @ k.transpose(-2, -1) + bias.permute(2, 0, 1).unsqueeze(0)
        y = attn.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, H * D))


class Block(nn.Module):
    def __init__(self, attn: nn.Module):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(E), attn
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(E), nn.Linear(E, 2 * E), nn.Linear(2 * E, E)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _x():
    return torch.randn(2, N, E)


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "explicit"])
def test_fused_qkv_heads_mode_halves_heads(sdpa):
    torch.manual_seed(0)
    out, rep, _ = _check(Block(FusedQKV(sdpa)), _x())
    assert out.attn.qkv.weight.shape == (3 * (H // 2) * D, E)
    assert out.attn.proj.weight.shape == (E, (H // 2) * D)
    lits = _reshape_literals(out)
    assert (3, H // 2, D) in [t[-3:] for t in lits], lits  # qkv reshape literal follows the heads
    assert ((H // 2) * D,) in [t[-1:] for t in lits], lits
    assert all(g.exact for g in rep.plan.groups if g.id in rep.plan.keep)


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "explicit"])
def test_fused_qkv_head_dim_mode_keeps_heads_and_scale(sdpa):
    torch.manual_seed(0)
    out, _, _ = _check(Block(FusedQKV(sdpa)), _x(), heads="head_dim")
    assert out.attn.qkv.weight.shape == (3 * H * (D // 2), E)
    if sdpa:  # the default 1/sqrt(D) would change with D: the original is passed explicitly
        scales = [n.kwargs.get("scale") for n in out.graph.nodes if n.target is F.scaled_dot_product_attention]
        assert scales == [pytest.approx(D**-0.5)]


def test_head_dim_is_exact_by_zero_tracking():
    torch.manual_seed(0)
    gm = fxprune.analyze(Block(FusedQKV(False)), _x())
    approx = [c for c in gm.meta["fxprune.analysis"].prunable() if c.approx and "contracted" in c.approx]
    assert approx == []


@pytest.mark.parametrize("kv_heads,gqa", [(H, "none"), (2, "repeat_interleave"), (2, "expand")])
def test_separate_qkv_and_gqa(kv_heads, gqa):
    torch.manual_seed(0)
    out, rep, _ = _check(Block(SeparateQKV(kv_heads, gqa)), _x())
    q_rows = out.attn.q_proj.weight.shape[0]
    k_rows = out.attn.k_proj.weight.shape[0]
    assert q_rows % D == 0 and q_rows < H * D
    if gqa != "expand":  # with expand both factors (kv groups, copies) are free and share the ratio
        assert q_rows == (H // 2) * D
    # q heads stay a whole multiple of the kv heads they attend with
    assert (q_rows // D) % (k_rows // D) == 0
    assert out.attn.o_proj.weight.shape == (E, q_rows)


def test_relative_position_table_sliced_with_heads():
    torch.manual_seed(0)
    out, _, _ = _check(Block(RelPosAttention()), _x())
    assert out.attn.relative_position_bias_table.shape == (2 * N - 1, H // 2)
    assert out.attn.qkv.weight.shape[0] == 3 * (H // 2) * D


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_module(batch_first):
    class MHABlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(E)
            self.mha = nn.MultiheadAttention(E, H, batch_first=batch_first)
            self.fc = nn.Linear(E, E)

        def forward(self, x):
            y = self.ln(x)
            a, _ = self.mha(y, y, y, need_weights=False)
            return self.fc(x + a)

    torch.manual_seed(0)
    x = _x() if batch_first else _x().transpose(0, 1)
    out, _, _ = _check(MHABlock(), x)
    m = out.mha
    assert isinstance(m, PrunedMultiheadAttention)
    assert (m.num_heads, m.head_dim, m.embed_dim) == (H // 2, E // H, E)
    assert m.in_proj_weight.shape == (3 * (H // 2) * (E // H), E)
    assert m.out_proj.weight.shape == (E, (H // 2) * (E // H))
    assert m.scale == pytest.approx((E // H) ** -0.5)
    assert set(out.state_dict()) == set(fxprune.analyze(MHABlock(), x).state_dict())


def test_pruned_mha_matches_torch():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    randomize_(mha)
    p = PrunedMultiheadAttention.from_module(mha, H, E // H).eval()
    x = _x()
    with torch.no_grad():
        for kw in ({}, {"need_weights": False}, {"average_attn_weights": False}):
            a, b = mha(x, x, x, **kw), p(x, x, x, **kw)
            torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
            if a[1] is not None:
                torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# embeddings, tying, norms
# ------------------------------------------------------------------------------------------
class TiedLM(nn.Module):
    def __init__(self, vocab=50, norm: str = "none"):
        super().__init__()
        self.emb = nn.Embedding(vocab, E)
        self.pos = nn.Parameter(torch.randn(1, N, E))
        self.fc1, self.fc2 = nn.Linear(E, 2 * E), nn.Linear(2 * E, E)
        self.norm = {"none": nn.Identity(), "rms": nn.RMSNorm(E), "ln": nn.LayerNorm(E)}.get(norm)
        self.hand_rms = norm == "hand_rms"
        self.w = nn.Parameter(torch.ones(E))

    def forward(self, ids):
        h = self.emb(ids) + self.pos
        h = h + self.fc2(F.relu(self.fc1(h)))
        if self.hand_rms:
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w
        elif self.norm is not None:
            h = self.norm(h)
        return F.linear(h, self.emb.weight)  # tied output projection


def _ids():
    return torch.randint(0, 50, (2, N))


def test_embedding_tying_exact():
    torch.manual_seed(0)
    out, rep, _ = _check(TiedLM(), _ids())
    assert out.emb.weight.shape == (50, E // 2)
    assert out.pos.shape == (1, N, E // 2)
    uses = [n for n in out.graph.nodes if n.op == "get_attr" and n.target == "emb.weight"]
    assert uses and out.get_parameter("emb.weight").shape == (50, E // 2)  # one tensor, sliced once
    assert sum(p.numel() for p in out.parameters()) == rep.params_after


@pytest.mark.parametrize("norm", ["rms", "hand_rms", "ln"])
def test_norms_are_approximate_and_measured(norm):
    torch.manual_seed(0)
    model = TiedLM(norm=norm)
    gm = fxprune.analyze(model, _ids())
    emb_cls = [c for c in gm.meta["fxprune.analysis"].prunable() if ("emb.weight", 1) in c.params]
    assert len(emb_cls) == 1 and emb_cls[0].approx is not None and emb_cls[0].pinned is None
    exact, _, _ = _check(TiedLM(norm=norm), _ids())  # exact mode leaves the embedding dim whole
    assert exact.emb.weight.shape == (50, E)
    out = fxprune.compile(model, 0.5, example_inputs=_ids(), verify=True)
    rep = out.meta["fxprune.report"]
    assert out.emb.weight.shape == (50, E // 2)
    assert rep.verification.passed and rep.verification.approx_rel_err is not None
    assert "approximate groups pruned" in str(rep) and "measured" in str(rep)


def test_bad_heads_argument():
    with pytest.raises(ValueError, match="heads must be one of"):
        fxprune.compile(Block(FusedQKV()), 0.5, example_inputs=_x(), heads="all")


# ------------------------------------------------------------------------------------------
# zoo (slow): torchvision and timm transformers
# ------------------------------------------------------------------------------------------
def _zoo_model(name: str):
    import timm
    import torchvision

    if name.startswith("tv_"):
        kw = {"image_size": 64} if "vit" in name else {}
        m = getattr(torchvision.models, name[3:])(**kw)
        size = kw.get("image_size", 224)
    else:
        kw = {"img_size": 64} if ("vit" in name or "deit" in name) else {}
        m = timm.create_model(name, **kw)
        size = kw.get("img_size", 224)
    randomize_(m)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # zero-initialized heads would make every comparison trivially equal
        for p in m.parameters():
            if p.dim() >= 2 and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m.eval(), torch.randn(1, 3, size, size)


ZOO = ["tv_vit_b_16", "tv_swin_t", "vit_small_patch16_224", "deit_small_patch16_224",
       "swin_tiny_patch4_window7_224", "convnext_tiny"]  # fmt: skip


def _attention_widths(gm: fx.GraphModule) -> list[tuple[str, int]]:
    """(module, rows) of every fused qkv / in-projection weight."""
    return [(k, v.shape[0]) for k, v in gm.state_dict().items() if k.endswith(("qkv.weight", "in_proj_weight"))]


@pytest.mark.zoo
@pytest.mark.parametrize("name", ZOO)
def test_zoo_exact(name):
    torch.set_num_threads(2)
    m, x = _zoo_model(name)
    t = time.perf_counter()
    out = fxprune.compile(m, 0.5, example_inputs=x, exact=True)
    res = fxprune.verify(m, out, x)
    rep = out.meta["fxprune.report"]
    print(f"{name}: {rep.params_before} -> {rep.params_after} params, {res}, {time.perf_counter() - t:.1f}s")
    assert res.passed and res.max_rel_err <= 1e-4, rep.details()
    assert rep.params_after < rep.params_before
    assert not rep.unsupported, rep
    before, after = dict(_attention_widths(fxprune.analyze(m, x))), dict(_attention_widths(out))
    for k, rows in before.items():  # heads mode (default): every attention keeps half its heads,
        # rounded to nearest with ties kept (Swin's first stage has 3 heads: 2 stay)
        assert rows // 2 <= after[k] <= rows * 2 // 3, (k, rows, after[k])


def test_macs_of_the_multihead_attention_fast_path_are_counted():
    """nn.MultiheadAttention in eval runs aten._native_multi_head_attention, which the flop
    counter does not know; fxprune registers its formula, so it counts what the explicit
    PrunedMultiheadAttention computes."""
    mha = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 64)

    class Call(nn.Module):
        def __init__(self, a: nn.Module) -> None:
            super().__init__()
            self.a = a

        def forward(self, x):
            return self.a(x, x, x, need_weights=False)[0]

    native = fxprune.count_macs(Call(mha), (x,))
    explicit = fxprune.count_macs(Call(PrunedMultiheadAttention.from_module(mha, 4, 16)), (x,))
    assert native == explicit == 2 * (10 * 64 * 64 * 4 + 2 * 10 * 10 * 64)


@pytest.mark.parametrize("masks", ["none", "bool", "padding", "float+padding", "causal"])
def test_pruned_mha_fused_path_equals_the_library_module(masks):
    """Without attention weights PrunedMultiheadAttention runs the fused SDPA kernel (the
    explicit softmax was slower than the original on a GPU); both paths give nn.MultiheadAttention's
    output under every mask kind."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    p = PrunedMultiheadAttention.from_module(mha, 4, 8)
    x = torch.randn(3, 7, 32)
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[:, -1] = True
    bool_mask = torch.rand(7, 7, generator=torch.Generator().manual_seed(1)) > 0.7
    bool_mask.fill_diagonal_(False)
    kw = {
        "none": {}, "bool": {"attn_mask": bool_mask}, "padding": {"key_padding_mask": kpm},
        "float+padding": {"attn_mask": torch.randn(7, 7), "key_padding_mask": kpm.float() * -1e9},
        "causal": {"attn_mask": torch.ones(7, 7, dtype=torch.bool).triu(1), "is_causal": True},
    }[masks]  # fmt: skip
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False, **kw)[0]
        fused = p(x, x, x, need_weights=False, **kw)[0]
        explicit, weights = p(x, x, x, need_weights=True, **kw)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, want, rtol=1e-5, atol=1e-5)
    assert weights is not None and weights.shape == (3, 7, 7)
