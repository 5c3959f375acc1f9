"""The ``fxprune`` command. With no arguments: prune a torchvision ResNet-50 by half and print
parameters, MACs and CPU latency before and after, and the masked-equals-pruned result."""

from __future__ import annotations

import argparse
import importlib
import sys

import torch
from tabulate import tabulate
from torch import nn

__all__ = ["main", "build_model"]


def build_model(spec: str) -> nn.Module:
    """``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory`` -> a model with
    random weights (nothing is downloaded)."""
    source, _, name = spec.partition(":")
    if not name:
        source, name = "torchvision", spec
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    if source.endswith(".py"):
        loader = importlib.machinery.SourceFileLoader("fxprune_user_model", source)
        module = loader.load_module()  # deprecated API, still the shortest way on 3.10
        return getattr(module, name)()
    raise SystemExit(f"fxprune: unknown model source {source!r}; use torchvision:NAME, timm:NAME or file.py:factory")


def _prune(args: argparse.Namespace) -> int:
    import fxprune
    from fxprune.report import count_macs, count_params, latency_ms

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"building {args.model} (random weights) ...", flush=True)
    model = build_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    how = f"to {args.speedup}x fewer MACs" if args.speedup else f"ratio {args.ratio}"
    print(f"pruning {how}{' (exact groups only)' if args.exact else ''} ...", flush=True)
    pruned = fxprune.compile(
        model, None if args.speedup else args.ratio, example_inputs=x, exact=args.exact, round_to=args.round_to,
        speedup=args.speedup, global_ranking=args.global_ranking,
    )  # fmt: skip
    report = pruned.meta["fxprune.report"]
    print("verifying (masked original vs pruned) ...", flush=True)
    result = fxprune.verify(model, pruned, x)
    lat0, lat1 = latency_ms(model, (x,)), latency_ms(pruned, (x,))
    p0, p1 = count_params(model), count_params(pruned)
    m0, m1 = count_macs(model, (x,)), count_macs(pruned, (x,))
    rows = [
        ["parameters (M)", f"{p0 / 1e6:.2f}", f"{p1 / 1e6:.2f}", f"{p0 / p1:.2f}x"],
        ["MACs (G)", f"{m0 / 1e9:.3f}", f"{m1 / 1e9:.3f}", f"{m0 / m1:.2f}x"],
        [f"CPU latency (ms, batch {args.batch}, {args.threads} threads)", f"{lat0:.1f}", f"{lat1:.1f}", f"{lat0 / lat1:.2f}x"],
    ]
    print()
    print(f"{args.model} at {args.size}x{args.size}, {how}")
    print(tabulate(rows, headers=["", "before", "after", "reduction"]))
    groups = report.plan.groups
    print(f"{len(groups)} prunable groups ({sum(g.exact for g in groups)} exact); "
          f"analysis {report.seconds.get('analyze', 0):.2f}s, rewrite {report.seconds.get('rewrite', 0):.2f}s")  # fmt: skip
    for u in report.unsupported:
        print(u.message())
    print(result)
    if args.details:
        print(report.details())
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prune"]:  # `fxprune prune MODEL ...` and `fxprune MODEL ...` are the same
        argv = argv[1:]
    q = argparse.ArgumentParser(prog="fxprune", description=__doc__)
    q.add_argument("model", nargs="?", default="torchvision:resnet50", help="torchvision:NAME, timm:NAME or file.py:factory")
    q.add_argument("--ratio", type=float, default=0.5, help="fraction of each group removed, in [0, 1)")
    q.add_argument("--speedup", type=float, default=None, help="target base/pruned MACs instead of a ratio")
    q.add_argument("--global-ranking", action="store_true", help="rank channels across groups")
    q.add_argument("--exact", action="store_true", help="prune exact groups only")
    q.add_argument("--round-to", type=int, default=1)
    q.add_argument("--size", type=int, default=224, help="input resolution")
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--threads", type=int, default=torch.get_num_threads())
    q.add_argument("--details", action="store_true", help="print every group and pinned class")
    args = q.parse_args(argv)
    try:
        return _prune(args)
    except (ValueError, TypeError) as e:
        print(f"fxprune: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI reports, the library raises
        from fxprune.errors import FxpruneError

        if isinstance(e, FxpruneError):
            print(f"fxprune: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


