"""Analysis without weights: a Llama-7B-sized model analyzed, planned and rewritten on the
meta device.

The model is ``transformers.LlamaForCausalLM(LlamaConfig())`` (the config's defaults: hidden
4096, 32 layers, 32 heads, MLP 11008, vocab 32000; 6.7B parameters) built under
``torch.device("meta")``, so no weight memory is allocated. Capture is ``torch.export``
(symbolic_trace cannot trace Hugging Face models), on a meta ``(1, --seq)`` token batch.
Meta tensors have no values, so the plan uses ``importance="random"``: the figures are the
cost of the structure work (capture, analysis, plan, rewrite), not of scoring.

It prints the seconds of each stage, the total, the parameter counts before and after, and
the peak resident memory of the process (``resource.getrusage``, which includes Python,
torch and transformers themselves).

Usage:
    python benchmarks/llama_meta.py [--layers 32] [--seq 16] [--ratio 0.5]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
import warnings

import torch
from fxprune.passes.dependency import analyze

import fxprune
from fxprune.importance import get_criterion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=None, help="override num_hidden_layers (default: the config's 32)")
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    cfg = LlamaConfig(use_cache=False)
    if args.layers is not None:
        cfg.num_hidden_layers = args.layers
    print(f"LlamaConfig: hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers}, heads {cfg.num_attention_heads}, "
          f"kv heads {cfg.num_key_value_heads}, mlp {cfg.intermediate_size}, vocab {cfg.vocab_size}")  # fmt: skip
    seconds = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).eval()
    seconds["build (meta)"] = time.perf_counter() - t
    tokens = torch.zeros(1, args.seq, dtype=torch.long, device="meta")
    t = time.perf_counter()
    gm = fxprune.capture(model, (tokens,), method="export")
    seconds["capture"] = time.perf_counter() - t
    t = time.perf_counter()
    analyze(gm)
    seconds["analyze"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = fxprune.make_plan(gm, args.ratio, scores=get_criterion("random")(gm, None, None))
    seconds["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    small = fxprune.rewrite(gm, plan)
    seconds["rewrite"] = time.perf_counter() - t
    total = time.perf_counter() - t_all
    analysis = gm.meta["fxprune.analysis"]
    print(f"graph: {len(gm.graph.nodes)} nodes, {len(analysis.prunable())} prunable classes, "
          f"{sum(1 for g in plan.groups if g.id in plan.keep)} pruned at ratio {args.ratio}")  # fmt: skip
    for k, v in seconds.items():
        print(f"  {k:<14}{v:8.2f} s")
    print(f"  {'total':<14}{total:8.2f} s")
    before, after = fxprune.count_params(model), fxprune.count_params(small)
    print(f"parameters: {before / 1e9:.3f}B -> {after / 1e9:.3f}B")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB (ru_maxrss)")


if __name__ == "__main__":
    main()
