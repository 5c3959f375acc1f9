"""Criteria: each score is checked against its formula on a tiny model computed by hand."""

import pytest
import torch
from torch import nn

import fxprune
from fxprune.importance import BNScale, Hessian, Magnitude, Random, Taylor, ZeroShot, normalize
from fxprune.testing import randomize_


class _Block(nn.Module):
    """conv -> bn -> relu -> conv -> mean -> linear: the first conv's out channels form one
    group with the bn affine/statistics and the second conv's in channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.b = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(torch.relu(self.bn(self.a(x)))).mean((2, 3)))


X = torch.randn(4, 3, 6, 6)
Y = torch.tensor([0, 1, 2, 1])


def _setup() -> tuple[torch.fx.GraphModule, int]:
    torch.manual_seed(0)
    gm = fxprune.analyze(randomize_(_Block()), X)
    cid = next(c.id for c in gm.meta["fxprune.analysis"].prunable() if c.params[0][0] == "a.weight")
    return gm, cid


def _slices(gm: torch.fx.GraphModule, tensors: dict) -> torch.Tensor:
    """Per channel k of conv a's output: every member slice, flattened and concatenated."""
    a, bnw, bnb, b = (tensors[k] for k in ("a.weight", "bn.weight", "bn.bias", "b.weight"))
    ab = tensors["a.bias"]
    return torch.stack([torch.cat([a[k].flatten(), ab[k:k + 1], bnw[k:k + 1], bnb[k:k + 1], b[:, k].flatten()]) for k in range(6)])


def test_group_l2_and_l1_follow_the_formula() -> None:
    gm, cid = _setup()
    sl = _slices(gm, dict(gm.named_parameters())).detach()
    l2 = sl.pow(2).sum(1).sqrt()
    torch.testing.assert_close(Magnitude(2, normalizer="none")(gm)[cid], l2.float())
    torch.testing.assert_close(Magnitude(1, normalizer="none")(gm)[cid], sl.abs().sum(1).float())
    torch.testing.assert_close(Magnitude(2)(gm)[cid], (l2 / l2.mean()).float())


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(700, 512, 1, 1), (40, 30, 3, 3), (9, 300000)])
def test_pow_sum_matches_the_formula_on_every_path(shape, p) -> None:
    """``_pow_sum`` (blocked on the CPU when a weight spans several cache-sized blocks, one
    pass otherwise) equals ``|w|^p`` summed over every other dim, for each dim."""
    from fxprune import importance

    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for d in range(w.dim()):
        want = w.double().abs().pow(p).sum([k for k in range(w.dim()) if k != d])
        torch.testing.assert_close(importance._pow_sum(w, p, d), want, rtol=5e-4, atol=0)  # float32 sums


def test_aggregations_and_normalizers() -> None:
    gm, cid = _setup()
    p = dict(gm.named_parameters())
    per_member = torch.stack([
        p["a.weight"].detach().flatten(1).norm(dim=1), p["a.bias"].detach().abs(), p["bn.weight"].detach().abs(),
        p["bn.bias"].detach().abs(), p["b.weight"].detach()[:, :, 0, 0].norm(dim=0),
    ])  # fmt: skip
    torch.testing.assert_close(Magnitude(2, agg="max", normalizer="none")(gm)[cid], per_member.max(0).values)
    torch.testing.assert_close(Magnitude(2, agg="mean", normalizer="none")(gm)[cid], per_member.mean(0))
    s = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert normalize(s, "max").tolist() == [1.0, 0.25, 0.75, 0.5]
    assert normalize(s, "sum").sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(normalize(s, ("topk", 2)), s * 2 / 7)
    with pytest.raises(ValueError, match="unknown normalizer"):
        normalize(s, "zscore")


def test_scope_conv_leaves_out_norm_affines_and_biases() -> None:
    gm, cid = _setup()
    p = dict(gm.named_parameters())
    want = (p["a.weight"].detach().flatten(1).pow(2).sum(1) + p["b.weight"].detach()[:, :, 0, 0].pow(2).sum(0)).sqrt()
    torch.testing.assert_close(Magnitude(2, normalizer="none", scope="conv")(gm)[cid], want.float())


def test_bn_scale_is_gamma_magnitude() -> None:
    gm, cid = _setup()
    g = gm.bn.weight.detach().abs()
    torch.testing.assert_close(BNScale()(gm)[cid], g / g.mean())


def test_taylor_and_hessian_follow_the_formula() -> None:
    gm, cid = _setup()
    data = [(X[:2], Y[:2]), (X[2:], Y[2:])]
    loss_fn = nn.functional.cross_entropy
    grads = {k: torch.zeros_like(v) for k, v in gm.named_parameters()}
    sq = {k: torch.zeros_like(v) for k, v in gm.named_parameters()}
    gm.eval()
    for xb, yb in data:
        gm.zero_grad()
        loss_fn(gm(xb), yb).backward()
        for k, v in gm.named_parameters():
            grads[k] += v.grad
            sq[k] += v.grad.pow(2)
    gm.zero_grad(set_to_none=True)
    p = {k: v.detach() for k, v in gm.named_parameters()}
    taylor = _slices(gm, {k: (p[k] * grads[k]).abs() for k in p}).sum(1)
    torch.testing.assert_close(Taylor(normalizer="none")(gm, data, loss_fn)[cid], taylor.float())
    fisher = _slices(gm, {k: 0.5 * p[k].pow(2) * sq[k] / 2 for k in p}).sum(1)
    torch.testing.assert_close(Hessian(normalizer="none")(gm, data, loss_fn)[cid], fisher.float())
    assert all(v.grad is None for v in gm.parameters())  # criteria leave no gradients behind


def test_zeroshot_depends_on_activations() -> None:
    """An input that silences some channels lowers exactly their scores."""
    gm, cid = _setup()
    s1 = ZeroShot()(gm, [X])[cid]
    with torch.no_grad():
        gm.a.bias[:3] -= 100.0  # channels 0-2 are now always negative before relu
        gm.bn.bias[:3] = -100.0
    s2 = ZeroShot()(gm, [X])[cid]
    assert (s2[:3] < s1[:3]).all()
    assert s1.shape == (6,)


def test_random_is_seeded() -> None:
    gm, cid = _setup()
    assert torch.equal(Random(3)(gm)[cid], Random(3)(gm)[cid])
    assert not torch.equal(Random(3)(gm)[cid], Random(4)(gm)[cid])


def test_compile_with_data_driven_criteria() -> None:
    torch.manual_seed(0)
    m = randomize_(_Block())
    data = [(X, Y)]
    for name in ("taylor", "hessian", "zeroshot", "bn_scale", "random", "l1"):
        out = fxprune.compile(m, 0.5, example_inputs=X, importance=name, data=data, loss_fn=nn.functional.cross_entropy)
        assert out.state_dict()["a.weight"].shape[0] == 3, name
        assert fxprune.verify(m, out, X).passed, name
    with pytest.raises(ValueError, match="needs data"):
        fxprune.compile(m, 0.5, example_inputs=X, importance="taylor")


def test_scope_none_uses_the_producing_layer_alone() -> None:
    """No grouping: conv a's own weight and bias decide for its output channels."""
    gm, cid = _setup()
    p = dict(gm.named_parameters())
    want = (p["a.weight"].detach().flatten(1).pow(2).sum(1) + p["a.bias"].detach().pow(2)).sqrt()
    torch.testing.assert_close(Magnitude(2, normalizer="none", scope="none")(gm)[cid], want.float())
