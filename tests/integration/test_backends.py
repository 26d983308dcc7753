"""`integration/backends.py`: the fused pass takes its entropies from verl's FSDP engine the
way the engine's remove-padding path does (rows [N, V], chunked when
`entropy_from_logits_with_chunking` is set), so every setting of it gives verl's values."""

import types

import pytest
import torch
from verl.utils import torch_functional as verl_F

from oar_verl.integration.backends import verl_log_prob_fn


def fsdp_engine(chunking: bool, chunk_size: int = 5):
    """What `verl_log_prob_fn` reads of verl's FSDP engine, set as its `__init__` sets it."""
    config = types.SimpleNamespace(entropy_from_logits_with_chunking=chunking, entropy_from_logits_chunk_size=chunk_size)
    compute = verl_F.entropy_from_logits_with_chunking if chunking else verl_F.entropy_from_logits
    return types.SimpleNamespace(engine_config=config, compute_entropy_from_logits=compute)


@pytest.mark.parametrize("chunking", [False, True])
@pytest.mark.parametrize("remove_padding", [False, True])
def test_entropies_and_log_probs_are_verls_on_packed_rows(chunking, remove_padding):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=generator) * 3).to(torch.bfloat16)  # [N, S, V] in the head's dtype
    tokens = torch.randint(0, 50, (3, 7), generator=generator)
    log_probs, entropy = verl_log_prob_fn(fsdp_engine(chunking), remove_padding)(logits, tokens)
    rows = logits.reshape(-1, 50)  # the engine's packed tokens
    if remove_padding:
        expected = verl_F.entropy_from_logits_with_chunking(rows, chunk_size=5) if chunking else verl_F.entropy_from_logits(rows)
    else:
        expected = verl_F.entropy_from_logits(logits).reshape(-1)
    assert entropy.shape == (3, 7)
    torch.testing.assert_close(entropy.reshape(-1), expected, rtol=0, atol=0)
    torch.testing.assert_close(log_probs, verl_F.logprobs_from_logits(logits, tokens), rtol=0, atol=0)
