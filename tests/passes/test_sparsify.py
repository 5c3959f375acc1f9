"""fxprune.sparsify: DepGraph's group sparse learning (Eq. 4-5) as gradient hooks.

The hook's gradient is checked against autograd of the penalty written out by hand, slice by
slice; gamma against the formula on slice_stats; remove() against a model never hooked; a few
SGD steps for the intended effect; scopes; and DistributedDataParallel against one process."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.importance import slice_stats
from fxprune.testing import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
class _Res(nn.Module):
    """conv-bn stem, a conv-bn-conv-bn block added back onto it (a residual group), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(y + self.bn2(self.c2(torch.relu(self.bn1(self.c1(y))))))
        return self.fc(y.mean((2, 3)))


class _Cat(nn.Module):
    """Two convs concatenated into a third: its input dim is [class a | class b]."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 5, 1)
        self.c = nn.Conv2d(9, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.fc(torch.relu(self.c(y)).mean((2, 3)))


class _GN(nn.Module):
    """GroupNorm(2, 8): channels are a product (2 groups x 4), the inner class approximate."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.GroupNorm(2, 8)
        self.b = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.b(torch.relu(self.g(self.a(x))))).mean((2, 3)))


class _Plain(nn.Module):
    """A small CNN without normalization (per-rank batch statistics would differ under DDP)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3)))


def _model(cls: type, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(cls(), seed).double()


def _x(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).pow(2).sum().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _classes(model: nn.Module, x: torch.Tensor) -> list:
    return fxprune.analyze(model, x).meta["fxprune.analysis"].prunable()


def _cls(classes: list, member: tuple[str, int], size: int) -> int:
    (c,) = [c.id for c in classes if member in c.params and c.size == size]
    return c


# ------------------------------------------------------------------------------------------
# 1. the hook's gradient is the gradient of the penalty, written out by hand
# ------------------------------------------------------------------------------------------
def _members_by_hand(name: str, model: nn.Module, x: torch.Tensor) -> dict[int, list]:
    """class id -> [(param FQN, dim, index k -> positions of that dim)], written per model."""
    classes = _classes(model, x)
    ident = lambda k: [k]
    if name == "res":
        out = {}
        for c in classes:  # every dim here is one whole class: position k is index k
            members = []
            for fqn, d in c.params:
                if fqn in dict(model.named_parameters()):
                    assert model.get_parameter(fqn).shape[d] == c.size
                    members.append((fqn, d, ident))
            out[c.id] = members
        assert sorted(len(v) for v in out.values()) == [5, 10]  # block: 5 slices; residual: 10
        return out
    if name == "cat":
        a, b = _cls(classes, ("a.weight", 0), 4), _cls(classes, ("b.weight", 0), 5)
        c = _cls(classes, ("c.weight", 0), 6)
        return {
            a: [("a.weight", 0, ident), ("a.bias", 0, ident), ("c.weight", 1, lambda k: [k])],
            b: [("b.weight", 0, ident), ("b.bias", 0, ident), ("c.weight", 1, lambda k: [4 + k])],
            c: [("c.weight", 0, ident), ("c.bias", 0, ident), ("fc.weight", 1, ident)],
        }
    assert name == "gn"
    groups, inner = _cls(classes, ("a.weight", 0), 2), _cls(classes, ("a.weight", 0), 4)
    out_b = _cls(classes, ("b.weight", 0), 8)
    by_group = lambda k: list(range(4 * k, 4 * k + 4))  # GroupNorm group k: channels 4k..4k+3
    by_inner = lambda j: [j, j + 4]  # index j inside every group
    five = ["a.weight", "a.bias", "g.weight", "g.bias"]
    return {
        groups: [(f, 0, by_group) for f in five] + [("b.weight", 1, by_group)],
        inner: [(f, 0, by_inner) for f in five] + [("b.weight", 1, by_inner)],
        out_b: [("b.weight", 0, ident), ("b.bias", 0, ident), ("fc.weight", 1, ident)],
    }


@pytest.mark.parametrize("name,cls", [("res", _Res), ("cat", _Cat), ("gn", _GN)])
def test_hook_gradient_equals_autograd_of_the_penalty(name, cls):
    model, x = _model(cls), _x()
    plain = _grads(copy.deepcopy(model), x)
    reg, alpha = 0.3, 3.0
    handle = fxprune.sparsify(model, x, reg=reg, alpha=alpha, refresh_every=0)  # gamma frozen
    gamma = handle.gamma
    members = _members_by_hand(name, model, x)
    assert set(gamma) == set(members)

    leaves = {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    penalty = 0.0
    for c, slices in members.items():
        for k in range(len(gamma[c])):
            for fqn, d, positions in slices:
                s = leaves[fqn].index_select(d, torch.tensor(positions(k)))
                penalty = penalty + gamma[c][k] * s.pow(2).sum()
    penalty = reg * penalty
    penalty.backward()

    hooked = _grads(model, x)
    for k, leaf in leaves.items():  # parameters in no group (fc.bias: the output) are untouched
        expect = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        torch.testing.assert_close(hooked[k] - plain[k], expect, rtol=1e-9, atol=1e-12, msg=k)
    assert "fc.bias" not in handle.params and torch.equal(hooked["fc.bias"], plain["fc.bias"])
    assert handle.penalty() == pytest.approx(float(penalty.detach()), rel=1e-9)
    assert any(leaf.grad.abs().sum() > 0 for leaf in leaves.values())
    handle.remove()


# ------------------------------------------------------------------------------------------
# 2. gamma: 2**alpha for the least important index, 1 for the most important
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [_Res, _Cat, _GN])
def test_gamma_formula(cls):
    model, x = _model(cls), _x()
    alpha = 4.0
    handle = fxprune.sparsify(model, x, alpha=alpha)
    gm = fxprune.analyze(model, x)
    stats = slice_stats(gm, dict(model.named_parameters()), p=2)
    assert set(handle.gamma) == {c for c, v in stats.items() if v}
    for c, g in handle.gamma.items():
        imp = torch.stack([v for _, _, v in stats[c]]).sum(0).sqrt()
        torch.testing.assert_close(handle.importance[c], imp, rtol=1e-12, atol=0)
        assert g[imp.argmin()] == 2**alpha and g[imp.argmax()] == 1
        expect = 2 ** (alpha * (imp.max() - imp) / (imp.max() - imp.min()))
        torch.testing.assert_close(g, expect, rtol=1e-12, atol=0)
        assert bool(((g >= 1) & (g <= 2**alpha)).all())
    handle.remove()


def test_gamma_is_one_when_every_index_is_equally_important():
    model, x = _model(_Cat), _x()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    with fxprune.sparsify(model, x, alpha=5.0) as handle:
        assert handle.gamma and all(bool((g == 1).all()) for g in handle.gamma.values())


def test_alpha_zero_is_plain_group_l2():
    model, x = _model(_Res), _x()
    plain = _grads(copy.deepcopy(model), x)
    with fxprune.sparsify(model, x, reg=0.1, alpha=0.0) as handle:
        assert all(bool((g == 1).all()) for g in handle.gamma.values())
        hooked = _grads(model, x)
    # d/dw of 0.1 * ||w||^2 once per grouped dim: c1/c2 weights have two (out and in), the
    # stem's input and the head's output are pinned, fc.bias is in no group
    grouped_dims = {"c1.weight": 2, "c2.weight": 2, "fc.bias": 0}
    for k, p in model.named_parameters():
        expect = plain[k] + 0.2 * grouped_dims.get(k, 1) * p.detach()
        torch.testing.assert_close(hooked[k], expect, rtol=1e-9, atol=1e-12, msg=k)


# ------------------------------------------------------------------------------------------
# 3. the model is never touched; remove() leaves nothing behind
# ------------------------------------------------------------------------------------------
def test_remove_restores_the_model_exactly():
    model, x = _model(_Res), _x()
    model.bn1.eval()  # a mixed train/eval state that must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    user_calls = []
    model.fc.weight.register_hook(lambda g: user_calls.append(1))  # a hook of the user's own
    reference = copy.deepcopy(model)

    handle = fxprune.sparsify(model, x, reg=0.5)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    # every parameter but fc.bias (the output's, pinned) is in a group
    assert set(handle.params) == {k for k, _ in model.named_parameters()} - {"fc.bias"}

    with_hooks = _grads(model, x)
    plain = _grads(reference, x)
    assert not torch.equal(with_hooks["stem.weight"], plain["stem.weight"])

    handle.remove()
    handle.remove()  # idempotent
    reference.load_state_dict(model.state_dict())
    again, plain = _grads(model, x), _grads(reference, x)
    for k in plain:
        assert torch.equal(again[k], plain[k]), k
    for k, p in model.named_parameters():
        assert (p._backward_hooks is None) == (k != "fc.weight"), k  # no empty hook dicts left
    assert len(model.fc.weight._backward_hooks) == 1 and len(user_calls) == 2  # user's hook kept


def test_deepcopy_of_a_sparsified_model_is_clean():
    model, x = _model(_Res), _x()
    with fxprune.sparsify(model, x, reg=0.5):
        clone = copy.deepcopy(model)  # e.g. an EMA copy, or fxprune.compile during training
        assert all(p._backward_hooks is None for p in clone.parameters())
        torch.testing.assert_close(_grads(clone, x), _grads(copy.deepcopy(clone), x))


# ------------------------------------------------------------------------------------------
# 4. training pushes the unimportant groups down
# ------------------------------------------------------------------------------------------
def _train(alpha: float, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Plain SGD on a fixed batch; the residual group's index k starts with every member slice
    scaled by 0.3 ... 1.5, so index 0 is clearly the least important and index 7 the most."""
    model = _model(_Res)
    scale = torch.linspace(0.3, 1.5, 8, dtype=torch.float64)
    with torch.no_grad():
        for name in ["stem", "bn0", "c2", "bn2"]:
            m = getattr(model, name)
            m.weight.mul_(scale.view(-1, *[1] * (m.weight.dim() - 1)))
            m.bias.mul_(scale)
        model.c1.weight.mul_(scale.view(1, -1, 1, 1))
        model.fc.weight.mul_(scale)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=g)
    handle = fxprune.sparsify(model, x, reg=0.05, alpha=alpha)
    c = _cls(_classes(model, x), ("stem.weight", 0), 8)  # the residual group
    start = handle.importance[c].clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    handle.refresh()
    end, passes = handle.importance[c].clone(), handle.backward_passes
    handle.remove()
    return start, end, passes


