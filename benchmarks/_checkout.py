"""fxprune from this checkout where it is not installed (the lent GPU machine has nothing of it
installed). setup.cfg installs the top-level folder ``passes/`` as ``fxprune.passes``; without
the install, the package is loaded with that folder mapped the same way."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["import_fxprune_from_checkout"]

ROOT = Path(__file__).resolve().parents[1]


def import_fxprune_from_checkout() -> None:
    """Import ``fxprune`` as installed, or else from this checkout with ``passes/`` mapped."""
    try:
        import fxprune  # noqa: F401 - installed (pip install -e .): nothing to do
        return
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("fxprune"):
            raise
    for k in [k for k in sys.modules if k == "fxprune" or k.startswith("fxprune.")]:
        del sys.modules[k]  # the half-done import above

    def load(name: str, folder: Path) -> tuple[Any, Any]:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = mod
        return spec, mod

    spec, pkg = load("fxprune", ROOT / "fxprune")
    pspec, passes = load("fxprune.passes", ROOT / "passes")
    pkg.passes = passes
    pspec.loader.exec_module(passes)
    spec.loader.exec_module(pkg)
    print(f"fxprune is not installed: imported from {ROOT} (passes/ as fxprune.passes)", flush=True)
