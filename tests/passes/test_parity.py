"""Spelling parity: a torch spelling and its same-named ATen overloads reach one record, and the
two captures (symbolic_trace and torch.export) give the same groups.

The two graphs of one model differ only in spelling (``torch.roll`` vs ``aten.roll.default``),
so any difference in the groups is a rule reached under one capture and missed (or described
differently) under the other. Before this test, ``roll`` and ``topk`` pinned everything under
``capture="export"``, ``cumsum``/``cumprod``/``diff`` pinned everything under ``capture="fx"``,
and ``index_select``/``gather`` related their dims differently by capture.
"""

import pytest
import torch
from fxprune.passes.registry import key_of, specs
from torch import nn

import fxprune

aten = torch.ops.aten

# (torch spelling, ATen overload) pairs that are *not* expected to reach the same record, each
# with the reason; "*.name" stands for every spelling of that name. Anything else that differs
# fails the test, and an entry that no longer differs fails ``test_the_allow_list_is_live``.
ALLOWED = {
    # F.batch_norm / F.instance_norm take (input, running_mean, running_var, weight, bias) and
    # F.embedding (input, weight); the same-named ATen ops take torch.batch_norm's,
    # torch.instance_norm's and torch.embedding's order, and reach those functions' records.
    ("torch.nn.functional.batch_norm", "batch_norm.default"): "argument order differs; = torch.batch_norm",
    ("torch.nn.functional.instance_norm", "instance_norm.default"): "argument order differs; = torch.instance_norm",
    ("torch.nn.functional.embedding", "embedding.default"): "(input, weight) vs (weight, indices); = torch.embedding",
    # overloads whose arguments the rule of the torch spelling does not describe
    ("*.eq", "eq.Tensor_list"): "compares two lists of tensors and returns a bool (TorchScript)",
    ("*.ne", "ne.Tensor_list"): "compares two lists of tensors and returns a bool (TorchScript)",
    ("*.mm", "mm.dtype"): "mm with an out_dtype argument the matmul rule does not bind",
    ("*.bmm", "bmm.dtype"): "bmm with an out_dtype argument the matmul rule does not bind",
    ("*.addmm", "addmm.dtype"): "addmm with an out_dtype argument the addmm rule does not bind",
    ("*.einsum", "einsum.sublist"): "operands interleaved with index lists, not the equation the einsum rule reads",
    ("*.narrow", "narrow.Tensor"): "start given as a tensor, which the narrow rule cannot offset on rewrite",
    ("*.repeat_interleave", "repeat_interleave.Tensor"): "no input: builds an index tensor from counts",
    ("*.len", "len.Dict_Tensor"): "len of a TorchScript Dict[Tensor, ...]",
    # Tensor.index is not x[i] (that is operator.getitem); aten.index.Tensor is export's
    # spelling of x[idx], a record of its own
    ("Tensor.index", "index.Tensor"): "x[idx] is operator.getitem at the torch level",
}


def _qualname(spelling: object) -> str:
    if isinstance(spelling, str):
        return f"Tensor.{spelling}"
    return f"{getattr(spelling, '__module__', None) or 'torch'}.{spelling.__name__}"


def _allowed(spelling: object, op: torch._ops.OpOverload) -> bool:
    overload = f"{op._opname}.{op._overloadname}"
    name = _qualname(spelling).rpartition(".")[2]
    return (_qualname(spelling), overload) in ALLOWED or (f"*.{name}", overload) in ALLOWED


def _skipped(op: torch._ops.OpOverload) -> bool:
    """out= variants (never in a functional graph: export functionalizes them away) and
    overloads with no tensor argument or result (python-number arithmetic such as
    ``aten.add.int``, which graphs use for sizes) are not spellings of a tensor op."""
    schema = op._schema
    if any(a.is_out for a in schema.arguments):
        return True
    tensors = [a for a in list(schema.arguments) + list(schema.returns) if "Tensor" in str(a.type)]
    return not tensors


def _overloads(name: str) -> list:
    packet = getattr(aten, name, None)
    if packet is None or not hasattr(packet, "overloads"):
        return []
    return [getattr(packet, o) for o in packet.overloads()]


def _torch_spellings() -> list[tuple[str, str, object]]:
    """(name, key, spelling) for every torch-level function and method name of every record."""
    out = []
    for key, spec in specs().items():
        if spec.rule is None:
            continue
        for f in spec.functions:
            name = getattr(f, "__name__", None)
            if name:
                out.append((name, key, f))
        out.extend((m, key, m) for m in spec.methods)
    return out