def test_training_drives_unimportant_groups_down():
    start, end, passes = _train(alpha=4.0)
    assert passes == 20
    assert torch.equal(start.argsort(), torch.arange(8))
    kept = end / start  # fraction of each index's group norm left after training
    s0, e0, _ = _train(alpha=0.0)  # same reg, gamma = 1: uniform group L2
    assert torch.equal(s0, start)
    kept0 = e0 / s0
    # with gamma (16x on the weakest index) the weak indices all but vanish, the strong stay
    assert float(kept[:3].max()) < 0.15 and float(kept[-3:].min()) > 0.5, kept
    assert float(kept[:3].max()) < 0.25 * float(kept[-3:].min()), kept
    # uniform L2 shrinks all indices alike: the separation comes from gamma
    assert float(kept0.max() / kept0.min()) < 1.2, kept0
    assert float(end[:3].sum() / end.sum()) < 0.5 * float(e0[:3].sum() / e0.sum())


# ------------------------------------------------------------------------------------------
# 5. scopes and exact
# ------------------------------------------------------------------------------------------
def test_scope_conv_leaves_norms_and_biases_alone():
    model, x = _model(_Res), _x()
    plain = _grads(copy.deepcopy(model), x)
    with fxprune.sparsify(model, x, reg=0.5, scope="conv") as handle:
        hooked = _grads(model, x)
        assert set(handle.params) == {"stem.weight", "c1.weight", "c2.weight", "fc.weight"}
    for k in plain:
        if "bn" in k or k.endswith(".bias"):
            assert torch.equal(hooked[k], plain[k]), k
        else:
            assert not torch.equal(hooked[k], plain[k]), k
    # importance then counts only the conv/linear slices
    gm = fxprune.analyze(model, x)
    stats = slice_stats(gm, dict(model.named_parameters()), scope="conv")
    handle = fxprune.sparsify(model, x, scope="conv")
    for c, imp in handle.importance.items():
        torch.testing.assert_close(imp, torch.stack([v for _, _, v in stats[c]]).sum(0).sqrt())
    handle.remove()


