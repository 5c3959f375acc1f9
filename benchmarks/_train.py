"""The small Fashion-MNIST training loop shared by the CPU accuracy benchmarks
(depth_vs_width.py, isomorphic_ranking.py): data as normalized tensors, seeded SGD, accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _data import load_fashion_mnist, stratified_subset

__all__ = ["FMNIST_MEAN", "FMNIST_STD", "fmnist_tensors", "train", "accuracy"]

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def fmnist_tensors(split: str, n: int, seed: int = 0, pool: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subset of ``n`` images of ``split`` as normalized (n, 1, H, W) floats, average
    pooled by ``pool``, and their labels."""
    x, y = load_fashion_mnist(split)
    idx = stratified_subset(y, n, seed)
    xt = (torch.from_numpy(np.ascontiguousarray(x[idx])).float().div(255) - FMNIST_MEAN) / FMNIST_STD
    xt = xt.unsqueeze(1)
    if pool > 1:
        xt = F.avg_pool2d(xt, pool)
    return xt.contiguous(), torch.from_numpy(y[idx])


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int, batch: int = 128) -> None:
    """SGD (momentum 0.9, wd 5e-4), cosine lr; the batch order depends only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    epochs = -(-steps * batch // len(x))
    perm = torch.cat([torch.randperm(len(x), generator=g) for _ in range(epochs)])
    for s in range(steps):
        i = perm[s * batch:(s + 1) * batch]
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    hits = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    return hits / len(x)
