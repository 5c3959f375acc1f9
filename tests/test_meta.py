"""Analysis without weights: models on the meta device are captured, analyzed, planned and
rewritten without allocating weight memory."""

from __future__ import annotations

import pytest
import torch
from fxprune.passes.dependency import analyze
from torch import nn

import fxprune
from fxprune.importance import get_criterion


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def test_meta_model_is_planned_and_rewritten_with_random_scores():
    with torch.device("meta"):
        model = _mlp()
    gm = analyze(fxprune.capture(model, torch.zeros(2, 16, device="meta")))
    plan = fxprune.make_plan(gm, 0.5, scores=get_criterion("random")(gm, None, None))
    small = fxprune.rewrite(gm, plan)
    assert all(p.is_meta for p in small.parameters())
    assert small.state_dict()["0.weight"].shape == (32, 16)
    assert small.state_dict()["2.weight"].shape == (32, 32)
    assert small(torch.zeros(2, 16, device="meta")).shape == (2, 4)


def test_magnitude_on_meta_weights_is_a_clear_error():
    with torch.device("meta"):
        model = _mlp()
    gm = analyze(fxprune.capture(model, torch.zeros(2, 16, device="meta")))
    with pytest.raises(ValueError, match="meta device and has no values.*importance='random'"):
        fxprune.make_plan(gm, 0.5)


def test_llama_config_on_meta_keeps_grouped_heads():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, use_cache=False,
    )  # fmt: skip
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg).eval()
    tokens = torch.zeros(1, 8, dtype=torch.long, device="meta")
    gm = analyze(fxprune.capture(model, (tokens,), method="export"))
    plan = fxprune.make_plan(gm, 0.5, exact=True, scores=get_criterion("random")(gm, None, None))
    small = fxprune.rewrite(gm, plan)
    sd = small.state_dict()
    q = sd["model.layers.0.self_attn.q_proj.weight"].shape[0]
    k = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
    assert q < 64 and k < 32 and q % k == 0  # heads pruned, query heads still a multiple of kv heads
    assert sd["model.layers.0.mlp.up_proj.weight"].shape[0] < 128
