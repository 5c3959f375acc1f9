"""Recurrent layers (nn.LSTM / nn.GRU / nn.RNN), graph attention (GAT) and dynamic-graph edge
convolutions (DGCNN): exact mode passes masked-equals-pruned with fewer parameters, the new
modules' sizes are the kept counts, the original model is untouched, and the ops the
analysis cannot prove keep their channels and are named."""

from __future__ import annotations

import pytest
import torch
from models_gnn import DGCNN, GAT, random_graph
from torch import nn

import fxprune
from fxprune.testing import compile_checked, randomize_

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


class TextRNN(nn.Module):
    """Embedding -> recurrent layers -> linear classifier, over several readouts."""

    def __init__(self, cell: type = nn.LSTM, layers: int = 2, bidirectional: bool = True, batch_first: bool = True,
                 readout: str = "state", proj_size: int = 0, vocab: int = 50, dim: int = 16, hidden: int = 24):  # fmt: skip
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        kw = {"proj_size": proj_size} if proj_size else {}
        self.rnn = cell(dim, hidden, layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
        self.lstm, self.batch_first, self.bidirectional, self.readout = cell is nn.LSTM, batch_first, bidirectional, readout
        width = proj_size or hidden
        self.fc = nn.Linear((2 if bidirectional else 1) * width, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)  # (B, T, D)
        if not self.batch_first:
            x = x.transpose(0, 1)
        out, state = self.rnn(x)
        h_n = state[0] if self.lstm else state
        if self.readout == "state":  # final states of the last layer
            feat = torch.cat((h_n[-2], h_n[-1]), dim=1) if self.bidirectional else h_n[-1]
        elif self.readout == "last":
            feat = out[:, -1, :] if self.batch_first else out[-1]
        else:  # max over time
            feat = out.max(dim=1 if self.batch_first else 0)[0]
        return self.fc(feat)


def _tokens(b: int = 3, t: int = 7) -> torch.Tensor:
    return torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(0))


def _kept(plan: fxprune.Plan, member: tuple[str, int]) -> int:
    for g in plan.groups:
        if member in g.params:
            return len(plan.keep.get(g.id, range(g.size)))
    raise AssertionError(f"no group holds {member}")


def _compile_checked(model: nn.Module, x: tuple, ratio: float = 0.5) -> tuple[torch.fx.GraphModule, object]:
    """Exact-mode compile + masked-equals-pruned + original untouched (``compile_checked``),
    fewer parameters, no op without a rule, the traced state_dict keys."""
    small, report, _ = compile_checked(model, ratio, x, exact=True)
    assert report.params_after < report.params_before, report.details()
    assert not report.analysis.unsupported, report.details()
    assert set(small.state_dict()) == set(fxprune.analyze(model, x).state_dict())
    return small, report


RNN_CASES = [
    pytest.param(nn.LSTM, dict(layers=2, bidirectional=True, batch_first=True, readout="state"), id="lstm-2l-bi-state"),
    pytest.param(nn.GRU, dict(layers=2, bidirectional=True, batch_first=True, readout="state"), id="gru-2l-bi-state"),
    pytest.param(nn.LSTM, dict(layers=1, bidirectional=False, batch_first=False, readout="last"), id="lstm-1l-seqfirst"),
    pytest.param(nn.GRU, dict(layers=3, bidirectional=False, batch_first=True, readout="last"), id="gru-3l-last"),
    pytest.param(nn.LSTM, dict(layers=2, bidirectional=True, batch_first=True, readout="max"), id="lstm-bi-maxpool"),
    pytest.param(nn.LSTM, dict(layers=2, bidirectional=True, proj_size=8, readout="state"), id="lstm-proj"),
    pytest.param(nn.RNN, dict(layers=2, bidirectional=True, readout="state"), id="rnn-tanh"),
]


@pytest.mark.parametrize("cell, kw", RNN_CASES)
def test_rnn_classifier_exact(cell: type, kw: dict) -> None:
    torch.manual_seed(0)
    model = randomize_(TextRNN(cell, **kw)).eval()
    x = (_tokens(),)
    small, report = _compile_checked(model, x)
    plan = report.plan
    rnn, old = small.rnn, model.rnn
    unit = ("rnn.weight_hr_l0", 1) if kw.get("proj_size") else ("rnn.weight_hh_l0", 1)
    h = _kept(plan, unit)
    assert rnn.hidden_size == h < old.hidden_size
    assert rnn.input_size == _kept(plan, ("emb.weight", 1)) == small.emb.embedding_dim < old.input_size
    if kw.get("proj_size"):
        assert rnn.proj_size == _kept(plan, ("rnn.weight_hh_l0", 1)) < old.proj_size
    g = _GATES[cell]
    for name, p in rnn.named_parameters():  # every gate block and direction shrank alike
        if name.startswith(("weight_ih", "weight_hh", "bias_")):
            assert p.shape[0] == g * h, name
    assert old.hidden_size == 24 and model.rnn.weight_ih_l0.shape[0] == g * 24  # original untouched
    assert report.macs_after < report.macs_before
    # the pruned module is a trainable module: gradients reach the new recurrent weights
    small.train()
    small(*x).sum().backward()
    assert all(p.grad is not None for p in rnn.parameters())


