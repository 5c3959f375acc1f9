"""fxprune: structural pruning (DepGraph) as torch.fx compiler passes.

Example:
    >>> import torch, torchvision, fxprune
    >>> model = torchvision.models.resnet18()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> small = fxprune.compile(model, 0.5, example_inputs=x, exact=True)
    >>> fxprune.verify(model, small, x).passed
    True
"""

from .api import analyze, compile
from .capture import capture
from .errors import CaptureError, FxpruneError, PlanError, UnsupportedOpError
from .importance import magnitude
from .passes.dependency import propagate
from .passes.rewrite import register_module_update, register_rewrite, rewrite
from .passes.rules import register_method, register_module, register_rule
from .passes.sparsify import SparsifyHandle, sparsify
from .plan import Group, Plan, make_plan
from .report import Report, count_macs, count_params, latency_ms
from .verify import VerifyResult, mask, verify

__all__ = [
    "analyze", "compile", "capture", "propagate", "make_plan", "rewrite", "verify", "mask", "magnitude",
    "register_rule", "register_module", "register_method", "register_rewrite", "register_module_update",
    "Plan", "Group", "Report", "VerifyResult", "count_macs", "count_params", "latency_ms",
    "FxpruneError", "CaptureError", "PlanError", "UnsupportedOpError",
    "sparsify", "SparsifyHandle",
]  # fmt: skip
__version__ = "0.1.0"
