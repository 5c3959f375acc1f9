import pytest
import torch
from torch import nn


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every vector parameter (norm affines, biases, layer scales) and every BatchNorm
    running statistic random values, so that a removed channel is not trivially zero in the
    masked original (default inits have beta = 0, mean = 0, and layer scales of 1e-6). Weight
    matrices initialised to all zeros (torchvision ViT's classifier head) get random values
    too, or every output would be the bias and any two pruned models would compare equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() == max(p.shape, default=1):
                p.copy_(torch.empty(p.shape).uniform_(0.5, 1.5, generator=g))
            elif p.numel() and not p.any():
                p.copy_(torch.empty(p.shape).normal_(0.0, 0.02, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.empty(m.running_mean.shape).uniform_(-0.5, 0.5, generator=g))
                m.running_var.copy_(torch.empty(m.running_var.shape).uniform_(0.5, 2.0, generator=g))
    return model


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to a busy machine (spinning
    OpenMP workers made these tests ~100x slower under load). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
