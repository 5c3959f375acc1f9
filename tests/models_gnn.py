"""Small graph and point-cloud networks in plain PyTorch, for the pruning tests.

``GAT``: graph attention (Velickovic et al. 2018) on a dense adjacency matrix, heads
concatenated or averaged. ``DGCNN``: dynamic-graph edge convolutions (Wang et al. 2019):
k nearest neighbours in feature space, edge features ``[x_j - x_i, x_i]``, a shared MLP,
max over the neighbours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GATLayer(nn.Module):
    """One graph attention layer: ``x`` (N, in), ``adj`` (N, N) with adj[i, j] != 0 when j
    sends to i (self loops included). Output (N, heads * out) if ``concat`` else (N, out).

    Example:
        >>> GATLayer(16, 8, heads=4)(torch.randn(5, 16), torch.ones(5, 5)).shape
        torch.Size([5, 32])
    """

    def __init__(self, in_features: int, out_features: int, heads: int, concat: bool = True):
        super().__init__()
        self.heads, self.out_features, self.concat = heads, out_features, concat
        self.proj = nn.Linear(in_features, heads * out_features, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, out_features) * 0.3)
        self.att_dst = nn.Parameter(torch.randn(heads, out_features) * 0.3)
        self.bias = nn.Parameter(torch.randn(heads * out_features if concat else out_features) * 0.1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        h = self.proj(x).view(n, self.heads, self.out_features)  # (N, heads, F)
        e_src = (h * self.att_src).sum(-1)  # (N, heads)
        e_dst = (h * self.att_dst).sum(-1)
        e = F.leaky_relu(e_dst.unsqueeze(1) + e_src.unsqueeze(0), 0.2)  # (N_dst, N_src, heads)
        e = e.masked_fill(adj.unsqueeze(-1) == 0, float("-inf"))
        attn = torch.softmax(e, dim=1)
        out = torch.einsum("ijh,jhf->ihf", attn, h)  # (N, heads, F)
        if self.concat:
            out = out.reshape(n, self.heads * self.out_features)
        else:
            out = out.mean(dim=1)
        return out + self.bias


class GAT(nn.Module):
    """Two hidden GAT layers and an output layer averaging its heads (as in the paper)."""

    def __init__(self, in_features: int = 12, hidden: int = 8, heads: int = 4, classes: int = 3,
                 concat: bool = True):  # fmt: skip
        super().__init__()
        width = heads * hidden if concat else hidden
        self.gat1 = GATLayer(in_features, hidden, heads, concat)
        self.gat2 = GATLayer(width, hidden, heads, concat)
        self.out = GATLayer(width, classes, 2, concat=False)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.gat1(x, adj))
        x = F.elu(self.gat2(x, adj))
        return self.out(x, adj)


def random_graph(n: int = 10, features: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Node features and a symmetric 0/1 adjacency matrix with self loops."""
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(n, n, generator=g) < 0.3).float()
    adj = ((adj + adj.t() + torch.eye(n)) > 0).float()
    return torch.randn(n, features, generator=g), adj


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, N, k) of the k nearest points of every point; ``x`` is (B, C, N)."""
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x**2, dim=1, keepdim=True)
    neg_dist = -xx - inner - xx.transpose(2, 1)
    return neg_dist.topk(k=k, dim=-1)[1]


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, 2C, N, k): ``[x_j - x_i, x_i]`` for the k nearest neighbours j of every point i."""
    b, c, n = x.size(0), x.size(1), x.size(2)
    idx = knn(x, k)
    idx = (idx + torch.arange(0, b, device=x.device).view(-1, 1, 1) * n).view(-1)
    x = x.transpose(2, 1).contiguous()  # (B, N, C)
    neighbours = x.view(b * n, -1)[idx, :].view(b, n, k, c)
    x = x.view(b, n, 1, c).repeat(1, 1, k, 1)
    return torch.cat((neighbours - x, x), dim=3).permute(0, 3, 1, 2).contiguous()


class EdgeConv(nn.Module):
    """Edge features, a two-layer shared MLP (1x1 convs), max over the neighbours."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(edge_features(x, self.k)).max(dim=-1, keepdim=False)[0]


class DGCNN(nn.Module):
    """Point-cloud classifier: three edge convolutions (each after the first builds its
    graph in the previous one's feature space), a 1x1 conv over their concatenation, global
    max and mean pooling, an MLP head. Input (B, 3, N)."""

    def __init__(self, k: int = 4, emb: int = 64, classes: int = 5):
        super().__init__()
        self.ec1 = EdgeConv(3, 16, 16, k)
        self.ec2 = EdgeConv(16, 16, 32, k)
        self.ec3 = EdgeConv(32, 32, 32, k)
        self.conv = nn.Sequential(nn.Conv1d(16 + 32 + 32, emb, 1, bias=False), nn.BatchNorm1d(emb), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(
            nn.Linear(2 * emb, 32, bias=False), nn.BatchNorm1d(32), nn.LeakyReLU(0.2), nn.Dropout(0.5),
            nn.Linear(32, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.ec1(x)
        x2 = self.ec2(x1)
        x3 = self.ec3(x2)
        x = self.conv(torch.cat((x1, x2, x3), dim=1))
        b = x.size(0)
        pooled = torch.cat((F.adaptive_max_pool1d(x, 1).view(b, -1), F.adaptive_avg_pool1d(x, 1).view(b, -1)), 1)
        return self.head(pooled)
