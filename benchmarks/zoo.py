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

1. build: construct with random weights (``tests/conftest.randomize_``: norm affines, biases
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
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fxprune  # noqa: E402
from fxprune.testing import randomize_
from fxprune.verify import relative_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("tv-cls", "tv-det", "tv-seg", "tv-video", "timm")
HUGE_TOKENS = frozenset("giant giantopt gigantic huge enormous xlarge xxlarge so400m 1b 2b 3b 6b 7b".split())


# ------------------------------------------------------------------------------------------
# model lists
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: ``source`` is one of SOURCES, ``family`` the module its builder
    lives in (``torchvision.models.resnet`` -> ``resnet``; timm: its registering module).

    Example:
        >>> ModelSpec("resnet18", "tv-cls", "resnet").key
        'tv-cls:resnet18'
    """

    name: str
    source: str
    family: str

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}"


_TV_MODULES = {"tv-cls": "", "tv-det": "detection", "tv-seg": "segmentation", "tv-video": "video"}


def torchvision_specs(source: str) -> list[ModelSpec]:
    """Every model torchvision lists for one task (``source``: tv-cls, tv-det, tv-seg, tv-video).

    Example:
        >>> len(torchvision_specs("tv-cls")) >= 80
        True
    """
    import importlib

    import torchvision

    sub = _TV_MODULES[source]
    module = importlib.import_module("torchvision.models" + (f".{sub}" if sub else ""))
    out = []
    for name in sorted(torchvision.models.list_models(module=module)):
        builder = torchvision.models.get_model_builder(name)
        family = builder.__module__.removeprefix("torchvision.models.").removeprefix(f"{sub}.")
        out.append(ModelSpec(name, source, family))
    return out


def _stable_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def _meta_params(name: str) -> int | None:
    """Parameter count of a timm model built on the meta device (no memory); None if it fails."""
    import timm

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            m = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in m.parameters())
    except Exception:  # noqa: BLE001 - the model's own run will say why it cannot be built
        return None


def timm_sample(n: int = 300, max_params: float = 200e6) -> tuple[list[ModelSpec], list[dict[str, Any]]]:
    """The deterministic timm sample described in this module's docstring, and the models
    skipped on the way (``{"name", "family", "why"}``).

    Example:
        >>> specs, skipped = timm_sample(5)
        >>> [s.family for s in specs] == sorted(s.family for s in specs)
        True
    """
    import timm

    families = {}
    for mod in sorted(timm.list_modules()):
        names = sorted(timm.list_models(module=mod), key=_stable_hash)
        if names:
            families[mod] = names
    out: list[ModelSpec] = []
    skipped: list[dict[str, Any]] = []
    cursor = dict.fromkeys(families, 0)
    while len(out) < n and any(cursor[f] < len(families[f]) for f in families):
        for fam in families:
            if len(out) >= n:
                break
            while cursor[fam] < len(families[fam]):
                name = families[fam][cursor[fam]]
                cursor[fam] += 1
                tokens = set(re.split(r"[_.]", name.lower()))
                if tokens & HUGE_TOKENS:
                    skipped.append(
                        {"name": name, "family": fam, "why": f"name token {sorted(tokens & HUGE_TOKENS)[0]}"}
                    )
                    continue
                count = _meta_params(name)
                if count is not None and count > max_params:
                    skipped.append({"name": name, "family": fam, "why": f"{count / 1e6:.0f}M parameters"})
                    continue
                out.append(ModelSpec(name, "timm", fam))
                break
    return out, skipped


def resolve(names: Iterable[str]) -> list[ModelSpec]:
    """Command-line model names: ``source:name`` (``tv-cls:resnet18``, ``timm:resnet10t``; also
    ``torchvision:`` for any torchvision task), or a bare name, looked up in torchvision's
    lists first, then timm's.

    Raises:
        ValueError: a name neither torchvision nor timm knows.
    """
    import timm

    tv = {s.name: s for src in _TV_MODULES for s in torchvision_specs(src)}
    out = []
    for raw in names:
        source, _, name = raw.rpartition(":")
        if source in ("", "torchvision") + tuple(_TV_MODULES) and name in tv:
            out.append(tv[name])
        elif source in ("", "timm") and timm.is_model(name):
            out.append(ModelSpec(name, "timm", _timm_family(name)))
        else:
            raise ValueError(
                f"zoo: unknown model {raw!r}: give a torchvision name (torchvision.models.list_models()) "
                "or a timm one (timm.list_models()), optionally as source:name, e.g. timm:resnet10t"
            )
    return out


def _timm_family(name: str) -> str:
    """The timm module ``name`` is registered in (its family)."""
    import timm

    for mod in sorted(timm.list_modules()):
        if name in timm.list_models(module=mod):
            return mod
    return "?"


# ------------------------------------------------------------------------------------------
# timeouts and error categories
# ------------------------------------------------------------------------------------------
class StepTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that library ``except Exception`` fallbacks
    (e.g. capture trying torch.export after fx) do not swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout after ``seconds`` (main thread, POSIX); no limit when <= 0."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise StepTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def first_line(e: BaseException, limit: int = 300) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}".rstrip(": ")


def _detail(e: BaseException, limit: int = 1200) -> str:
    """The whole message (a capture error quotes the fx and the torch.export failures on
    separate lines) and the innermost frame, for the JSONL."""
    frames = traceback.extract_tb(e.__traceback__)
    where = (
        f" [at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} {frames[-1].name}]"
        if frames
        else ""
    )
    return (f"{type(e).__name__}: {str(e).strip()}"[:limit] + where).replace("\n", " | ")


_STAGE_OF_FILE = {
    "capture.py": "capture", "dependency.py": "analysis", "importance.py": "importance",
    "plan.py": "plan", "rewrite.py": "rewrite", "report.py": "macs", "verify.py": "verify_raised",
}  # fmt: skip


def is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def stage_of(e: BaseException) -> str:
    """The step of ``fxprune.compile`` an exception came from: the first frame below
    ``compile`` in its traceback names the file, hence the stage."""
    if isinstance(e, StepTimeout):
        return "timeout"
    if is_oom(e):
        return "oom"
    if isinstance(e, fxprune.CaptureError):
        return "capture"
    frames = traceback.extract_tb(e.__traceback__)
    for i, fr in enumerate(frames):
        if fr.name == "compile" and fr.filename.endswith(os.path.join("fxprune", "api.py")):
            if i + 1 == len(frames):
                return "api"
            return _STAGE_OF_FILE.get(os.path.basename(frames[i + 1].filename), "api")
    return "api"


# ------------------------------------------------------------------------------------------
# building a model and its input
# ------------------------------------------------------------------------------------------
@dataclass
class Options:
    """What one model's run does (the command-line flags of the same names)."""

    ratio: float = 0.5
    size: int = 64
    timeout: float = 300.0
    tol: float = 1e-4
    vs_tp: bool = False
    default_mode: bool = True
    seed: int = 0


def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _runs(model: nn.Module, args: tuple) -> bool:
    try:
        with torch.no_grad():
            model(*args)
        return True
    except StepTimeout:
        raise
    except Exception:  # noqa: BLE001 - the next rung of the ladder is tried
        return False


def _candidates(spec: ModelSpec, opts: Options) -> Iterator[tuple[Callable[[], nn.Module], tuple, str, str]]:
    """(builder, example args, input description, note) in the order tried."""
    import torchvision

    s = opts.size
    name = spec.name
    if spec.source == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(name)
        c, h, w = tuple(getattr(cfg, "input_size", None) or (3, 224, 224)) if cfg else (3, 224, 224)
        sh, sw = min(s, h), min(s, w)
        build = lambda **kw: timm.create_model(name, pretrained=False, **kw)  # noqa: E731
        if (sh, sw) != (h, w):
            yield build, (_randn((1, c, sh, sw), opts.seed),), f"1x{c}x{sh}x{sw}", ""
            yield (
                (lambda: build(img_size=(sh, sw))),
                (_randn((1, c, sh, sw), opts.seed),),
                f"1x{c}x{sh}x{sw}",
                f"img_size={sh}x{sw}",
            )
        yield build, (_randn((1, c, h, w), opts.seed),), f"1x{c}x{h}x{w}", "pretrained_cfg input_size"
        return
    tv = lambda **kw: torchvision.models.get_model(name, weights=None, **kw)  # noqa: E731
    if spec.source in ("tv-cls", "tv-seg"):
        kw = {"weights_backbone": None} if spec.source == "tv-seg" else {}
        same = lambda: tv(**kw)  # noqa: E731 - one builder: the model is built once for every size
        for size in dict.fromkeys((s, 224, 299)):
            yield same, (_randn((1, 3, size, size), opts.seed),), f"1x3x{size}x{size}", ""
    elif spec.source == "tv-det":
        img = [_randn((3, 224, 224), opts.seed)]
        yield (
            (lambda: tv(weights_backbone=None, min_size=224, max_size=224)),
            (img,),
            "[3x224x224]",
            "min_size=max_size=224",
        )
        yield (lambda: tv(weights_backbone=None)), (img,), "[3x224x224]", "default transform size"
    elif spec.source == "tv-video":
        for t, size in ((8, 112), (16, 224)):
            yield tv, (_randn((1, 3, t, size, size), opts.seed),), f"1x3x{t}x{size}x{size}", ""
    else:
        raise ValueError(f"zoo: unknown source {spec.source!r}; use one of {SOURCES}")


def build(spec: ModelSpec, opts: Options) -> tuple[nn.Module, tuple, str, str]:
    """Construct ``spec`` with random weights (randomize_), eval mode, and the first input of
    its ladder it runs on. Returns (model, args, input description, note).

    Raises:
        RuntimeError: "construct: ..." when no builder works, "input: ..." when no input runs.
    """
    errors: list[str] = []
    built_once = False
    last_model: tuple[Callable, nn.Module] | None = None
    for builder, args, desc, note in _candidates(spec, opts):
        try:
            if last_model is not None and last_model[0] is builder:
                model = last_model[1]
            else:
                last_model = None
                gc.collect()
                torch.manual_seed(opts.seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = randomize_(builder().eval(), opts.seed)
                last_model = (builder, model)
            built_once = True
        except StepTimeout:
            raise
        except Exception as e:  # noqa: BLE001
            errors.append(f"{note or desc}: {first_line(e)}")
            continue
        if _runs(model, args):
            return model, args, desc, note
        errors.append(f"input {desc} does not run the model")
    kind = "input" if built_once else "construct"
    raise RuntimeError(f"{kind}: " + "; ".join(errors)[:600])


# ------------------------------------------------------------------------------------------
# fxprune
# ------------------------------------------------------------------------------------------
def reason_kind(reason: str) -> str:
    """A pin reason without its node names, so that reasons count across nodes and models.

    Example:
        >>> reason_kind("spatial dims mixed by a convolution (conv1)")
        'spatial dims mixed by a convolution'
        >>> reason_kind("graph input x")
        'graph input'
        >>> reason_kind("no common refinement of cat[48, 48] and prod[2, 48] (cat_3)")
        'no common refinement of cat[..] and prod[..]'
    """
    r = re.sub(r"^graph input \S+$", "graph input", reason)
    r = re.sub(r" \([A-Za-z_][\w.]*\)$", "", r)
    r = re.sub(r" at [\w.]+ ", " ", r)
    r = re.sub(r"\[[\d, ]+\]", "[..]", r)  # sizes: "no common refinement of cat[48, 48] and prod[2, 48]"
    return r[:160]


def _finite(x: float | None) -> float | str | None:
    if x is None:
        return None
    return x if math.isfinite(x) else str(x)


def _versions(model: nn.Module) -> dict[str, tuple]:
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(dict(model.named_buffers(remove_duplicate=False)))
    return {k: (id(t), t._version, tuple(t.shape)) for k, t in state.items()}


def run_fxprune(model: nn.Module, args: tuple, opts: Options, *, exact: bool, keep: bool = False) -> Any:
    """One ``fxprune.compile(..., verify=True)``; the fields of docs/zoo.md's fxprune columns
    (and the pruned model, ``keep=True``: ``(fields, model)``). Exceptions propagate (the
    caller categorizes them)."""
    before = _versions(model)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fxprune.compile(model, opts.ratio, example_inputs=args, exact=exact, verify=True)
    seconds = time.perf_counter() - t
    r = out.meta["fxprune.report"]
    v = r.verification
    plan = r.plan
    pinned = r.pinned_rows()
    kinds = Counter(reason_kind(row[2]) for row in pinned)
    unsupported = list(r.unsupported)
    f64 = None
    if not v.passed and v.max_rel_err is not None and math.isfinite(v.max_rel_err):
        # float32 rounding differences can be amplified past the tolerance (deep random-weight
        # nets, attention); float64 tells them apart from a wrong pruning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f64 = fxprune.verify(model, out, args, plan=plan, dtype=torch.float64)
    rec: dict[str, Any] = {
        "capture": r.capture,
        "groups": len(plan.groups),
        "groups_exact": sum(g.exact for g in plan.groups),
        "groups_pruned": sum(1 for g in plan.groups if plan.removed(g.id) > 0),
        "pinned": len(pinned),
        "pinned_top": [[k, n] for k, n in kinds.most_common(3)],
        "unsupported": len(unsupported),
        "unsupported_ops": [[op, n] for op, n in Counter(u.op for u in unsupported).most_common()],
        "unsupported_msgs": [u.message() for u in unsupported[:10]],
        "params_before": r.params_before,
        "params_after": r.params_after,
        "macs_before": r.macs_before,
        "macs_after": r.macs_after,
        "param_reduction": 1 - r.params_after / r.params_before if r.params_before else 0.0,
        "mac_reduction": 1 - r.macs_after / r.macs_before if r.macs_before else 0.0,
        "verified": bool(v.passed or (f64 is not None and f64.passed)),
        "verified_in": "float32" if v.passed else "float64" if f64 is not None and f64.passed else None,
        "max_rel_err": _finite(v.max_rel_err),
        "max_rel_err_f64": _finite(f64.max_rel_err) if f64 is not None else None,
        "approx_rel_err": _finite(v.approx_rel_err),
        "seconds": round(seconds, 3),
        # "verify+count": masked-equals-pruned and the parameter/MAC counts (outside report.seconds)
        "stage_seconds": {
            **{k: round(s, 3) for k, s in r.seconds.items()},
            "verify+count": round(seconds - sum(r.seconds.values()), 3),
        },
        "model_untouched": _versions(model) == before,
    }
    if not rec["model_untouched"]:
        rec["note"] = "fxprune.compile modified the input model (parameter or buffer changed in place)"
    if keep:
        return rec, out
    del out
    return rec


def run_backbone(model: nn.Module, args: tuple, opts: Options) -> dict[str, Any]:
    """A torchvision detector whose whole forward cannot be captured (data-dependent box
    post-processing): prune its ``backbone`` (body + FPN; the feature maps it returns are
    graph outputs, so they keep their channels) on the batched image its ``transform`` makes,
    check masked-equals-pruned there, and run the detector end to end with the pruned
    backbone swapped into a copy. Equal features give equal detections, so the backbone's
    check is the detector's."""
    images, _ = model.transform(list(args[0]))
    x = images.tensors
    rec, small = run_fxprune(model.backbone, (x,), opts, exact=True, keep=True)  # the checked one
    det = copy.deepcopy(model)
    det.backbone = small
    with torch.no_grad():
        det(*args)
    rec["detector_runs"] = True
    rec["input"] = "x".join(map(str, x.shape))
    rec["detector_params_before"] = fxprune.count_params(model)
    rec["detector_params_after"] = fxprune.count_params(det)
    rec["status"] = _status(rec)
    return rec


_DEFAULT_KEYS = (
    "groups_pruned",
    "params_after",
    "macs_after",
    "param_reduction",
    "mac_reduction",
    "verified",
    "max_rel_err",
    "approx_rel_err",
    "seconds",
    "model_untouched",
)


def _status(rec: dict[str, Any]) -> str:
    if not rec["verified"]:
        return "verify_failed"
    return "pass" if rec["params_after"] < rec["params_before"] else "pass_no_reduction"


# ------------------------------------------------------------------------------------------
# Torch-Pruning
# ------------------------------------------------------------------------------------------
def _classifier_layers(model: nn.Module, args: tuple) -> list[nn.Module]:
    """The final classifier(s) Torch-Pruning is told to ignore: timm's ``get_classifier()``;
    otherwise every Linear/Conv whose output tensor is (a view of) a model output, or else
    the last Linear/Conv to run."""
    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        heads = head if isinstance(head, (tuple, list)) else (head,)
        found = [m for h in heads if isinstance(h, nn.Module) for m in h.modules() if isinstance(m, kinds)]
        if found:
            return found[-1:] if len(heads) == 1 else found
    order: list[tuple[nn.Module, torch.Tensor]] = []

    def hook(m: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            order.append((m, out))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            out = model(*args)
    finally:
        for h in hooks:
            h.remove()
    from fxprune.verify import _tensors

    ptrs = {t.untyped_storage().data_ptr() for t in _tensors(out)}
    found = [m for m, t in order if t.untyped_storage().data_ptr() in ptrs]
    seen: list[nn.Module] = []
    for m in found or [m for m, _ in order[-1:]]:
        if all(m is not s for s in seen):
            seen.append(m)
    return seen


class _Unknown(Exception):
    """A Torch-Pruning group member whose slicing the masked check does not interpret."""


def _zero_dim(p: torch.Tensor | None, dim: int, idxs: list[int]) -> None:
    if p is not None and idxs:
        with torch.no_grad():
            p.index_fill_(dim % p.dim(), torch.tensor(idxs, dtype=torch.long), 0.0)


class _TPMasker:
    """Zeroes, in a copy of the original, the slices Torch-Pruning removes from the outputs
    of its modules (so that each removed channel is 0 wherever it flows), in the original's
    index space (indices of a dim pruned twice are mapped through what was kept)."""

    def __init__(self, original: nn.Module, names: dict[int, str], param_names: dict[int, str]):
        self.masked = copy.deepcopy(original)
        self.mods = dict(self.masked.named_modules())
        self.params = dict(self.masked.named_parameters(remove_duplicate=False))
        self.names, self.param_names = names, param_names
        self.alive: dict[tuple[str, int], list[int]] = {}

    def _orig(self, key: tuple[str, int], size: int, idxs: list[int]) -> list[int]:
        alive = self.alive.setdefault(key, list(range(size)))
        orig = [alive[i] for i in idxs]
        drop = set(idxs)
        self.alive[key] = [a for j, a in enumerate(alive) if j not in drop]
        return orig

    def apply(self, dep: Any, idxs: list[int], tp: Any) -> None:
        T = tp.ops.OPTYPE
        target = dep.target
        kind = target.type
        mod = target.module
        out_fn = dep.handler.__name__ == "prune_out_channels"
        if kind == T.PARAMETER:
            name = self.param_names.get(id(mod))
            if name is None or name not in self.params:
                raise _Unknown("an unwrapped parameter without a name")
            p = self.params[name]
            d = target.pruning_dim % p.dim()
            _zero_dim(p, d, self._orig((name, d), p.shape[d], idxs))
            return
        name = self.names.get(id(mod))
        if kind in (T.CONCAT, T.SPLIT, T.ELEMENTWISE, T.RESHAPE, T.UNBIND, T.EXPAND, T.SLICE, T.OUTPUT):
            if isinstance(mod, nn.Module) and any(True for _ in mod.parameters(recurse=False)):
                raise _Unknown(f"{type(mod).__name__} holds parameters and has no Torch-Pruning pruner")
            return  # a pseudo-op without parameters
        if name is None or name not in self.mods:
            raise _Unknown(f"{type(mod).__name__} not found in the original")
        m = self.mods[name]
        if kind == T.CONV:
            if not out_fn:
                return
            d = 1 if m.transposed else 0
            if m.transposed and m.groups > 1:
                raise _Unknown(f"{name}: grouped transposed conv")
            orig = self._orig((name + ".weight", d), m.weight.shape[d], idxs)
            _zero_dim(m.weight, d, orig)
            _zero_dim(m.bias, 0, orig)
        elif kind == T.DEPTHWISE_CONV:
            orig = self._orig((name + ".weight", 0), m.weight.shape[0], idxs)
            _zero_dim(m.weight, 0, orig)
            _zero_dim(m.bias, 0, orig)
        elif kind == T.LINEAR:
            if not out_fn:
                return
            orig = self._orig((name + ".weight", 0), m.weight.shape[0], idxs)
            _zero_dim(m.weight, 0, orig)
            _zero_dim(m.bias, 0, orig)
        elif kind in (T.BN, T.GN, T.IN):
            if getattr(m, "weight", None) is None:
                raise _Unknown(f"{name}: {type(m).__name__} without affine parameters")
            orig = self._orig((name + ".weight", 0), m.weight.shape[0], idxs)
            _zero_dim(m.weight, 0, orig)
            _zero_dim(m.bias, 0, orig)
        elif kind == T.LN:
            if m.weight is None:
                raise _Unknown(f"{name}: LayerNorm without affine parameters")
            d = target.pruning_dim % m.weight.dim()
            orig = self._orig((name + ".weight", d), m.weight.shape[d], idxs)
            _zero_dim(m.weight, d, orig)
            _zero_dim(m.bias, d, orig)
        elif kind == T.PRELU:
            return  # prelu(0) == 0: the channel is already zero
        elif kind == T.EMBED:
            if not out_fn:
                return
            orig = self._orig((name + ".weight", 1), m.weight.shape[1], idxs)
            _zero_dim(m.weight, 1, orig)
        else:
            raise _Unknown(f"{name}: {type(m).__name__} ({kind.name}) slicing is not interpreted")


def run_torch_pruning(model: nn.Module, args: tuple, opts: Options) -> dict[str, Any]:
    """Torch-Pruning on a deep copy, its recommended setup (module docstring), and the
    masked-equals-pruned check of its result."""
    import torch_pruning as tp

    rec: dict[str, Any] = {"ran": False, "stage": "setup"}
    t = time.perf_counter()
    try:
        work = copy.deepcopy(model).eval()
        ignored = _classifier_layers(work, args)
        names = {id(m): n for n, m in work.named_modules()}
        rec["ignored"] = [names.get(id(m), "?") for m in ignored]
        attention = [
            m for m in work.modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)
        ]  # fmt: skip
        num_heads = {m.qkv: int(m.num_heads) for m in attention}
        rec["stage"] = "build"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.BasePruner(
                work, args, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=opts.ratio,
                ignored_layers=ignored, num_heads=num_heads, forward_fn=lambda m, x: m(*x),
            )  # fmt: skip
            params_before = fxprune.count_params(work)
            masker = _TPMasker(model, names, {})
            unknown: str | None = None
            rec["stage"] = "step"
            n_groups = 0
            for group in pruner.step(interactive=True):
                masker.param_names = {id(p): n for p, n in pruner.DG._param_to_name.items()}
                if unknown is None:
                    try:
                        for dep, idxs in group:
                            masker.apply(dep, [int(i) for i in _plain(idxs)], tp)
                    except _Unknown as e:
                        unknown = str(e)
                group.prune()
                n_groups += 1
        rec["groups"] = n_groups
        for m in attention:  # its timm recipe: the attention modules read the new widths
            m.num_heads = int(pruner.num_heads.get(m.qkv, m.num_heads))
            if hasattr(m, "head_dim"):
                m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.qkv.out_features // 3
        rec["stage"] = "forward"
        work.eval()
        rec["params_before"] = params_before
        rec["params_after"] = fxprune.count_params(work)
        rec["param_reduction"] = 1 - rec["params_after"] / params_before if params_before else 0.0
        with torch.no_grad():
            got = work(*args)
        rec["ran"] = True
        try:
            rec["macs_after"] = fxprune.count_macs(work, args)
        except Exception as e:  # noqa: BLE001
            rec["macs_error"] = first_line(e)
        rec["stage"] = "check"
        if unknown is not None:
            rec["check"] = "unknown"
            rec["check_why"] = unknown
        else:
            with torch.no_grad():
                want = masker.masked.eval()(*args)
            err = relative_error(got, want)
            rec["max_rel_err"] = _finite(err)
            rec["check"] = "pass" if err <= opts.tol else "fail"
        rec.pop("stage")
    except StepTimeout as e:
        rec["error"] = first_line(e)
        rec["category"] = "timeout"
    except Exception as e:  # noqa: BLE001 - Torch-Pruning failing is a finding, not the end of the run
        rec["error"] = first_line(e)
        rec["error_detail"] = _detail(e)
        rec["category"] = "oom" if is_oom(e) else rec.get("stage", "?")
    rec["seconds"] = round(time.perf_counter() - t, 3)
    return rec


def _plain(idxs: Any) -> list[int]:
    return [i.idx if hasattr(i, "idx") else i for i in idxs]


# ------------------------------------------------------------------------------------------
# one model
# ------------------------------------------------------------------------------------------
def run_model(spec: ModelSpec, opts: Options) -> dict[str, Any]:
    """Everything docs/zoo.md says about one model, as one JSON-able dict. Never raises
    (except KeyboardInterrupt): failures are recorded with their category.

    Example:
        >>> rec = run_model(ModelSpec("resnet18", "tv-cls", "resnet"), Options(size=32))
        >>> rec["status"], rec["exact"]["verified"]
        ('pass', True)
    """
    rec: dict[str, Any] = {
        "name": spec.name,
        "source": spec.source,
        "family": spec.family,
        "ratio": opts.ratio,
    }
    t0 = time.perf_counter()
    model = args = None
    try:
        with time_limit(opts.timeout):
            model, args, desc, note = build(spec, opts)
        rec["input"] = desc
        rec["input_note"] = note
        rec["params"] = fxprune.count_params(model)
    except StepTimeout as e:
        rec.update(status="timeout", stage="build", error=first_line(e))
    except Exception as e:  # noqa: BLE001
        text = str(e)
        kind = (
            "oom"
            if is_oom(e)
            else text.split(":", 1)[0]
            if text.startswith(("construct:", "input:"))
            else "construct"
        )
        rec.update(status=kind, stage="build", error=first_line(e, 600))
    if model is not None:
        try:
            with time_limit(opts.timeout):
                ex = run_fxprune(model, args, opts, exact=True)
            rec["exact"] = ex
            rec["status"] = _status(ex)
            if ex.get("note"):
                rec["note"] = ex["note"]
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - StepTimeout included
            rec.update(status=stage_of(e), stage="exact", error=first_line(e), error_detail=_detail(e))
        if rec.get("status") == "capture" and hasattr(model, "backbone") and hasattr(model, "transform"):
            try:
                with time_limit(opts.timeout):
                    rec["backbone"] = run_backbone(model, args, opts)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001
                rec["backbone"] = {"category": stage_of(e), "error": first_line(e)}
        if opts.default_mode:
            try:
                with time_limit(opts.timeout):
                    de = run_fxprune(model, args, opts, exact=False)
                rec["default"] = {k: de[k] for k in _DEFAULT_KEYS}
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001
                rec["default"] = {"category": stage_of(e), "error": first_line(e), "error_detail": _detail(e)}
        if opts.vs_tp:
            try:
                with time_limit(opts.timeout):
                    rec["tp"] = run_torch_pruning(model, args, opts)
            except StepTimeout as e:
                rec["tp"] = {"ran": False, "category": "timeout", "error": first_line(e)}
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    del model, args
    gc.collect()
    return rec


# ------------------------------------------------------------------------------------------
# JSON lines
# ------------------------------------------------------------------------------------------
def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of each model (``source:name``) in a JSONL file; a model whose last
    record is still "running" (the process died on it) becomes status "crashed"."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if rec.get("type") == "meta":
            continue
        out[f"{rec['source']}:{rec['name']}"] = rec
    for rec in out.values():
        if rec.get("status") == "running":
            rec["status"] = "crashed"
            rec["error"] = "the process died while running this model (segfault, kill or OOM killer)"
    return out


def append(path: Path, rec: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------
def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1%}" if xs else "-"


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "-"


def _err(x: Any) -> str:
    if isinstance(x, (int, float)):
        return f"{x:.1e}"
    return "-" if x is None else str(x)


def _m(n: Any) -> str:
    return f"{n / 1e6:.2f}" if isinstance(n, (int, float)) else "-"


def _tp_cell(tp: dict[str, Any] | None) -> tuple[str, str, str]:
    """(ran, fewer params, check) cells of a model's Torch-Pruning result."""
    if not tp:
        return "", "", ""
    if not tp.get("ran"):
        return f"no ({tp.get('category', '?')})", "-", "-"
    check = tp.get("check", "?")
    if check == "fail":
        check = f"FAIL {_err(tp.get('max_rel_err'))}"
    elif check == "pass":
        check = f"pass {_err(tp.get('max_rel_err'))}"
    return "yes", _pct(tp.get("param_reduction")), check


def _tp_why(tp: dict[str, Any]) -> str:
    if tp.get("check") == "fail":
        return f"max rel err {_err(tp.get('max_rel_err'))}"
    return tp.get("error_detail") or tp.get("error") or tp.get("check_why") or ""


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _exact_ok(r: dict[str, Any]) -> bool:
    return r.get("status") == "pass"


def _summary_rows(groups: dict[str, list[dict[str, Any]]], tp: bool) -> list[list[Any]]:
    rows = []
    for key, recs in groups.items():
        ok = [r for r in recs if _exact_ok(r)]
        red = [r["exact"]["param_reduction"] for r in ok]
        dred = [r["default"]["param_reduction"] for r in recs if "params_after" in r.get("default", {})]
        row = [
            key,
            len(recs),
            f"{len(ok)} ({len(ok) / len(recs):.0%})",
            sum(x >= 0.3 for x in red),
            _median(red),
            _median(dred),
        ]
        if tp:
            tps = [r.get("tp") or {} for r in recs]
            row += [sum(bool(t.get("ran")) for t in tps), sum(t.get("check") == "pass" for t in tps),
                    sum(t.get("check") == "unknown" for t in tps)]  # fmt: skip
        rows.append(row)
    return rows


def write_markdown(records: list[dict[str, Any]], path: Path, *, command: str, meta: dict[str, Any]) -> str:
    """docs/zoo.md from the records: header (command, date, machine, versions, settings),
    summary by source then by family, failures by category, pin reasons, every model.
    Returns the text (also written to ``path`` unless it is None)."""
    tp = any("tp" in r for r in records)
    by_source: dict[str, list] = defaultdict(list)
    by_family: dict[str, list] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
        by_family[f"{r['source']} / {r['family']}"].append(r)
    head = ["set", "models", "pass exact (fewer params)", ">= 30% fewer", "median fewer params (exact)",
            "median fewer params (default)"] + (["TP ran", "TP pass", "TP unknown"] if tp else [])  # fmt: skip
    ratio = meta.get("ratio", records[0].get("ratio") if records else None)
    lines = [
        "# fxprune model zoo",
        "",
        "Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Date: {meta.get('date', '?')}. Machine: {meta.get('machine', '?')}. Versions: {meta.get('versions', '?')}.",
        "",
        f"Ratio {ratio}, random weights (norm affines, biases and BatchNorm statistics randomized), "
        f"tolerance {meta.get('tol', 1e-4)} (max |a - b| / max |b| over every output tensor), "
        f"timeout {meta.get('timeout', '?')} s per step (per run, in the order of the commands). *Exact*: `fxprune.compile(model, {ratio}, exact=True, "
        "verify=True)`; a model passes when masked-equals-pruned holds and it has fewer parameters. "
        "A float32 check that misses the tolerance is repeated in float64 (rounding differences amplified by "
        "a deep random-weight net are not a wrong pruning; a wrong pruning fails in float64 too); a model that "
        "passes only there shows both errors in its row. "
        f"*Default*: `fxprune.compile(model, {ratio}, verify=True)` (approximate groups too; its error column "
        "is how far they move the outputs). *TP*: Torch-Pruning "
        "`BasePruner(GroupMagnitudeImportance(p=2), pruning_ratio, ignored_layers=[final classifier])`, its result "
        "checked the same way (a copy of the original with the removed output slices zeroed vs the "
        "Torch-Pruning model; *unknown*: a group member this check does not interpret). "
        "Inputs are the smallest of a ladder the model runs on (see `benchmarks/zoo.py`).",
        "",
        "The full run (every torchvision classification, detection, segmentation and video model and the timm "
        "sample; resumable, so it can run in pieces): `python benchmarks/zoo.py --vs torch-pruning --resume`.",
        "",
        "timm sample: families are the timm modules models are registered in; within a family names are ordered by "
        "SHA-1 of the name; families are visited in sorted order, one model each per round, until "
        f"{meta.get('timm_sample', {}).get('n', 300)} models. Skipped: names with a token among "
        f"{', '.join(sorted(HUGE_TOKENS))}, and models over {meta.get('timm_sample', {}).get('max_params', 200e6) / 1e6:.0f}M "
        "parameters (counted on the meta device); the skipped ones are listed at the end.",
        "",
        f"{len(records)} models; {sum(_exact_ok(r) for r in records)} pass in exact mode with fewer parameters.",
        "",
        *(["## Notes on the run", "", *[f"- {n}" for n in meta["notes"]], ""] if meta.get("notes") else []),
        "## Summary by set",
        "",
        _table(head, _summary_rows(dict(sorted(by_source.items())), tp)),
        "",
        "## Summary by family",
        "",
        _table(["source / family"] + head[1:], _summary_rows(dict(sorted(by_family.items())), tp)),
        "",
        "## Failures by category (exact mode)",
        "",
    ]
    fails: dict[str, list] = defaultdict(list)
    for r in records:
        if not _exact_ok(r):
            fails[r.get("status", "?")].append(r)
    if fails:
        rows = []
        for cat, recs in sorted(fails.items(), key=lambda kv: -len(kv[1])):
            example = recs[0]
            ex = example.get("exact") or {}
            why = (
                example.get("error_detail")
                or example.get("error")
                or (f"max rel err {_err(ex.get('max_rel_err'))}" if cat == "verify_failed" else "")
                or (
                    f"{ex.get('groups_exact')} of {ex.get('groups')} groups exact (the others approximate: a "
                    "statistic such as LayerNorm, GRN or weight standardization spans them), "
                    f"{ex.get('pinned')} pinned; default mode removes "
                    f"{_pct((example.get('default') or {}).get('param_reduction'))} of the parameters"
                    if cat == "pass_no_reduction"
                    else ""
                )
            )
            rows.append([cat, len(recs), ", ".join(f"{r['source']}:{r['name']}" for r in recs[:8])
                         + (f" +{len(recs) - 8}" if len(recs) > 8 else ""), why[:400]])  # fmt: skip
        lines.append(_table(["category", "models", "which", "first error (first model)"], rows))
    else:
        lines.append("None.")
    if tp:
        tfail: dict[str, list] = defaultdict(list)
        for r in records:
            t = r.get("tp") or {}
            if t and not t.get("ran"):
                tfail[t.get("category", "?")].append(r)
            elif t.get("check") in ("fail", "unknown"):
                tfail[f"check {t['check']}"].append(r)
        lines += ["", "## Torch-Pruning: not run or not passing, by category", ""]
        rows = [[cat, len(recs), ", ".join(r["name"] for r in recs[:8]) + (f" +{len(recs) - 8}" if len(recs) > 8 else ""),
                 _tp_why(recs[0].get("tp") or {})[:300]]
                for cat, recs in sorted(tfail.items(), key=lambda kv: -len(kv[1]))]  # fmt: skip
        lines.append(_table(["category", "models", "which", "first error"], rows) if rows else "None.")
    dets = [r for r in records if r.get("backbone")]
    if dets:
        lines += ["", "## Detection: the backbone alone, where the whole detector cannot be captured", "",
                  "torchvision detectors post-process boxes with data-dependent control flow that neither "
                  "`symbolic_trace` nor `torch.export` captures. `benchmarks/zoo.py` then prunes `model.backbone` "
                  "(body + FPN, exact mode; its feature maps are graph outputs and keep their channels) on the "
                  "batched image the detector's `transform` makes, checks masked-equals-pruned on it, and runs the "
                  "detector end to end with the pruned backbone swapped into a copy.", ""]  # fmt: skip
        rows = []
        for r in sorted(dets, key=lambda r: r["name"]):
            bb = r["backbone"]
            if "status" in bb:
                rows.append([r["name"], bb["input"], bb["status"], _err(bb.get("max_rel_err")),
                             _pct(bb.get("param_reduction")),
                             _pct(1 - bb["detector_params_after"] / bb["detector_params_before"]),
                             "yes" if bb.get("detector_runs") else "no"])  # fmt: skip
            else:
                rows.append([r["name"], "-", bb.get("category"), "-", "-", "-", bb.get("error", "")[:80]])
        lines.append(_table(["model", "backbone input", "status", "exact err", "fewer backbone params",
                             "fewer detector params", "detector runs"], rows))  # fmt: skip
    reasons: Counter = Counter()
    ops: Counter = Counter()
    for r in records:
        ex = r.get("exact") or {}
        for k in dict.fromkeys(reason_kind(k) for k, _ in ex.get("pinned_top", [])):
            reasons[k] += 1
        for op, _ in ex.get("unsupported_ops", []):
            ops[op] += 1
    lines += ["", "## Pin reasons (models where the reason is among the top 3)", ""]
    lines.append(_table(["reason", "models"], reasons.most_common(25)) if reasons else "None.")
    lines += ["", "## Ops without a rule (models)", ""]
    lines.append(_table(["op", "models"], ops.most_common(40)) if ops else "None.")
    skipped = meta.get("timm_skipped") or []
    if skipped:
        lines += ["", f"## timm models skipped by the sample's size rule ({len(skipped)})", "",
                  ", ".join(f"{s['name']} ({s['why']})" for s in skipped)]  # fmt: skip
    lines += ["", "## Every model", ""]
    mhead = ["source", "model", "family", "input", "capture", "status", "groups (exact/all, pruned)", "pinned",
             "no-rule ops", "exact err", "params M", "fewer params", "fewer MACs", "default: fewer params",
             "approx err", "s"] + (["TP ran", "TP fewer params", "TP check"] if tp else []) + ["top pin reason (besides graph input/output) / error"]  # fmt: skip
    rows = []
    for r in sorted(records, key=lambda r: (r["source"], r["family"], r["name"])):
        ex = r.get("exact") or {}
        de = r.get("default") or {}
        top = [(k, n) for k, n in ex.get("pinned_top", []) if k not in ("graph input", "graph output")]
        note = r.get("error") or "; ".join(f"{k} x{n}" for k, n in top[:1])
        bb = r.get("backbone")
        if bb:
            note = (f"backbone alone: {bb['status']}, {_pct(bb.get('param_reduction'))} fewer backbone params, "
                    f"detector {_pct(1 - bb['detector_params_after'] / bb['detector_params_before'])} fewer; "
                    if "status" in bb else f"backbone alone: {bb.get('category')}: {bb.get('error', '')[:60]}; ") + note  # fmt: skip
        row = [
            r["source"], r["name"], r["family"], (r.get("input") or "-") + (f" ({r['input_note']})" if r.get("input_note") else ""),
            ex.get("capture", "-"), r.get("status", "?"),
            f"{ex['groups_exact']}/{ex['groups']}, {ex['groups_pruned']}" if ex else "-",
            ex.get("pinned", "-"), ex.get("unsupported", "-"),
            _err(ex.get("max_rel_err")) + (f" (float64 {_err(ex['max_rel_err_f64'])})" if ex.get("max_rel_err_f64") is not None else ""),
            _m(ex.get("params_before") or r.get("params")),
            _pct(ex.get("param_reduction")), _pct(ex.get("mac_reduction")),
            _pct(de.get("param_reduction")) if "params_after" in de else (de.get("category") or "-"),
            _err(de.get("approx_rel_err")), f"{ex['seconds']:.1f}" if ex else "-",
        ]  # fmt: skip
        if tp:
            row += list(_tp_cell(r.get("tp")))
        row.append(note[:160])
        rows.append(row)
    lines.append(_table(mhead, rows))
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def machine_meta(opts: Options, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = [f"torch {torch.__version__}"]
    for mod in ("torchvision", "timm", "torch_pruning"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            pass
    vers.append(f"fxprune {fxprune.__version__}")
    return {
        "type": "meta",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu}, {os.cpu_count()} cores, torch threads {threads}",
        "versions": ", ".join(vers),
        "ratio": opts.ratio, "tol": opts.tol, "timeout": opts.timeout,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def load_meta(path: Path) -> list[dict[str, Any]]:
    """The run headers (``"type": "meta"`` lines) of a JSONL file, oldest first."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if '"type": "meta"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _merged_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest header, with every run's command (a resumed run is several commands)."""
    if not metas:
        return {}
    meta = dict(metas[-1])
    meta["command"] = "\n".join(dict.fromkeys(m["command"] for m in metas if m.get("command")))
    meta["date"] = " .. ".join(dict.fromkeys((metas[0].get("date"), metas[-1].get("date"))))
    meta["timeout"] = " / ".join(
        f"{t:g}" for t in dict.fromkeys(m.get("timeout") for m in metas) if t is not None
    )
    meta["notes"] = [n for m in metas for n in m.get("notes", [])]
    for m in reversed(metas):
        if m.get("timm_skipped"):
            meta["timm_skipped"] = m["timm_skipped"]
            break
    return meta


def _cached_sample(
    metas: list[dict[str, Any]], n: int, max_params: float
) -> tuple[list[ModelSpec], list] | None:
    """The timm sample a previous run of the same settings and timm version recorded."""
    import timm

    for m in reversed(metas):
        c = m.get("timm_sample")
        if c and c.get("timm") == timm.__version__ and c.get("n") == n and c.get("max_params") == max_params:
            return [ModelSpec(a, "timm", f) for a, f in c["models"]], m.get("timm_skipped", [])
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "models", nargs="*", help="extra models: name or source:name (tv-cls:resnet18, timm:resnet10t)"
    )
    ap.add_argument(
        "--sets", default=",".join(SOURCES), help=f"comma list of {SOURCES}, or 'none' (default: all)"
    )
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=64, help="first (smallest) input size tried")
    ap.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per step (build, exact, default, TP)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is polite on a shared machine)")
    ap.add_argument(
        "--vs", choices=["torch-pruning"], default=None, help="also run Torch-Pruning on each model"
    )
    ap.add_argument("--no-default", action="store_true", help="skip the default-mode (approximate) run")
    ap.add_argument("--timm-n", type=int, default=300)
    ap.add_argument("--timm-max-params", type=float, default=200e6)
    ap.add_argument("--filter", default=None, help="regex on source:name; only matching models run")
    ap.add_argument(
        "--limit", type=int, default=None, help="run at most this many (after --filter, --resume)"
    )
    ap.add_argument(
        "--resume", action="store_true", help="skip models already in --out (else --out starts afresh)"
    )
    ap.add_argument("--redo", default=None, help="with --resume: regex on source:name of models to run again")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.jsonl")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "zoo.md")
    ap.add_argument("--md-only", action="store_true", help="only rewrite --md from --out")
    ap.add_argument("--list", action="store_true", help="print the model list (with families) and exit")
    ap.add_argument("--note", action="append", default=[],
                    help="a remark about this run for docs/zoo.md's 'Notes on the run' (repeatable; with --md-only "
                         "it is appended to --out as a header line of its own)")  # fmt: skip
    args = ap.parse_args(argv)
    opts = Options(ratio=args.ratio, size=args.size, timeout=args.timeout, vs_tp=args.vs == "torch-pruning",
                   default_mode=not args.no_default)  # fmt: skip
    torch.set_num_threads(args.threads)
    command = "python benchmarks/zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    metas = load_meta(args.out)
    if args.md_only:
        recs = list(load_records(args.out).values())
        if args.note:
            append(args.out, {**(metas[-1] if metas else {}), "type": "meta", "command": "", "notes": args.note})
            metas = load_meta(args.out)
        meta = _merged_meta(metas)
        write_markdown(recs, args.md, command=meta.get("command", "?"), meta=meta)
        print(f"wrote {args.md} from {len(recs)} records of {args.out}")
        return
    if opts.vs_tp:
        import torch_pruning  # noqa: F401 - fail now, clearly, if it is missing

    sets = [] if args.sets.strip() in ("", "none") else [s.strip() for s in args.sets.split(",")]
    bad = [s for s in sets if s not in SOURCES]
    if bad:
        ap.error(f"--sets: unknown {bad}; use a comma list of {', '.join(SOURCES)} or 'none'")
    specs: list[ModelSpec] = []
    skipped: list[dict[str, Any]] = []
    sample: list[ModelSpec] = []
    for s in sets:
        if s == "timm":
            cached = _cached_sample(metas, args.timm_n, args.timm_max_params)
            sample, skipped = cached or timm_sample(args.timm_n, args.timm_max_params)
            specs += sample
        else:
            specs += torchvision_specs(s)
    specs += resolve(args.models)
    specs = list({s.key: s for s in specs}.values())
    if args.filter:
        specs = [s for s in specs if re.search(args.filter, s.key)]
    if args.list:
        for s in specs:
            print(f"{s.key}\t{s.family}")
        print(f"{len(specs)} models; {len(skipped)} timm models skipped by the size rule", file=sys.stderr)
        return
    done = load_records(args.out) if args.resume else {}
    if not args.resume and args.out.exists():
        args.out.unlink()  # a fresh run
        metas = []
    todo = [s for s in specs if s.key not in done or (args.redo and re.search(args.redo, s.key))]
    if args.limit is not None:
        todo = todo[: args.limit]
    meta = machine_meta(opts, args.threads)
    meta.update(command=command, timm_skipped=skipped, notes=args.note)
    if sample:
        import timm

        meta["timm_sample"] = {"timm": timm.__version__, "n": args.timm_n, "max_params": args.timm_max_params,
                               "models": [[s.name, s.family] for s in sample]}  # fmt: skip
    append(args.out, meta)
    from tqdm import tqdm

    bar = tqdm(todo, desc="zoo", unit="model", dynamic_ncols=True)
    for spec in bar:
        bar.set_postfix_str(spec.key)
        append(
            args.out, {"name": spec.name, "source": spec.source, "family": spec.family, "status": "running"}
        )
        rec = run_model(spec, opts)
        append(args.out, rec)
        tqdm.write(f"{spec.key}: {rec.get('status')} {_pct((rec.get('exact') or {}).get('param_reduction'))} "
                   f"{rec.get('error', '')[:120]}")  # fmt: skip
    recs = list(load_records(args.out).values())
    meta = _merged_meta(load_meta(args.out))
    write_markdown(recs, args.md, command=meta["command"], meta=meta)
    print(f"wrote {args.out} ({len(recs)} models) and {args.md}")


if __name__ == "__main__":
    main()