def test_scope_none_is_per_layer():
    model, x = _model(_Res), _x()
    alpha = 4.0
    handle = fxprune.sparsify(model, x, alpha=alpha, scope="none", refresh_every=0)
    grouped = fxprune.sparsify(copy.deepcopy(model), x, alpha=alpha)
    gm = fxprune.analyze(model, x)
    stats = slice_stats(gm, dict(model.named_parameters()))
    c = _cls(_classes(model, x), ("stem.weight", 0), 8)
    assert sorted(handle.layers[c]) == ["bn0", "bn2", "c1", "c2", "fc", "stem"]
    assert handle.gamma[c].shape == (6, 8)
    for row, layer in enumerate(handle.layers[c]):
        imp = torch.stack([v for fqn, _, v in stats[c] if fqn.rpartition(".")[0] == layer]).sum(0).sqrt()
        torch.testing.assert_close(handle.importance[c][row], imp)
        g = handle.gamma[c][row]
        assert g[imp.argmin()] == 2**alpha and g[imp.argmax()] == 1
    assert not torch.equal(handle.gamma[c][0], grouped.gamma[c])  # layers disagree with the group

    # the hook uses each layer's own gamma: d/dw of reg * sum_k gamma_layer[k] ||w[k]||^2
    plain = _grads(copy.deepcopy(model), x)
    handle.reg = 0.2
    hooked = _grads(model, x)
    row = handle.layers[c].index("bn0")
    torch.testing.assert_close(
        hooked["bn0.weight"] - plain["bn0.weight"], 0.4 * handle.gamma[c][row] * model.bn0.weight.detach()
    )
    handle.remove()
    grouped.remove()


