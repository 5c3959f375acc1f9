"""Save and load pruned models without pickled code, and export them with ``torch.export``.

A saved model is a directory of three plain files:

* ``plan.json``: the ``Plan`` (``Plan.to_json``): which indices of each group were kept.
* ``weights.safetensors``: the pruned ``state_dict`` (safetensors: tensors only, no code).
* ``manifest.json``: how to rebuild the architecture (the model spec such as
  ``torchvision:resnet18`` when known, the example input shapes and dtypes to re-capture
  with), every state_dict key with its shape and dtype, the modules in train mode, the
  fxprune and torch versions, and sha256 checksums of the two other files.

``load`` rebuilds the pruned module from a freshly built original architecture (random weights
are fine): capture and analyze it, apply the saved plan with ``fxprune.rewrite``, check every
shape against the manifest, then copy the saved weights in. Nothing is unpickled, and a
``file.py:factory`` spec recorded in a manifest is run only with ``trust_code=True``, so
loading a directory runs no code from it; the result equals the saved module bit for bit.

Example:
    >>> small = fxprune.compile(torchvision.models.resnet18(), 0.5, example_inputs=x)
    >>> fxprune.save(small, "r18-half", example_inputs=x, spec="torchvision:resnet18")
    >>> again = fxprune.load("r18-half")               # rebuilds resnet18 from the spec
    >>> torch.equal(again.eval()(x), small.eval()(x))
    True
    >>> fxprune.export(small, "r18-half.pt2", x)       # torch.export.load("r18-half.pt2")
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from .capture import as_inputs
from .errors import FxpruneError, PlanError
from .passes.keys import INPUTS, PLAN, REPORT
from .plan import Plan

__all__ = ["save", "load", "export", "build_model", "read_manifest", "SaveFormatError", "FORMAT_VERSION"]

FORMAT_VERSION = 1
PLAN_FILE, WEIGHTS_FILE, MANIFEST_FILE = "plan.json", "weights.safetensors", "manifest.json"


class SaveFormatError(FxpruneError):
    """A saved directory is incomplete, corrupted, or does not match the model it is loaded into."""


# ------------------------------------------------------------------------------------------
# model specs
# ------------------------------------------------------------------------------------------
def build_model(spec: str) -> nn.Module:
    """``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory`` -> a model with
    random weights (nothing is downloaded). A bare ``NAME`` means ``torchvision:NAME``.

    Raises:
        ValueError: the source is unknown, the name does not exist (close matches are
            suggested), the file is missing, or the factory is not in it.

    Example:
        >>> type(build_model("torchvision:resnet18")).__name__
        'ResNet'
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string such as 'torchvision:resnet18', got {spec!r}")
    source, name = _split_spec(spec)
    if source == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if name not in names:
            raise ValueError(f"torchvision has no model {name!r}{_close(name, names)}")
        return torchvision.models.get_model(name, weights=None)
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r}{_close(name, timm.list_models())}")
        return timm.create_model(name, pretrained=False)
    if source.endswith(".py"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"model file {str(path)!r} not found (spec {spec!r}; use path/to/file.py:factory)")
        mod_spec = importlib.util.spec_from_file_location(f"fxprune_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
        mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        factory = getattr(module, name, None)
        if not callable(factory):
            found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
            raise ValueError(f"{path} has no callable {name!r}{_close(name, found)}")
        model = factory()
        if not isinstance(model, nn.Module):
            raise ValueError(f"{path}:{name}() returned {type(model).__name__}, not a torch.nn.Module")
        return model
    raise ValueError(f"unknown model source {source!r} in {spec!r}; use torchvision:NAME, timm:NAME or file.py:factory")


def _split_spec(spec: str) -> tuple[str, str]:
    if ".py:" in spec:  # a file path may itself contain ':'
        source, _, name = spec.rpartition(":")
        return source, name
    source, sep, name = spec.partition(":")
    return (source, name) if sep else ("torchvision", spec)


def _close(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=3)
    return f"; did you mean {', '.join(near)}?" if near else ""


# ------------------------------------------------------------------------------------------
# save
# ------------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SaveFormatError(f"manifest names an unknown dtype {name!r}")
    return dtype


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _input_specs(inputs: tuple) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(inputs):
        if isinstance(a, torch.Tensor):
            out.append({"shape": list(a.shape), "dtype": _dtype_name(a.dtype)})
        elif a is None or isinstance(a, (bool, int, float, str)):
            out.append({"value": a})
        else:
            raise TypeError(
                f"fxprune.save: example input {i} is a {type(a).__name__}; the manifest can record tensors and "
                "plain python scalars only (pass such inputs again to fxprune.load(..., example_inputs=...))"
            )
    return out


def save(
    pruned: fx.GraphModule,
    path: str | os.PathLike,
    example_inputs: Any = None,
    *,
    spec: str | None = None,
    plan: Plan | None = None,
) -> Path:
    """Write ``pruned`` to the directory ``path`` as plan.json, weights.safetensors and
    manifest.json (created; files already there are overwritten). No code is pickled.

    Args:
        pruned: a module returned by ``fxprune.compile`` (its plan is read from the report),
            or by ``fxprune.rewrite``/``fxprune.load`` with ``plan=`` given.
        example_inputs: the inputs it was pruned with (a tensor or a tuple). Their shapes and
            dtypes go into the manifest so ``load`` can re-capture without being told. Defaults
            to the shapes ``fxprune.compile`` recorded on ``pruned``; without either, ``load``
            needs ``example_inputs=``.
        spec: how to build the original architecture, ``torchvision:NAME``, ``timm:NAME`` or
            ``file.py:factory``; lets ``fxprune.load(path)`` run without a model.
        plan: the plan, when ``pruned`` carries no report.

    Returns the directory.

    Example:
        >>> fxprune.save(small, "out/r18", example_inputs=x, spec="torchvision:resnet18")
        PosixPath('out/r18')
    """
    from safetensors.torch import save_file

    from .version import __version__

    if not isinstance(pruned, nn.Module):
        raise TypeError(f"fxprune.save expects the pruned torch.nn.Module, got {type(pruned).__name__}")
    if plan is None:
        report = getattr(pruned, "meta", {}).get(REPORT)
        plan = getattr(report, "plan", None) or getattr(pruned, "meta", {}).get(PLAN)
    if not isinstance(plan, Plan):
        raise ValueError(
            "fxprune.save: this module carries no plan (it was not returned by fxprune.compile); pass plan=..."
        )
    if spec is not None and (not isinstance(spec, str) or _split_spec(spec)[0] not in ("torchvision", "timm")
                             and not _split_spec(spec)[0].endswith(".py")):  # fmt: skip
        raise ValueError(f"fxprune.save: spec {spec!r} is not torchvision:NAME, timm:NAME or file.py:factory")
    if example_inputs is None:  # fxprune.compile records their shapes and dtypes
        example_inputs = getattr(pruned, "meta", {}).get(INPUTS)
    inputs = None if example_inputs is None else _input_specs(as_inputs(example_inputs))
    state = pruned.state_dict()
    # safetensors refuses tensors that share memory (tied weights): store one contiguous copy
    # per key; load copies each back into the rebuilt module, where tied tensors stay tied
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN_FILE).write_text(plan.to_json())
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "fxprune", "format_version": str(FORMAT_VERSION)})
    report = getattr(pruned, "meta", {}).get(REPORT)
    manifest = {
        "format": "fxprune",
        "format_version": FORMAT_VERSION,
        "fxprune_version": __version__,
        "torch_version": torch.__version__,
        "model": spec,
        "model_class": getattr(report, "model", None) or type(pruned).__name__,
        "capture": getattr(report, "capture", None),
        "inputs": inputs,
        "state_dict": {k: {"shape": list(v.shape), "dtype": _dtype_name(v.dtype)} for k, v in state.items()},
        "training": pruned.training,  # and the modules whose mode differs from the root's
        "modes_differ": [name for name, m in pruned.named_modules() if m.training != pruned.training],
        "sha256": {PLAN_FILE: _sha256(out / PLAN_FILE), WEIGHTS_FILE: _sha256(out / WEIGHTS_FILE)},
    }
    (out / MANIFEST_FILE).write_text(_dump(manifest))
    return out


