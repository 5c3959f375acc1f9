"""The command line (``python benchmarks/zoo.py``); its ``--help`` is the package docstring."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import torch

from . import __doc__ as ZOO_DOC
from .build import Options
from .markdown import pct, write_markdown
from .models import SOURCES, ModelSpec, resolve, timm_sample, torchvision_specs
from .records import append, cached_sample, load_meta, load_records, machine_meta, merged_meta
from .run import run_model

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=ZOO_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        meta = merged_meta(metas)
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
            cached = cached_sample(metas, args.timm_n, args.timm_max_params)
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
        tqdm.write(f"{spec.key}: {rec.get('status')} {pct((rec.get('exact') or {}).get('param_reduction'))} "
                   f"{rec.get('error', '')[:120]}")  # fmt: skip
    recs = list(load_records(args.out).values())
    meta = merged_meta(load_meta(args.out))
    write_markdown(recs, args.md, command=meta["command"], meta=meta)
    print(f"wrote {args.out} ({len(recs)} models) and {args.md}")


if __name__ == "__main__":
    main()
