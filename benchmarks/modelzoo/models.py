"""The model lists: every torchvision model of a task, the deterministic timm sample, the
torchvision CNN families of ``tests/test_zoo.py``, and command-line names resolved to specs."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import torch

SOURCES = ("tv-cls", "tv-det", "tv-seg", "tv-video", "timm")
HUGE_TOKENS = frozenset("giant giantopt gigantic huge enormous xlarge xxlarge so400m 1b 2b 3b 6b 7b".split())


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


# The torchvision CNN families of the core issue (vgg with batch norm only): what
# tests/test_zoo.py proves with ``pytest -m zoo`` and benchmarks/cnn_zoo.py prints as a table.
CNN_FAMILIES = (
    "alexnet", "vgg", "resnet", "resnext", "wide_resnet", "densenet", "googlenet", "inception_v3",
    "mobilenet_v2", "mobilenet_v3", "mnasnet", "shufflenet_v2", "squeezenet", "efficientnet",
    "regnet_x", "regnet_y", "convnext",
)  # fmt: skip


def torchvision_cnns() -> list[str]:
    """Every torchvision classification model of ``CNN_FAMILIES``, sorted (vgg with batch norm).

    Example:
        >>> len(torchvision_cnns()), torchvision_cnns()[0]
        (64, 'alexnet')
    """
    import torchvision

    return sorted(
        n
        for n in torchvision.models.list_models(module=torchvision.models)
        if n.startswith(CNN_FAMILIES) and (not n.startswith("vgg") or n.endswith("_bn"))
    )

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