def test_every_torch_spelling_and_its_aten_overloads_reach_one_record():
    wrong = []
    for name, key, spelling in _torch_spellings():
        for op in _overloads(name):
            if _skipped(op) or _allowed(spelling, op):
                continue
            if key_of(op) != key:
                wrong.append(f"{spelling!r} -> {key!r} but {op} -> {key_of(op)!r}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_every_aten_overload_with_a_torch_name_has_that_torch_spelling():
    """The other direction: an ATen overload mapped to a record whose packet name is a torch
    function or a Tensor method (``aten.cumsum`` and ``torch.cumsum``/``x.cumsum``) has that
    spelling in the same record."""
    wrong = []
    for key, spec in specs().items():
        for op in spec.aten:
            name = op._opname
            if name.startswith("_"):
                continue
            fn = getattr(torch, name, None)
            # torch's own builtin too: a library may replace torch.<name> (torch_geometric
            # patches torch.index_select and torch.select when imported)
            builtin = getattr(torch._C._VariableFunctions, name, None)
            if callable(fn) and key_of(fn) != key and key_of(builtin) != key and not _allowed(fn, op):
                wrong.append(f"{op} -> {key!r} but torch.{name} -> {key_of(fn)!r}")
            if hasattr(torch.Tensor, name) and key_of(name) != key and not _allowed(name, op):
                wrong.append(f"{op} -> {key!r} but the method .{name} -> {key_of(name)!r}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_allow_list_is_live():
    """Every allowed pair names an overload that exists and a spelling of that name that really
    does not reach its record (a fixed one must leave the list)."""
    spellings = _torch_spellings() + [(n, key_of(n), n) for n in ("index",)]
    for spelling_name, overload in ALLOWED:
        packet, _, ov = overload.partition(".")
        op = getattr(getattr(aten, packet), ov)
        name = spelling_name.rpartition(".")[2]
        hits = [key for n, key, sp in spellings if n == name and (spelling_name.startswith("*.")
                                                                   or _qualname(sp) == spelling_name)]  # fmt: skip
        assert hits and any(key_of(op) != key for key in hits), (spelling_name, overload)


# ------------------------------------------------------------------------------------------
# both captures, the same groups
# ------------------------------------------------------------------------------------------
class Roll(nn.Module):
    """conv -> roll over space -> conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.roll(self.a(x), shifts=(1, 2), dims=(2, 3)))


class Flip(nn.Module):
    """conv -> flip over W (method) -> BatchNorm -> conv."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(self.bn(self.a(x).flip(3)))


class Cumulative(nn.Module):
    """linear -> cumsum over tokens, cumprod over tokens (method) and diff over tokens -> linear:
    the features pass through each."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        h = torch.cumsum(h, dim=1) + torch.sigmoid(h).cumprod(1) * 0.1
        return self.b(torch.diff(h, dim=1))


class TopkGather(nn.Module):
    """linear -> top-k tokens by a score -> gather those tokens -> index_select of rows -> linear
    (a point-cloud style selection: the features pass through every step)."""

    def __init__(self):
        super().__init__()
        self.a, self.score, self.b = nn.Linear(8, 16), nn.Linear(16, 1), nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x).relu()  # (B, N, 16)
        idx = torch.topk(self.score(h).squeeze(-1), k=4, dim=1)[1]  # (B, 4) (``.indices``: see the README)
        picked = torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, 4, 16)
        rows = torch.index_select(picked, 1, torch.arange(0, 4, 2))  # (B, 2, 16)
        return self.b(rows)


class Attention(nn.Module):
    """LayerNorm -> qkv linear -> heads -> scaled_dot_product_attention -> proj, residual add,
    then an MLP."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 64), nn.Linear(64, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class ConvNet(nn.Module):
    """conv -> BN -> ReLU -> conv (groups) -> GroupNorm, residual, pool -> linear."""

    def __init__(self):
        super().__init__()
        self.c0, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c1, self.gn = nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.GroupNorm(4, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = self.bn(self.c0(x)).relu()
        h = h + self.gn(self.c1(h))
        return self.fc(h.mean((2, 3)))


_MODELS = {
    "roll": (Roll, (2, 3, 8, 8)),
    "flip": (Flip, (2, 3, 8, 8)),
    "cumsum_cumprod_diff": (Cumulative, (2, 6, 8)),
    "topk_gather_index_select_arange": (TopkGather, (2, 6, 8)),
    "attention": (Attention, (2, 5, 32)),
    "conv_norms": (ConvNet, (2, 3, 8, 8)),
}


def _groups(model: nn.Module, x: torch.Tensor, capture: str) -> tuple[set, list]:
    gm = fxprune.analyze(model, x, capture=capture)
    analysis = gm.meta["fxprune.analysis"]
    groups = {
        (c.size, frozenset(p for p in c.params), c.approx is None) for c in analysis.classes if c.prunable
    }  # fmt: skip
    return groups, [u.message() for u in analysis.unsupported]


@pytest.mark.parametrize("name", list(_MODELS))
def test_both_captures_give_the_same_groups(name):
    cls, shape = _MODELS[name]
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(*shape)
    fx_groups, fx_unsupported = _groups(model, x, "fx")
    ex_groups, ex_unsupported = _groups(model, x, "export")
    assert not fx_unsupported and not ex_unsupported, (fx_unsupported, ex_unsupported)
    assert fx_groups, "the model has something to prune"
    assert fx_groups == ex_groups, (sorted(map(str, fx_groups - ex_groups)), sorted(map(str, ex_groups - fx_groups)))
