"""fxprune: structural pruning (DepGraph) as torch.fx compiler passes.

Example:
    >>> import torch, torchvision, fxprune
    >>> model = torchvision.models.resnet18()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    >>> fxprune.verify(model, small, x).passed
    True
"""

from . import (
    dynamo,
    plots,  # noqa: E402 - matplotlib is imported only when a plot is drawn
)
from .api import analyze, compile, sparsify
from .capture import capture
from .depth import block_scores, linear_cka
from .dynamo import backend
from .errors import CaptureError, FxpruneError, PlanError, UnsupportedOpError
from .importance import magnitude
from .io import SaveFormatError, export, load, save
from .passes.blocks import Block, find_blocks, remove_blocks
from .passes.dependency import propagate
from .passes.rewrite import register_module_update, register_rewrite, rewrite
from .passes.rules import register_method, register_module, register_rule
from .passes.sparsify import SparsifyHandle
from .plan import Group, Plan, choose, make_plan
from .report import Report, count_macs, count_params, latency_ms
from .verify import VerifyResult, mask, verify

__all__ = [
    "analyze", "compile", "backend", "dynamo", "capture", "propagate", "make_plan", "choose", "rewrite", "verify", "mask", "magnitude",
    "register_rule", "register_module", "register_method", "register_rewrite", "register_module_update",
    "Plan", "Group", "Report", "VerifyResult", "count_macs", "count_params", "latency_ms",
    "FxpruneError", "CaptureError", "PlanError", "UnsupportedOpError",
    "sparsify", "SparsifyHandle",
    "save", "load", "export", "SaveFormatError", "plots",
    "find_blocks", "remove_blocks", "Block", "block_scores", "linear_cka",
]  # fmt: skip
from .version import __version__ as __version__  # noqa: E402 - re-exported
