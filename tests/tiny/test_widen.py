"""Widening a Qwen2 to a larger head size keeps its function (against the original model:
logits, greedy answers, and training, which leaves the extra dimensions at zero)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.study.plan import CHAINS
from oar_verl.study.runner import STORED_WARM_STARTS
from oar_verl.tiny.models import tiny_qwen2
from oar_verl.tiny.warmstart import greedy_accuracy
from oar_verl.tiny.widen import head_positions, widen_saved, widened

CHAINS_WARM_START = STORED_WARM_STARTS / "chains"


def perturbed(model):
    """`model` with weights far from their initialisation (attention then matters)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("factor", [2, 4])
def test_a_widened_model_computes_the_same_logits(factor):
    """Random weights (biases and norms included, so nothing lines up by accident), rows with
    left padding: the logits of every real token agree to float rounding."""
    model = perturbed(tiny_qwen2(40, hidden_size=32, num_heads=4, num_kv_heads=2, seed=3).eval())
    wide = widened(model, factor)
    assert wide.config.hidden_size == 32 * factor and wide.config.num_attention_heads == 4 and wide.config.num_key_value_heads == 2
    ids = torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    original, widened_logits = logits(model, ids, mask), logits(wide, ids, mask)
    real = mask.bool()
    assert torch.allclose(widened_logits[real], original[real], atol=1e-4, rtol=1e-5), (widened_logits - original)[real].abs().max()


def test_the_rotary_layout_is_what_makes_it_exact():
    """Control: the same widening with the original head dimensions placed in order (not where
    rotary embedding turns them by the same angle) changes the logits."""
    model = perturbed(tiny_qwen2(40, hidden_size=32, num_heads=2, num_kv_heads=1, seed=4).eval())
    ids, mask = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1)), torch.ones(2, 24, dtype=torch.long)
    assert head_positions(16, 2).tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]
    import oar_verl.tiny.widen as widen

    in_order = widen.head_positions
    try:
        widen.head_positions = lambda head_size, factor: torch.arange(head_size)
        shuffled = widened(model, 2)
    finally:
        widen.head_positions = in_order
    original = logits(model, ids, mask)
    assert (logits(widened(model, 2), ids, mask) - original).abs().max() < 1e-4
    assert (logits(shuffled, ids, mask) - original).abs().max() > 1e-2


def test_the_widened_chains_warm_start_answers_as_the_original(tmp_path):
    """The main job's model: the study's shipped warm start at head size 32, saved with its
    tokenizer, gives the same greedy answers (held-out accuracy equal on 128 problems)."""
    path = widen_saved(CHAINS_WARM_START, tmp_path / "wide", factor=2)
    original = AutoModelForCausalLM.from_pretrained(CHAINS_WARM_START, dtype=torch.float32).eval()
    wide = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert wide.config.hidden_size // wide.config.num_attention_heads == 32
    assert wide.generation_config.eos_token_id == original.generation_config.eos_token_id
    accuracies = [greedy_accuracy(model, tokenizer, CHAINS.task, 128, seed=1000) for model in (original, wide)]
    assert accuracies[0] == accuracies[1] and 0.3 < accuracies[0] < 0.7, accuracies


def test_training_leaves_the_extra_dimensions_at_zero():
    """After Adam steps on the widened model the residual stream's extra dimensions and the
    heads' extra dimensions are still zero: it trains as the original does."""
    model = tiny_qwen2(40, hidden_size=32, num_heads=2, num_kv_heads=1, seed=5)
    wide = widened(model, 2).train()
    optimizer = torch.optim.AdamW(wide.parameters(), lr=1e-2)
    ids = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        loss = wide(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert wide.model.embed_tokens.weight[:, 32:].abs().max() == 0 and wide.lm_head.weight[:, 32:].abs().max() == 0
    extra_rows = torch.ones(32, dtype=torch.bool)
    extra_rows[head_positions(16, 2)] = False
    for layer in wide.model.layers:
        assert layer.self_attn.q_proj.weight[:32][extra_rows].abs().max() == 0
        assert layer.self_attn.o_proj.weight[32:].abs().max() == 0 and layer.mlp.down_proj.weight[32:].abs().max() == 0


def test_what_it_cannot_widen_is_refused():
    model = tiny_qwen2(40, hidden_size=32, num_heads=4, num_kv_heads=2, tie_embeddings=True)
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        widened(model, 2)
    model = tiny_qwen2(40, hidden_size=32, num_heads=4, num_kv_heads=2)
    model.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="rope_type 'default' only"):
        widened(model, 2)
