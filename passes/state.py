"""Keep every tensor and submodule of a model in a GraphModule built from it.

``fx.GraphModule(root, graph)`` copies only what the graph reads (``call_module`` and
``get_attr`` targets). A parameter the forward never reads, a buffer such as a traced-through
batch norm's ``num_batches_tracked``, or an auxiliary head that only runs in training mode
(torchvision's GoogLeNet and Inception-v3) would vanish, and with them the state_dict keys a
user's checkpoint code relies on. ``carry_unreferenced`` puts them back under their own names.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx, nn

__all__ = ["carry_unreferenced", "keep_state_keys"]


def carry_unreferenced(src: nn.Module, dst: nn.Module) -> list[str]:
    """Attach to ``dst`` every submodule, parameter and buffer of ``src`` that ``dst`` lacks
    at the same name (the objects themselves, not copies: pass a copy as ``src``). A whole
    missing submodule is attached as it is; a missing tensor of a module that ``dst`` has
    (perhaps as fx's bare placeholder ``nn.Module``) is registered on it, persistent or not
    as in ``src``. Returns the names it attached, for the report."""
    have = dict(dst.named_modules(remove_duplicate=False))
    added: list[str] = []
    for name, m in src.named_modules(remove_duplicate=False):
        if name in have:
            target = have[name]
            if target is m:
                continue
            for pname, p in m._parameters.items():
                if pname not in target._parameters and not hasattr(target, pname):
                    target.register_parameter(pname, p)
                    added.append(f"{name}.{pname}" if name else pname)
            for bname, b in m._buffers.items():
                if bname not in target._buffers and not hasattr(target, bname):
                    target.register_buffer(bname, b, persistent=bname not in m._non_persistent_buffers_set)
                    added.append(f"{name}.{bname}" if name else bname)
            continue
        parent, _, attr = name.rpartition(".")
        owner = have.get(parent)
        if owner is None or hasattr(owner, attr):
            continue  # under a module that was itself attached whole (or a name fx took)
        owner.add_module(attr, m)
        added.append(name)
        for sub, sm in m.named_modules(prefix=name, remove_duplicate=False):
            have[sub] = sm
    return added


def keep_state_keys(dst: nn.Module, keys: Iterable[str]) -> list[str]:
    """Make every buffer of ``dst`` whose name is not in ``keys`` (the model's state_dict keys)
    non-persistent: the tensors a capture adds (fx's ``_tensor_constant*``, torch.export's
    lifted constants and tensor attributes such as a ``stride``) stay usable but out of
    ``state_dict``, so the pruned module saves and loads with the model's own keys. Returns the
    names it changed."""
    keys = set(keys)
    changed: list[str] = []
    if isinstance(dst, fx.GraphModule):
        # a plain tensor attribute the graph reads (torch.export's lifted constants) becomes a
        # non-persistent buffer: a GraphModule built from this one would register it as a
        # persistent one, and ``.to(device)`` moves buffers, not plain attributes
        for node in dst.graph.nodes:
            if node.op != "get_attr":
                continue
            owner, _, name = node.target.rpartition(".")
            mod = dst.get_submodule(owner) if owner else dst
            t = mod.__dict__.get(name)
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
                delattr(mod, name)
                mod.register_buffer(name, t, persistent=False)
    for fqn, _ in dst.named_buffers(remove_duplicate=False):
        if fqn in keys:
            continue
        owner, _, name = fqn.rpartition(".")
        mod = dst.get_submodule(owner) if owner else dst
        if name not in mod._non_persistent_buffers_set:
            mod._non_persistent_buffers_set.add(name)
            changed.append(fqn)
    return changed