def _dump(manifest: dict[str, Any]) -> str:
    """JSON with one line per state_dict key, so the manifest reads well in a diff."""
    top = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items() if k != "state_dict"]
    keys = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest["state_dict"].items()]
    return "{\n" + ",\n".join(top) + ',\n "state_dict": {\n' + ",\n".join(keys) + "\n }\n}\n"


# ------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a saved directory, after checking that every file is there and that
    the checksums match (``SaveFormatError`` naming the file otherwise)."""
    root = Path(path)
    if not root.is_dir():
        raise SaveFormatError(f"fxprune.load: {str(root)!r} is not a directory written by fxprune.save")
    for name in (MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE):
        if not (root / name).is_file():
            raise SaveFormatError(f"fxprune.load: {root / name} is missing; the directory is incomplete")
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SaveFormatError(f"fxprune.load: {root / MANIFEST_FILE} is not valid JSON ({e}); the file is corrupted") from e
    if not isinstance(manifest, dict) or manifest.get("format") != "fxprune":
        raise SaveFormatError(f"fxprune.load: {root / MANIFEST_FILE} is not an fxprune manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise SaveFormatError(
            f"fxprune.load: {root} was written in format {manifest['format_version']} by fxprune "
            f"{manifest.get('fxprune_version')}; this fxprune reads format {FORMAT_VERSION} and older: upgrade fxprune"
        )
    sums = manifest.get("sha256")
    if not isinstance(sums, dict) or any(not isinstance(sums.get(n), str) for n in (PLAN_FILE, WEIGHTS_FILE)):
        raise SaveFormatError(
            f"fxprune.load: {root / MANIFEST_FILE} lacks the sha256 of {PLAN_FILE} and {WEIGHTS_FILE}; "
            "the directory was not written by fxprune.save or was edited"
        )
    for name, want in sums.items():
        got = _sha256(root / name)
        if got != want:
            raise SaveFormatError(
                f"fxprune.load: {root / name} does not match its checksum in manifest.json "
                f"(sha256 {got[:12]}..., expected {want[:12]}...): the file is corrupted or was changed after saving"
            )
    return manifest


def _example_inputs(manifest: dict, given: Any) -> tuple:
    if given is not None:
        return as_inputs(given)
    specs = manifest.get("inputs")
    if specs is None:
        raise ValueError(
            "fxprune.load: the manifest records no example inputs (fxprune.save was called without "
            "example_inputs); pass example_inputs=... with the shapes the model was pruned with"
        )
    # values do not matter to the analysis, only shapes and dtypes
    return tuple(torch.zeros(s["shape"], dtype=_dtype(s["dtype"])) if "shape" in s else s["value"] for s in specs)


def load(
    path: str | os.PathLike, model: nn.Module | None = None, *, example_inputs: Any = None, trust_code: bool = False
) -> fx.GraphModule:
    """Rebuild a model saved by ``fxprune.save``: ``model`` (a freshly built original
    architecture; its weights do not matter and it is not modified) is captured and analyzed,
    the saved plan is applied with ``fxprune.rewrite``, every state_dict shape is checked
    against the manifest, and the saved weights are copied in. Module train/eval modes are
    restored as saved. Without ``model``, it is built from the manifest's spec
    (``torchvision:`` or ``timm:``; a ``file.py:factory`` spec runs that file, so it needs
    ``trust_code=True``). The model is captured the way the pruned one was (the manifest
    records ``symbolic_trace`` or ``torch.export``), so the plan's groups match.

    Nothing is unpickled. The returned module carries the plan in ``meta["fxprune.plan"]``.

    Raises:
        SaveFormatError: a file is missing or corrupted (checksum), or the rebuilt model's
            state_dict does not match the saved one (the message names the key).
        PlanError: the plan does not fit ``model``'s analysis (another architecture).

    Example:
        >>> again = fxprune.load("out/r18", torchvision.models.resnet18())
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .api import analyze
    from .passes.rewrite import rewrite

    root = Path(path)
    manifest = read_manifest(root)
    if model is None:
        spec = manifest.get("model")
        if not spec:
            raise ValueError(
                f"fxprune.load: {root} records no model spec (save was called without spec=); pass the "
                f"freshly built original architecture ({manifest.get('model_class')}) as model="
            )
        if not trust_code and not spec.startswith(("torchvision:", "timm:")):
            raise ValueError(
                f"fxprune.load: {root} asks to build its model by running {spec!r}; pass model= (the "
                "original architecture), or trust_code=True if you trust that file"
            )
        model = build_model(spec)
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxprune.load expects a torch.nn.Module as model, got {type(model).__name__}")
    try:
        plan = Plan.from_json((root / PLAN_FILE).read_text())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SaveFormatError(f"fxprune.load: {root / PLAN_FILE} is not a valid plan ({type(e).__name__}: {e})") from e
    saved = manifest["state_dict"]
    fresh = model.state_dict().keys()
    missing = [k for k in saved if k not in fresh]
    # removed blocks (depth pruning) delete their tensors, so only then may the model have more
    extra = [] if getattr(plan, "removed_blocks", ()) else [k for k in fresh if k not in saved]
    if missing or extra:
        raise SaveFormatError(
            f"fxprune.load: the {type(model).__name__} given is not the architecture saved in {root} "
            f"({manifest.get('model') or manifest.get('model_class')}): "
            + (f"it lacks {len(missing)} saved tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})" if missing else "")
            + ("; " if missing and extra else "")
            + (f"it has {len(extra)} tensors that were not saved ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})" if extra else "")
        )
    inputs = _example_inputs(manifest, example_inputs)
    method = {"symbolic_trace": "fx", "torch.export": "export"}.get(manifest.get("capture") or "", "auto")
    gm = analyze(model, inputs, capture=method)
    try:
        out = rewrite(gm, plan)
    except PlanError as e:
        raise PlanError(
            f"fxprune.load: the plan in {root} was made for {manifest.get('model') or manifest.get('model_class')}, "
            f"and does not fit the {type(model).__name__} given: {e}"
        ) from e
    state = out.state_dict()
    missing = [k for k in saved if k not in state]
    extra = [k for k in state if k not in saved]
    if missing or extra:
        raise SaveFormatError(
            f"fxprune.load: the rebuilt {type(model).__name__} has a different state_dict from the saved one: "
            f"{len(missing)} saved keys it lacks {missing[:3]}, {len(extra)} keys not saved {extra[:3]}; "
            "build the same architecture (and version) the model was pruned from"
        )
    for k, t in state.items():
        want = saved[k]
        if list(t.shape) != want["shape"] or _dtype_name(t.dtype) != want["dtype"]:
            raise SaveFormatError(
                f"fxprune.load: {k} is {list(t.shape)} {_dtype_name(t.dtype)} after applying the plan, but "
                f"the manifest saved {want['shape']} {want['dtype']}; the architecture given differs from the "
                "one that was pruned" + (" (or convert it to the saved dtype first)" if list(t.shape) == want["shape"] else "")
            )
    try:
        weights = load_file(str(root / WEIGHTS_FILE))
    except SafetensorError as e:
        raise SaveFormatError(f"fxprune.load: {root / WEIGHTS_FILE} could not be read: {e}") from e
    for k, want in saved.items():
        t = weights.get(k)
        if t is None or list(t.shape) != want["shape"] or _dtype_name(t.dtype) != want["dtype"]:
            got = "missing" if t is None else f"{list(t.shape)} {_dtype_name(t.dtype)}"
            raise SaveFormatError(
                f"fxprune.load: {k} in {WEIGHTS_FILE} is {got}, the manifest says {want['shape']} {want['dtype']}"
            )
    out.load_state_dict(weights, strict=True)
    root_mode, differ = bool(manifest.get("training", False)), set(manifest.get("modes_differ", ()))
    for name, m in out.named_modules():
        m.training = root_mode != (name in differ)
    out.meta[PLAN] = plan
    return out


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def export(pruned: nn.Module, path: str | os.PathLike, example_inputs: Any) -> Path:
    """Export ``pruned`` (in eval mode, on a copy: the module is not modified) with
    ``torch.export.export`` and write it with ``torch.export.save`` to ``path`` (a ``.pt2``
    file). Load it with ``torch.export.load(path).module()``; no fxprune needed there.

    Example:
        >>> fxprune.export(small, "r18-half.pt2", torch.randn(1, 3, 224, 224))
        >>> torch.export.load("r18-half.pt2").module()(x).shape
        torch.Size([1, 1000])
    """
    if not isinstance(pruned, nn.Module):
        raise TypeError(f"fxprune.export expects a torch.nn.Module, got {type(pruned).__name__}")
    out = Path(path)
    if out.suffix != ".pt2":
        raise ValueError(f"fxprune.export: {str(out)!r} should end in .pt2 (the torch.export archive format)")
    m = copy.deepcopy(pruned).eval()
    try:
        program = torch.export.export(m, as_inputs(example_inputs))
    except Exception as e:  # noqa: BLE001 - the user sees why torch.export refused
        raise FxpruneError(
            f"fxprune.export: torch.export could not export {type(pruned).__name__}: {type(e).__name__}: {e}"
        ) from e
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out))
    return out
