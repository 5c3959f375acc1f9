"""One model's construction: random weights (``fxprune.testing.randomize_``), eval mode, and the
smallest input of its ladder that it runs on."""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from fxprune.testing import randomize_

from .limits import StepTimeout, first_line
from .models import SOURCES, ModelSpec


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