def test_lstm_macs_are_counted() -> None:
    """nn.LSTM on CPU runs as aten.mkldnn_rnn_layer; its MACs must be counted, or speedup=
    targets would ignore the recurrent layers."""
    m = nn.LSTM(16, 24, batch_first=True)
    macs = fxprune.count_macs(m, (torch.randn(3, 7, 16),))
    assert macs == 3 * 7 * 4 * 24 * (16 + 24)


class StatefulLSTM(nn.Module):
    """The initial state is computed from the input (non-zero), or passed in as an input."""

    def __init__(self, state_input: bool = False):
        super().__init__()
        self.state_input = state_input
        self.emb = nn.Embedding(50, 16)
        self.init_h = nn.Linear(16, 2 * 24)
        self.init_c = nn.Linear(16, 2 * 24)
        self.rnn = nn.LSTM(16, 24, 2, batch_first=True)
        self.fc = nn.Linear(24, 4)

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        x = self.emb(tokens)
        ctx = x.mean(dim=1)  # (B, D)
        b = x.size(0)
        if not self.state_input:
            h0 = self.init_h(ctx).view(b, 2, 24).transpose(0, 1).contiguous()
        c0 = torch.tanh(self.init_c(ctx)).view(b, 2, 24).transpose(0, 1).contiguous()
        out, (h_n, c_n) = self.rnn(x, (h0, c0))
        return self.fc(out[:, -1] + h_n[-1] + c_n[-1])


def test_lstm_with_nonzero_initial_state_is_exact() -> None:
    torch.manual_seed(0)
    model = randomize_(StatefulLSTM()).eval()
    small, report = _compile_checked(model, (_tokens(),))
    assert small.rnn.hidden_size == _kept(report.plan, ("rnn.weight_hh_l0", 1)) < 24
    assert small.init_h.out_features == 2 * small.rnn.hidden_size


def test_lstm_state_from_graph_input_is_pinned() -> None:
    torch.manual_seed(0)
    model = randomize_(StatefulLSTM(state_input=True)).eval()
    x = (_tokens(), torch.randn(2, 3, 24))
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert fxprune.verify(model, small, x).passed
    assert small.rnn.hidden_size == 24
    pinned = [c.pinned for c in small.meta["fxprune.report"].analysis.classes if ("rnn.weight_hh_l0", 1) in c.params]
    assert pinned and "graph input h0" in pinned[0]


@pytest.mark.parametrize("concat", [True, False], ids=["concat-heads", "mean-heads"])
def test_gat_exact(concat: bool) -> None:
    torch.manual_seed(0)
    model = randomize_(GAT(concat=concat)).eval()
    x = random_graph()
    small, report = _compile_checked(model, x)
    plan, classes = report.plan, report.analysis.classes
    for layer in ("gat1", "gat2"):
        heads_member, hidden_member = (f"{layer}.att_src", 0), (f"{layer}.att_src", 1)
        heads, hidden = getattr(small, layer).att_src.shape
        assert hidden == _kept(plan, hidden_member) < 8  # hidden units per head: pruned, exact
        assert getattr(small, layer).proj.weight.shape[0] == heads * hidden
        if concat:  # concatenated heads are a class of their own
            assert heads == _kept(plan, heads_member) < 4
        else:  # averaging divides by the head count: heads keep every index, and say why
            assert heads == 4
            why = [c.pinned for c in classes if heads_member in c.params]
            assert why and "reduced over" in why[0]
    assert small.out.att_src.shape == model.out.att_src.shape  # output layer: graph output


def test_dgcnn_exact() -> None:
    torch.manual_seed(0)
    model = randomize_(DGCNN()).eval()
    x = (torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1)),)
    small, report = _compile_checked(model, x)
    plan, classes = report.plan, report.analysis.classes
    # the inner MLP width of every edge conv, the last edge conv's output, the embedding and
    # the head are pruned
    for member, full in ((("ec1.mlp.0.weight", 0), 16), (("ec2.mlp.0.weight", 0), 16), (("ec3.mlp.3.weight", 0), 32),
                         (("conv.0.weight", 0), 64), (("head.0.weight", 0), 32)):  # fmt: skip
        assert _kept(plan, member) < full, member
    assert small.get_submodule("conv.0").weight.shape[1] == 16 + 32 + _kept(plan, ("ec3.mlp.3.weight", 0))
    # features that the next layer's k-NN graph is built from keep every channel (the
    # distance sums over them), and the report says so
    why = [c.pinned for c in classes if ("ec1.mlp.3.weight", 0) in c.params]
    assert why and "reduced over" in why[0]


