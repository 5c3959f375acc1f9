"""Zoo run: ``fxprune.compile`` at one ratio over torchvision and a deterministic timm sample,
optionally side by side with Torch-Pruning, written as JSON lines and ``docs/zoo.md``.

The full run (every torchvision classification, detection, segmentation and video model, and
the timm sample), in pieces if need be (``--resume`` skips every model already in the JSONL):

    .venv/bin/python benchmarks/zoo.py --vs torch-pruning --resume

A slice, and the markdown alone from an existing JSONL:

    .venv/bin/python benchmarks/zoo.py --sets tv-cls,timm --filter 'resnet|vit' --limit 20
    .venv/bin/python benchmarks/zoo.py --md-only
    .venv/bin/python benchmarks/zoo.py --sets none resnet18 timm:resnet10t   # only these

Per model (each step in-process, under ``signal.alarm(--timeout)``, every exception caught
into a category with the first line of its message):

1. build: construct with random weights (``fxprune.testing.randomize_``: norm affines, biases
   and BatchNorm statistics random, so a removed channel is not trivially zero), eval mode,
   and pick the smallest input from a ladder that the model runs on (recorded per row):
   classification ``1x3xSxS`` with S in (``--size``, 224, 299); segmentation the same;
   detection ``[3x224x224]`` (a list of one image, built with ``min_size=max_size=224``
   where the model takes them); video ``1x3x8x112x112`` then ``1x3x16x224x224``; timm:
   the default model at ``--size``, then ``img_size=--size`` passed to ``create_model``,
   then the pretrained config's ``input_size``.
2. exact: ``fxprune.compile(model, ratio, exact=True, verify=True)``: capture path, groups
   (total / exact / pruned), pinned channel classes and their top reasons, ops without a
   rule, masked-equals-pruned error, parameters and MACs before and after, seconds per stage.
3. default: ``fxprune.compile(model, ratio, verify=True)`` (exact and approximate groups):
   parameters and MACs after, the exact part's check, how far approximate groups move outputs.
4. ``--vs torch-pruning``: Torch-Pruning's recommended setup on a deep copy
   (``tp.pruner.BasePruner``, ``tp.importance.GroupMagnitudeImportance(p=2)``,
   ``pruning_ratio=ratio``, ``ignored_layers`` = the final classifier; for any module with a
   ``qkv`` Linear and an int ``num_heads``, ``num_heads={qkv: num_heads}`` and, after pruning,
   ``num_heads``/``head_dim``/``attn_dim`` set from the pruned ``qkv``, as in its timm example). Its groups are applied one by one (``pruner.step(interactive=True)``), each
   recorded first, and its result is checked like fxprune's: a copy of the original with the
   out-channel slices of every pruned module zeroed vs the Torch-Pruning model
   (``fxprune.verify.relative_error``). A group member whose slicing is not interpreted here
   (MultiheadAttention, LSTM, a customized pruner, an unknown module holding parameters)
   makes the check "unknown" instead of a guess.

Status of the exact run (the "passing" notion of the issue): ``pass`` (masked-equals-pruned
holds and there are fewer parameters), ``pass_no_reduction`` (holds, nothing removed),
``verify_failed``, or the step that raised: ``construct``, ``input`` (no input of the ladder
runs the model), ``capture``, ``analysis``, ``importance``, ``plan``, ``rewrite``, ``macs``,
``verify_raised``, ``api``, ``timeout``, ``oom``, ``crashed`` (the process died on it: a model
left "running" in the JSONL by an earlier run).

timm sample (deterministic for a given timm version; ``--timm-n``, default 300): families are
the timm modules models are registered in (``timm.list_modules()``, ``timm.list_models(module=
...)``). Within a family, names are ordered by SHA-1 of the name; families are visited in
sorted order, round-robin, one model per family per round, until ``--timm-n`` models.
Excluded (skipped, listed in docs/zoo.md): a name with a token in ``HUGE_TOKENS`` (giant,
huge, gigantic, enormous, xlarge, xxlarge, so400m, 1b/2b/3b/6b/7b), or more than
``--timm-max-params`` (default 200M) parameters counted on the meta device (no memory, no
weights). A model whose meta construction fails stays in the sample (its row says why it
cannot be built).

The package (``benchmarks/`` is on the path: it is the script's folder, and pytest's
``pythonpath``): ``models`` (the lists), ``build`` (random weights and the input ladder),
``limits`` (time limits, error categories), ``run`` (fxprune's side and ``run_model``), ``tp``
(Torch-Pruning's side), ``records`` (JSON lines), ``markdown`` (docs/zoo.md), ``cli``.
"""

from __future__ import annotations

from .build import Options, build
from .cli import main
from .limits import StepTimeout, first_line, is_oom, stage_of, time_limit
from .markdown import write_markdown
from .models import (
    CNN_FAMILIES,
    HUGE_TOKENS,
    SOURCES,
    ModelSpec,
    resolve,
    timm_sample,
    torchvision_cnns,
    torchvision_specs,
)
from .records import append, load_meta, load_records, machine_meta, merged_meta
from .run import reason_kind, run_backbone, run_fxprune, run_model
from .tp import run_torch_pruning

__all__ = [
    "Options", "build", "main", "StepTimeout", "first_line", "is_oom", "stage_of", "time_limit", "write_markdown",
    "CNN_FAMILIES", "HUGE_TOKENS", "SOURCES", "ModelSpec", "resolve", "timm_sample", "torchvision_cnns",
    "torchvision_specs", "append", "load_meta", "load_records", "machine_meta", "merged_meta", "reason_kind",
    "run_backbone", "run_fxprune", "run_model", "run_torch_pruning",
]  # fmt: skip
