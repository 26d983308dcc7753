"""`integration/engine_attribution.py` without an engine: how the attribution passes are
planned and how the head's raw output becomes the model's logits (the engine-run tests:
tests/verl_cpu/test_engine_attribution.py)."""

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from oar_verl.integration.engine_attribution import HeadOutput, plan_chunks


def test_chunks_hold_the_budget_in_the_engines_layout():
    lengths = [30, 10, 25, 5, 12]
    packed = plan_chunks(lengths, 40, packed=True)
    padded = plan_chunks(lengths, 40, packed=False)
    assert sorted(i for chunk in packed for i in chunk) == list(range(5)) == sorted(i for chunk in padded for i in chunk)
    assert all(sum(lengths[i] for i in chunk) <= 40 for chunk in packed)  # packed: real tokens
    assert all(len(chunk) * max(lengths[i] for i in chunk) <= 40 for chunk in padded)  # padded: rows x the longest
    assert len(plan_chunks([20, 5, 5, 5], 40, packed=True)) == 1 and len(plan_chunks([20, 5, 5, 5], 40, packed=False)) == 2
    with pytest.raises(ValueError, match=r"algorithm.oar.max_tokens_per_pass=20: .* 30 tokens"):
        plan_chunks(lengths, 20, packed=True)


def test_the_heads_raw_output_becomes_the_models_logits_with_its_soft_cap():
    """Gemma 2 soft-caps its logits after the head: the targets must read the capped ones."""
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.1)  # fmt: skip
    model = Gemma2ForCausalLM(config).eval()
    raw = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, output: raw.append(output))
    ids = torch.randint(0, 64, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    view = HeadOutput.of(model)
    assert view.softcap == 0.1 and float(raw[0].abs().max()) > 0.1  # the cap matters here
    torch.testing.assert_close(view.logits(raw[0]), logits.float())