class NeighbourMean(nn.Module):
    """Static neighbour lists (an input): gathers by advanced indexing, index_select and
    torch.gather, channels pass through all three."""

    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(6, 16)
        self.lin2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.lin1(x))  # (N, C)
        a = f[idx].amax(dim=1)  # (N, k, C) -> (N, C)
        b = torch.index_select(f, 0, idx[:, 0])  # (N, C)
        c = torch.gather(f, 0, idx[:, 1:2].expand(-1, f.size(1)))  # (N, C)
        d = f[idx[:, 2], :]
        return self.lin2(a + b + c + d)


def test_gathers_pass_channels_through() -> None:
    torch.manual_seed(0)
    model = randomize_(NeighbourMean()).eval()
    x = (torch.randn(9, 6), torch.randint(0, 9, (9, 4), generator=torch.Generator().manual_seed(2)))
    small, report = _compile_checked(model, x)
    assert small.lin1.out_features == small.lin2.in_features == _kept(report.plan, ("lin1.weight", 0)) < 16


class SumOfProduct(nn.Module):
    """``(h * w).sum(-1)``: a contraction with a parameter (exact). A sum of ``h * buf`` (a
    buffer is not zeroed in the masked model) is exact too, because ``h`` itself is zero on
    the removed indices (zero-tracking through the linear layer); a mean (it divides by the
    count) or a sum of a tensor that is not zero there (``h + 1``) stays a pinned reduction."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.lin = nn.Linear(6, 8)
        self.w = nn.Parameter(torch.randn(8))
        self.register_buffer("buf", torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if self.how == "sum":
            return (h * self.w).sum(-1)
        if self.how == "mean":
            return (h * self.w).mean(-1)
        if self.how == "shifted":
            return ((h + 1) * self.buf).sum(-1)
        return (h * self.buf).sum(-1)


@pytest.mark.parametrize("how, prunes", [("sum", True), ("mean", False), ("buffer", True), ("shifted", False)])
def test_sum_of_product_with_parameter(how: str, prunes: bool) -> None:
    torch.manual_seed(0)
    model = randomize_(SumOfProduct(how)).eval()
    x = (torch.randn(5, 6),)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    assert fxprune.verify(model, small, x).passed
    assert (small.lin.out_features < 8) is prunes


class MaskIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin1(x)
        return self.lin2(h[x[:, 0] > 0])


def test_boolean_mask_index_is_pinned_and_named() -> None:
    model = MaskIndex().eval()
    x = (torch.tensor([[1.0, 0, 0, 0], [-1.0, 1, 1, 1], [2.0, 1, 0, 1]]),)
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    report = small.meta["fxprune.report"]
    assert small.lin1.out_features == 8
    assert any("boolean mask" in u.reason for u in report.analysis.unsupported), report.details()


def test_pyg_gatconv() -> None:
    """torch_geometric's GATConv (captured by torch.export: fx cannot trace its message
    passing) aggregates with scatter_add_ / scatter_reduce_: the heads and hidden units of the
    concatenating layer are pruned exactly. Its self-loop removal indexes edge_index by a
    boolean mask, which has no rule: named in the report, touching only the edge index."""
    pytest.importorskip("torch_geometric")
    from torch_geometric.nn import GATConv

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = GATConv(12, 8, heads=4)
            self.c2 = GATConv(32, 3, heads=2, concat=False)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            return self.c2(torch.nn.functional.elu(self.c1(x, edge_index)), edge_index)

    torch.manual_seed(0)
    model = randomize_(Net()).eval()
    x = (torch.randn(10, 12), torch.randint(0, 10, (2, 30), generator=torch.Generator().manual_seed(3)))
    small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    report = small.meta["fxprune.report"]
    res = fxprune.verify(model, small, x)
    assert res.passed and res.max_rel_err <= 1e-4, f"{res}\n{report.details()}"
    _, heads, hidden = small.c1.att_src.shape
    assert heads == _kept(report.plan, ("c1.att_src", 1)) < 4
    assert hidden == _kept(report.plan, ("c1.att_src", 2)) < 8
    assert small.c2.att_src.shape == model.c2.att_src.shape  # averaged heads, graph output
    assert report.params_after < report.params_before
    assert all("edge_index" in u.code for u in report.analysis.unsupported), report.details()
