"""Meta keys shared by the passes: each defined once, listed in passes/README.md (and
``blocks.REMOVED``, the block ids a removal took out)."""

__all__ = ["DIMS", "SPEC", "ANALYSIS", "PLAN", "REPORT", "CAPTURE", "INPUTS", "STATIC_DIMS"]

#: node.meta key written by ``passes.dependency``: a ``NodeDims`` (or a tuple of them
#: for nodes that return several tensors).
DIMS = "fxprune.dims"
#: node.meta key written by shape propagation: the value's spec (``TensorSpec``, a
#: python scalar, or a tuple/list of specs).
SPEC = "fxprune.spec"
#: GraphModule.meta key: the ``Analysis`` result (classes, parameter layouts, pins).
ANALYSIS = "fxprune.analysis"
#: GraphModule.meta key: the ``Plan`` to apply when ``rewrite`` is called without one.
PLAN = "fxprune.plan"
#: GraphModule.meta key on a pruned module: its ``Report``.
REPORT = "fxprune.report"
#: GraphModule.meta key written by capture: how the graph was obtained ("symbolic_trace", ...).
CAPTURE = "fxprune.capture"
#: GraphModule.meta key on a pruned module: its example inputs as meta-device tensors (shape
#: and dtype, no values) and python scalars, so ``fxprune.save`` can record them.
INPUTS = "fxprune.inputs"
#: GraphModule.meta key written by capture (torch.export): the input dims the graph is
#: specialized to, as ``fxprune.capture.StaticDim`` records (each says why); the other input dims
#: are dynamic. Absent for symbolic_trace, whose graphs take any shape.
STATIC_DIMS = "fxprune.static_dims"
