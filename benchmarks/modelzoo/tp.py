"""Torch-Pruning's side of one model, checked like fxprune's (masked original vs its pruned model)."""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import torch
from torch import nn

import fxprune
from fxprune.verify import relative_error

from .build import Options
from .limits import StepTimeout, detail, first_line, is_oom
from .records import finite


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
            rec["max_rel_err"] = finite(err)
            rec["check"] = "pass" if err <= opts.tol else "fail"
        rec.pop("stage")
    except StepTimeout as e:
        rec["error"] = first_line(e)
        rec["category"] = "timeout"
    except Exception as e:  # noqa: BLE001 - Torch-Pruning failing is a finding, not the end of the run
        rec["error"] = first_line(e)
        rec["error_detail"] = detail(e)
        rec["category"] = "oom" if is_oom(e) else rec.get("stage", "?")
    rec["seconds"] = round(time.perf_counter() - t, 3)
    return rec


def _plain(idxs: Any) -> list[int]:
    return [i.idx if hasattr(i, "idx") else i for i in idxs]
