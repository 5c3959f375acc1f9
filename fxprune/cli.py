"""The ``fxprune`` command.

    fxprune                                   prune torchvision:resnet50 by half (a demo)
    fxprune prune MODEL --ratio R | --speedup S | --params P [--exact] [--out DIR]
    fxprune report MODEL                      prunable groups, pinned channels and why
    fxprune bench MODEL|DIR [--ratio R | --speedup S]   params, MACs, latency before and after

MODEL is ``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory`` (random weights,
nothing is downloaded); DIR is a directory written by ``fxprune prune --out`` or
``fxprune.save``. ``fxprune MODEL ...`` is ``fxprune prune MODEL ...``.

Exit codes: 0 done; 1 the masked-equals-pruned check failed; 2 bad input (arguments, model
spec, a model that cannot be captured, a saved directory that does not load), with a one-line
reason on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from tabulate import tabulate
from torch import nn

from .capture import as_inputs
from .io import build_model

__all__ = ["main", "build_model"]

COMMANDS = ("prune", "report", "bench")


class _Stages:
    """One tqdm bar over the named stages of a command (on stderr; off when not a terminal)."""

    def __init__(self, names: list[str], enabled: bool | None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(names), disable=None if enabled else True, file=sys.stderr,
                        bar_format="{desc:<44}{bar:20} {n_fmt}/{total_fmt} [{elapsed}]")  # fmt: skip

    @contextlib.contextmanager
    def stage(self, desc: str) -> Iterator[None]:
        self.bar.set_description_str(desc)
        yield
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _spec(model: str) -> str:
    """The spec as the manifest records it: a bare NAME is torchvision's; a file is absolute."""
    if ".py:" in model:
        path, _, factory = model.rpartition(":")
        return f"{Path(path).expanduser().resolve()}:{factory}"
    return model if ":" in model else f"torchvision:{model}"


def _shape(text: str, flag: str) -> list[int]:
    try:
        shape = [int(s) for s in text.replace("x", ",").split(",") if s]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated ints such as 1,3,224,224, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{flag} must be positive ints such as 1,3,224,224, got {text!r}")
    return shape


def _inputs(args: argparse.Namespace) -> torch.Tensor | dict[str, torch.Tensor]:
    """One random input tensor (--shape, or batch x 3 x size x size), or, with --input
    NAME=SHAPE given, a dict of keyword inputs for the model's forward."""
    named = getattr(args, "input", None)
    if named:
        if args.shape:
            raise ValueError("give --shape or --input NAME=SHAPE, not both")
        out: dict[str, torch.Tensor] = {}
        for item in named:
            name, eq, text = item.partition("=")
            if not eq or not name.isidentifier():
                raise ValueError(f"--input must look like NAME=SHAPE such as image=1,3,224,224, got {item!r}")
            if name in out:
                raise ValueError(f"--input {name} is given twice")
            out[name] = torch.randn(*_shape(text, f"--input {name}"))
        return out
    if args.shape:
        return torch.randn(*_shape(args.shape, "--shape"))
    return torch.randn(args.batch, 3, args.size, args.size)


def _shape_text(x: torch.Tensor | dict[str, torch.Tensor]) -> str:
    if isinstance(x, dict):
        return ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in x.items())
    return "x".join(map(str, x.shape))


