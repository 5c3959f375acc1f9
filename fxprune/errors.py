"""fxprune's exceptions: each message names the pass, what went wrong, and what to try."""

__all__ = ["FxpruneError", "CaptureError", "PlanError", "UnsupportedOpError"]


class FxpruneError(RuntimeError):
    """Base class for fxprune failures that are not plain bad arguments."""


class CaptureError(FxpruneError):
    """The model could not be turned into a GraphModule, or did not run on the example inputs."""


class PlanError(FxpruneError):
    """A plan does not fit the model it is applied to."""


class UnsupportedOpError(FxpruneError):
    """Raised only on request (``strict=True``): an op without a rule pinned channels."""