def test_exact_skips_approximate_classes():
    model, x = _model(_GN), _x()
    classes = _classes(model, x)
    inner = _cls(classes, ("a.weight", 0), 4)
    assert [c.approx is not None for c in classes if c.id == inner] == [True]
    with fxprune.sparsify(model, x, exact=True) as exact, fxprune.sparsify(copy.deepcopy(model), x) as loose:
        assert inner not in exact.gamma and inner in loose.gamma
        assert set(exact.gamma) == set(loose.gamma) - {inner}


# ------------------------------------------------------------------------------------------
# refreshing and counting
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_ids", [True, False], ids=["graph-task-id", "queue-callback"])
def test_backward_passes_counted_once_and_refresh_schedule(task_ids, monkeypatch):
    if not task_ids:  # the fallback for a torch without torch._C._current_graph_task_id
        monkeypatch.delattr(torch._C, "_current_graph_task_id", raising=False)
    model, x = _model(_Res), _x()
    handle = fxprune.sparsify(model, x, reg=0.1, refresh_every=2)
    c = _cls(_classes(model, x), ("stem.weight", 0), 8)
    seen = []
    for step in range(4):
        with torch.no_grad():  # change the weights between passes, as an optimizer would
            model.stem.weight[step].mul_(0.1)
        _grads(model, x)
        seen.append(handle.gamma[c].clone())
    assert handle.backward_passes == 4  # 15 hooks fire per pass, one count
    # refreshed at the start of passes 1 and 3 only
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[1], seen[2])
    handle.remove()

    frozen = fxprune.sparsify(model, x, refresh_every=0)
    g0 = frozen.gamma[c].clone()
    with torch.no_grad():
        model.stem.weight[5].mul_(0.01)
    _grads(model, x)
    assert torch.equal(frozen.gamma[c], g0) and frozen.backward_passes == 1
    frozen.refresh()
    assert not torch.equal(frozen.gamma[c], g0)
    frozen.remove()


# ------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"reg": -1e-4}, "-0.0001"),
        ({"reg": float("nan")}, "nan"),
        ({"alpha": -2}, "-2"),
        ({"alpha": "4"}, "'4'"),
        ({"scope": "layer"}, "'layer'"),
        ({"refresh_every": -1}, "-1"),
        ({"refresh_every": 1.5}, "1.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, needle):
    model, x = _model(_Cat), _x()
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        fxprune.sparsify(model, x, **kwargs)
    assert all(p._backward_hooks is None for p in model.parameters())


def test_reg_setter_validates_and_module_required():
    model, x = _model(_Cat), _x()
    with fxprune.sparsify(model, x) as handle:
        with pytest.raises(ValueError, match="-1"):
            handle.reg = -1
    with pytest.raises(TypeError, match="Module"):
        fxprune.sparsify(lambda t: t, x)


# ------------------------------------------------------------------------------------------
# 6. DistributedDataParallel: two CPU processes equal one process on the whole batch
# ------------------------------------------------------------------------------------------
_DDP_STEPS, _DDP_REG, _DDP_BATCH = 3, 0.05, 8


def _ddp_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(_DDP_BATCH, 3, 8, 8, generator=g), torch.randint(0, 4, (_DDP_BATCH,), generator=g)


def _ddp_train(model: nn.Module, step_model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(step_model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(_DDP_STEPS):
        opt.zero_grad()
        F.cross_entropy(step_model(x), y).backward()
        opt.step()


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = _Plain()
        x, y = _ddp_data()
        handle = fxprune.sparsify(model, x[:1], reg=_DDP_REG)  # on the bare module
        ddp = nn.parallel.DistributedDataParallel(model)
        half = _DDP_BATCH // world
        _ddp_train(model, ddp, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
        assert handle.backward_passes == _DDP_STEPS
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")

    def single(reg: float | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = _Plain()
        x, y = _ddp_data()
        handle = fxprune.sparsify(model, x[:1], reg=reg) if reg is not None else None
        _ddp_train(model, model, x, y)
        if handle is not None:
            handle.remove()
        return model.state_dict()

    one, unregularized = single(_DDP_REG), single(None)
    for k in one:
        assert torch.equal(r0[k], r1[k]), k  # ranks agree bit for bit
        torch.testing.assert_close(r0[k], one[k], rtol=0, atol=1e-6, msg=k)
    # and the regularizer did something over those steps (the test is not vacuous)
    assert max(float((one[k] - unregularized[k]).abs().max()) for k in one) > 1e-3
