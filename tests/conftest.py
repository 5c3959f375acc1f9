"""Fixtures only (pytest injects them); shared helpers live in ``fxprune.testing``."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to a busy machine (spinning
    OpenMP workers made these tests ~100x slower under load). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
