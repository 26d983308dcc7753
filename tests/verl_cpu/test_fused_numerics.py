"""Fused attribution's `old_log_probs` and `entropy` on verl's Megatron engine (tensor
parallelism 2), where the project's own forward answers the fused request: they must differ
from verl's by no more than verl's own passes differ from each other. (On FSDP the fused
request is verl's own pass: tests/verl_cpu/test_engine_attribution.py.)"""

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed


def test_fused_log_probs_are_verls_on_megatron(tmp_path):
    """verl's Megatron engine (bf16, the only precisions it has; packed sequences; tensor
    parallelism 2: each rank holds half of the vocabulary) against fused OAR-G (3 budgets,
    `answer_logprob`) and fused first-order `taylor` at T = 0.6 and 1.0."""
    pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")
    result = run_ranks("tests.ranks.fused_numerics_megatron", tmp_path, world_size=2, env={"VERL_PLATFORM": "cpu"})
    print(next(line for line in result.stdout.splitlines() if line.startswith("REPORT")))
