"""passes/rewrite.py: slicing follows the model's device."""

import torch
import torchvision

import fxprune


def test_rewrite_and_mask_slice_on_the_models_device():
    """The kept positions are computed on the CPU; a model on another device (here "meta", as a
    GPU model would be) is sliced and masked there (a CPU index on a CUDA tensor raised)."""
    model = torchvision.models.resnet18().to("meta").eval()
    x = torch.empty(1, 3, 64, 64, device="meta")
    gm = fxprune.analyze(model, x)
    analysis = gm.meta["fxprune.analysis"]
    plan = fxprune.make_plan(gm, 0.5, {c.id: torch.arange(c.size, dtype=torch.float) for c in analysis.prunable()})
    small = fxprune.rewrite(gm, plan)
    assert small.conv1.weight.device.type == "meta" and small.conv1.weight.shape[0] == 32
    assert small.get_submodule("layer1.0.conv1").weight.shape == (32, 32, 3, 3)
    masked = fxprune.mask(gm, plan)
    assert masked.conv1.weight.device.type == "meta"
