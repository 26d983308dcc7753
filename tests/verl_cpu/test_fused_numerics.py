"""Fused attribution's `old_log_probs` and `entropy` are verl's: verl's FSDP2 engine (CPU
backend, one gloo rank) computes them on a batch with several micro-batch sizes, fused OAR-G
with several token budgets (and its `answer_logprob` target, whose clean pass runs with
autograd), fused OAR-P `taylor`, at T = 0.6, 1.0 and 1.2, with float32 and bf16 mixed
precision. The
fused values must differ from verl's by no more than verl's own passes differ from each
other (in bf16: not at all). The same for verl's Megatron engine at tensor parallelism 2."""

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed

"""What both scripts share: verl's modules, a tiny Qwen2 saved by rank 0, 6 rows of 9 to 30
response tokens with their segments, and the largest difference over response tokens."""


def test_fused_log_probs_are_verls(tmp_path):
    result = run_ranks("tests.ranks.fused_numerics", tmp_path, world_size=1, env={"VERL_PLATFORM": "cpu"})
    print(next(line for line in result.stdout.splitlines() if line.startswith("REPORT")))


def test_fused_log_probs_are_verls_on_megatron(tmp_path):
    """verl's Megatron engine (bf16, the only precisions it has; packed sequences; tensor
    parallelism 2: each rank holds half of the vocabulary) against fused OAR-G (3 budgets,
    `answer_logprob`) and fused first-order `taylor` at T = 0.6 and 1.0."""
    pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")
    result = run_ranks("tests.ranks.fused_numerics_megatron", tmp_path, world_size=2, env={"VERL_PLATFORM": "cpu"})
    print(next(line for line in result.stdout.splitlines() if line.startswith("REPORT")))
