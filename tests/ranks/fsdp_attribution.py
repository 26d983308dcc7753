"""Rank script, run by `tests.torchrun.run_ranks` on each process: OAR-G, OAR-P and taylor on a model sharded by FSDP2 (fully_shard on layers and root) against the unsharded model, with uneven rows per rank (tests/core/test_fsdp.py)."""

import os

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments
from oar_verl.core.attribution import attribute, gradient
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2

dist.init_process_group("gloo")
tokenizer = byte_tokenizer()
reference = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1)
model = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
batch = ResponseBatch.from_token_lists([[5, 6, 7], [8, 9]], [[20, 21, 22, 30, 40, 41], [50, 51, 30, 42]], pad_token_id=tokenizer.pad_token_id)
segments = Segments(torch.tensor([3, 2]), torch.tensor([4, 3]), torch.tensor([6, 4]), torch.tensor([True, True]))
for target in ("answer_mean", "first_answer", "answer_logprob"):
    sharded = gradient.attribute(model, batch, segments, GradientConfig(target=target, max_tokens_per_pass=12))
    expected = gradient.attribute(reference, batch, segments, GradientConfig(target=target))
    torch.testing.assert_close(sharded, expected, rtol=1e-4, atol=1e-9)
    config = PerturbationConfig(target=target, perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=24)
    torch.testing.assert_close(attribute(model, batch, segments, config), attribute(reference, batch, segments, config), rtol=0, atol=1e-5)
    taylor = PerturbationConfig(
        target=target, perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=12, mode="taylor", taylor_top=3, taylor_samples=2
    )
    torch.testing.assert_close(attribute(model, batch, segments, taylor), attribute(reference, batch, segments, taylor), rtol=1e-4, atol=1e-9)
    fused = gradient.attribute_with_log_probs(model, batch, segments, GradientConfig(target=target, max_tokens_per_pass=12), temperature=0.8)
    fused_expected = gradient.attribute_with_log_probs(reference, batch, segments, GradientConfig(target=target), temperature=0.8)
    torch.testing.assert_close(fused.scores, fused_expected.scores, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(fused.log_probs, fused_expected.log_probs, rtol=1e-5, atol=1e-6)
assert all(p.grad is None for p in model.parameters()), "parameter gradients were produced"
assert type(model.model.embed_tokens.weight).__name__ == "DTensor", "root parameters were left gathered"
with torch.no_grad():  # the sharded model still runs its own forward
    torch.testing.assert_close(model(input_ids=batch.input_ids).logits, reference(input_ids=batch.input_ids).logits)


# Uneven work: rank r attributes r + 1 rows... or none; passes are kept in step.
def sync(local):
    count = torch.tensor([local])
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count)


def sub_segments_of(segments, part):
    return Segments(segments.reasoning_end[part], segments.answer_start[part], segments.answer_end[part], segments.found[part])


mine = torch.tensor([True, True]) if dist.get_rank() == 0 else torch.tensor([False, False])
taylor = PerturbationConfig(perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=12, mode="taylor", taylor_top=2, taylor_samples=1)
for config in (GradientConfig(max_tokens_per_pass=12), PerturbationConfig(perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=12), taylor):
    uneven = attribute(model, batch, segments, config, rows=mine, sync_passes=sync)
    expected = attribute(reference, batch, segments, config, rows=mine)
    torch.testing.assert_close(uneven, expected, rtol=1e-4, atol=1e-6)
for target in ("answer_mean", "answer_logprob"):  # fused: rank 1 has 1 row, rank 0 two chunks of 1
    config = GradientConfig(target=target, max_tokens_per_pass=12)
    part = slice(0, 2) if dist.get_rank() == 0 else slice(1, 2)
    sub, sub_segments = batch.select(torch.arange(2)[part]), sub_segments_of(segments, part)
    uneven = gradient.attribute_with_log_probs(model, sub, sub_segments, config, sync_passes=sync)
    expected = gradient.attribute_with_log_probs(reference, sub, sub_segments, config)
    torch.testing.assert_close(uneven.scores, expected.scores, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(uneven.log_probs, expected.log_probs, rtol=1e-5, atol=1e-6)
open(os.path.join(os.environ["OK_DIR"], f"rank{dist.get_rank()}.ok"), "w").close()