def _target(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    given = [(k, getattr(args, k)) for k in ("ratio", "speedup", "params") if getattr(args, k) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --ratio, --speedup or --params, not {' and '.join('--' + k for k, _ in given)}")
    kind, value = given[0] if given else ("ratio", 0.5)
    if kind == "ratio":
        from .plan import _check_ratio

        _check_ratio(value)  # before building anything, so bad input costs nothing
    elif value < 1:
        raise ValueError(f"--{kind} must be >= 1 (base / pruned), got {value}")
    how = f"ratio {value}" if kind == "ratio" else f"to {value}x fewer {'MACs' if kind == 'speedup' else 'parameters'}"
    return {kind: value}, how


def _rows(model: nn.Module, pruned: nn.Module, x: Any, args: argparse.Namespace, stages: _Stages) -> list:
    from .measure import count_macs, count_params, latency_ms

    inputs = as_inputs(x, model)
    with stages.stage("counting MACs"):
        p0, p1 = count_params(model), count_params(pruned)
        m0, m1 = count_macs(model, inputs), count_macs(pruned, inputs)
    with stages.stage(f"timing ({args.iters} runs each)"):
        lat0 = latency_ms(model, inputs, iters=args.iters)
        lat1 = latency_ms(pruned, inputs, iters=args.iters)
    threads = torch.get_num_threads()
    return [
        ["parameters (M)", f"{p0 / 1e6:.2f}", f"{p1 / 1e6:.2f}", f"{p0 / p1:.2f}x"],
        ["MACs (G)", f"{m0 / 1e9:.3f}", f"{m1 / 1e9:.3f}", f"{m0 / m1:.2f}x"],
        [f"CPU latency (ms, batch {inputs[0].shape[0]}, {threads} threads)", f"{lat0:.1f}", f"{lat1:.1f}", f"{lat0 / lat1:.2f}x"],
    ]


def _prune(args: argparse.Namespace, bench_only: bool = False) -> int:
    import fxprune

    target, how = _target(args)
    _inputs(args)  # a bad --shape fails before anything is built
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")
    names = ["build", "prune", "count", "time"] + ([] if bench_only else ["verify"]) + (["save"] if args.out else [])
    stages = _Stages(names, args.progress)
    try:
        with stages.stage(f"building {args.model}"):
            torch.manual_seed(args.seed)
            model = build_model(args.model).eval()
            x = _inputs(args)  # seeded too: the same command gives the same numbers
        with stages.stage(f"pruning {how}"):
            pruned = fxprune.compile(
                model, example_inputs=x, exact=args.exact, round_to=args.round_to,
                global_ranking=args.global_ranking, **target,
            )  # fmt: skip
        rows = _rows(model, pruned, x, args, stages)
        result = None
        if not bench_only:
            with stages.stage("verifying (masked original vs pruned)"):
                result = fxprune.verify(model, pruned, x)
        if args.out:
            with stages.stage(f"saving to {args.out}"):
                fxprune.save(pruned, args.out, example_inputs=as_inputs(x, model), spec=_spec(args.model))
    finally:
        stages.close()
    report = pruned.meta["fxprune.report"]
    print(f"{args.model} at {_shape_text(x)}, {how}{' (exact groups only)' if args.exact else ''}")
    print(tabulate(rows, headers=["", "before", "after", "reduction"]))
    groups = report.plan.groups
    print(f"{len(groups)} prunable groups ({sum(g.exact for g in groups)} exact); "
          f"analysis {report.seconds.get('analyze', 0):.2f}s, rewrite {report.seconds.get('rewrite', 0):.2f}s")  # fmt: skip
    for u in report.unsupported:
        print(u.message())
    for n in report.notes:
        print(f"note: {n}")
    if result is not None:
        print(result)
    if args.out:
        print(f"saved to {args.out} (plan.json, weights.safetensors, manifest.json); in python: fxprune.load({str(args.out)!r})")
    if getattr(args, "details", False):
        print(report.details())
    return 0 if result is None or result.passed else 1


def _bench_saved(args: argparse.Namespace) -> int:
    import fxprune
    from fxprune.io import _example_inputs, read_manifest

    manifest = read_manifest(args.model)
    if not manifest.get("model"):
        raise ValueError(f"{args.model} records no model spec, so the original cannot be rebuilt to compare with")
    if not manifest["model"].startswith(("torchvision:", "timm:")):
        raise ValueError(
            f"{args.model} records {manifest['model']!r}, which would run that file; compare in python with "
            "fxprune.load(path, model) instead"
        )
    stages = _Stages(["build", "load", "count", "time"], args.progress)
    try:
        with stages.stage(f"building {manifest['model']}"):
            torch.manual_seed(args.seed)
            model = build_model(manifest["model"]).eval()
        with stages.stage(f"loading {args.model}"):
            pruned = fxprune.load(args.model, model).eval()
        inputs = manifest.get("inputs") or []
        if args.shape or not inputs:
            x = _inputs(args)
        elif len(inputs) == 1 and "shape" in inputs[0]:
            x = _example_inputs(manifest, None)[0]
            x = torch.randn(x.shape) if x.is_floating_point() else x  # token ids keep their dtype
        else:
            raise ValueError(f"{args.model} was saved with {len(inputs)} inputs; fxprune bench times one tensor input")
        rows = _rows(model, pruned, x, args, stages)
    finally:
        stages.close()
    print(f"{manifest['model']} vs the pruned model saved in {args.model}, at {'x'.join(map(str, x.shape))}")
    print(tabulate(rows, headers=["", "before", "after", "reduction"]))
    return 0


def _report(args: argparse.Namespace) -> int:
    import fxprune

    x = _inputs(args)
    stages = _Stages(["build", "analyze"], args.progress)
    try:
        with stages.stage(f"building {args.model}"):
            model = build_model(args.model).eval()
        with stages.stage("capturing and analyzing"):
            gm = fxprune.analyze(model, x)
    finally:
        stages.close()
    analysis = gm.meta["fxprune.analysis"]
    groups = [
        [c.id, c.size, "exact" if c.approx is None else f"approx: {c.approx}", _members(c.params)]
        for c in analysis.prunable()
    ]
    pinned = [
        [c.id, c.size, c.pinned, _members(c.params)]
        for c in analysis.classes
        if c.params and c.pinned is not None and c.size > 1 and c.data
    ]
    print(f"{args.model} ({type(model).__name__}) at {_shape_text(x)}: "
          f"{len(groups)} prunable groups ({sum(c.approx is None for c in analysis.prunable())} exact), "
          f"{len(pinned)} pinned channel classes, {len(analysis.unsupported)} ops without a rule")  # fmt: skip
    print()
    print(tabulate(groups, headers=["group", "size", "kind", "members"]))
    if pinned:
        print()
        print(tabulate(pinned, headers=["class", "size", "pinned because", "members"]))
    if analysis.unsupported:
        print()
        print("ops without a rule (their channels stay whole):")
        for u in analysis.unsupported:
            print(f"  {u.message()}")
    return 0


def _members(params: tuple) -> str:
    shown = ", ".join(f"{p}[{d}]" for p, d in params[:3])
    return shown + (f" +{len(params) - 3}" if len(params) > 3 else "")


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--size", type=int, default=224, help="input resolution (input is batch x 3 x size x size)")
    common.add_argument("--batch", type=int, default=1)
    common.add_argument("--shape", default=None, help="full input shape instead, e.g. 1,3,32,32")
    common.add_argument("--input", action="append", metavar="NAME=SHAPE", default=None,
                        help="a keyword input of forward instead (repeat for several), e.g. --input image=1,3,32,32")  # fmt: skip
    common.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    common.add_argument("--seed", type=int, default=0, help="seed for the random weights and inputs")
    common.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--ratio", type=float, default=None, help="fraction of each group removed, in [0, 1) (default 0.5)")
    target.add_argument("--speedup", type=float, default=None, help="target base/pruned MACs instead of a ratio")
    target.add_argument("--params", type=float, default=None, help="target base/pruned parameters instead of a ratio")
    target.add_argument("--global-ranking", action="store_true", help="rank channels across groups")
    target.add_argument("--exact", action="store_true", help="prune exact groups only")
    target.add_argument("--round-to", type=_round_to, default=1,
                        help="keep a multiple of this many channels, or 'auto' (measured on this machine)")  # fmt: skip
    target.add_argument("--iters", type=int, default=10, help="timed runs per model")

    model_help = "torchvision:NAME, timm:NAME or path/to/file.py:factory"
    top = argparse.ArgumentParser(prog="fxprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", metavar="{prune,report,bench}")
    p = sub.add_parser("prune", parents=[common, target], help="prune a model, verify it, optionally save it")
    p.add_argument("model", nargs="?", default="torchvision:resnet50", help=model_help)
    p.add_argument("--out", default=None, help="save the pruned model to this directory (fxprune.load reads it)")
    p.add_argument("--details", action="store_true", help="print every group and pinned class")
    r = sub.add_parser("report", parents=[common], help="groups and pinned channels (with reasons) of a model")
    r.add_argument("model", help=model_help)
    b = sub.add_parser("bench", parents=[common, target], help="params, MACs and latency before and after")
    b.add_argument("model", help=model_help + ", or a directory written by fxprune prune --out")
    b.set_defaults(out=None)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["prune", *argv]  # `fxprune` and `fxprune MODEL ...` prune
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    for name in ("size", "batch", "iters", "round_to"):
        value = getattr(args, name, None)
        if isinstance(value, int) and value < 1:
            print(f"fxprune: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"fxprune: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        if args.command == "report":
            return _report(args)
        if args.command == "bench":
            return _bench_saved(args) if Path(args.model).is_dir() else _prune(args, bench_only=True)
        return _prune(args)
    except KeyboardInterrupt:
        print("fxprune: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError) as e:
        print(f"fxprune: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI reports, the library raises
        from .errors import FxpruneError

        if isinstance(e, FxpruneError):
            print(f"fxprune: {e}", file=sys.stderr)
            return 2
        raise
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
