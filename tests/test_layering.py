"""Layers point one way: no import cycle among fxprune's modules (imports inside functions
count too), and passes/ (installed as fxprune.passes) imports nothing from fxprune."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("fxprune", "fxprune"), ("passes", "fxprune.passes"))


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES:
        for f in sorted((ROOT / folder).glob("*.py")):
            out[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ``known`` that ``name`` imports, at any depth of its code."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def test_passes_import_nothing_from_fxprune():
    bad = sorted((m, t) for m, ts in _graph().items() if m.startswith("fxprune.passes") for t in ts
                 if not t.startswith("fxprune.passes"))  # fmt: skip
    assert not bad, f"passes/ reaches up into fxprune: {bad}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                cycle = visit(w)
                if cycle:
                    return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            cycle = visit(v)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_sees_the_modules():
    graph = _graph()
    assert "fxprune.passes.rules" in graph["fxprune.passes.dependency"]  # a module-level import
    assert "fxprune.passes.blocks" in graph["fxprune.passes.rewrite"]  # an import inside a function


def test_importing_fxprune_leaves_torch_flop_registry_alone():
    """The op records' FLOP formulas reach torch's global flop registry on the first MAC count,
    not at ``import fxprune`` (a library import must not change torch for everyone)."""
    import subprocess
    import sys

    code = (
        "from torch.utils.flop_counter import flop_registry\n"
        "before = set(flop_registry)\n"
        "import torch, fxprune, fxprune.passes.ops\n"
        "assert set(flop_registry) == before, set(flop_registry) - before\n"
        "fxprune.count_macs(torch.nn.LSTM(4, 8), (torch.randn(3, 2, 4),))\n"
        "assert torch.ops.aten.mkldnn_rnn_layer in flop_registry\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
