"""Rank script, run by `tests.torchrun.run_ranks` on each process: Attribution on verl's own FSDP2 wrapping with uneven work per rank (tests/integration/test_fsdp_ranks.py)."""

import datetime
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy
from verl.utils.fsdp_utils import apply_fsdp2

from oar_verl.core import TARGET_MODES, GradientConfig, PerturbationConfig, ResponseBatch, Segments
from oar_verl.core.attribution import attribute, gradient
from oar_verl.core.attribution.base import max_over_ranks
from oar_verl.core.attribution.taylor import attribute_with_log_probs as taylor_fused
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=int(os.environ["COLLECTIVE_TIMEOUT"])))
rank, world = dist.get_rank(), dist.get_world_size()
tokenizer = byte_tokenizer()
PROMPT = 12


def rank_rows(rank):
    # (response length, reasoning_end, attributed) per row
    return {
        0: [(600, 30, True), (40, 20, True), (600, 100, True)],  # long: > one 512-token head slice; 2 chunks
        1: [(8, 4, False), (6, 3, False)],  # nothing to attribute
        2: [(50, 10, True), (45, 12, False), (50, 30, True), (20, 8, True)],  # several chunks
    }[rank]


generator = torch.Generator().manual_seed(100 + rank)
rows = rank_rows(rank)
prompts = [torch.randint(20, 250, (PROMPT - i,), generator=generator).tolist() for i in range(len(rows))]
responses = [torch.randint(20, 250, (length,), generator=generator).tolist() for length, _, _ in rows]
batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=tokenizer.pad_token_id)
end = torch.tensor([r for _, r, _ in rows])
segments = Segments(end, end + 1, end + 3, torch.ones(len(rows), dtype=torch.bool))
attributed = torch.tensor([a for _, _, a in rows])
budget = 2 * batch.input_ids.shape[1] if rank == 0 else batch.input_ids.shape[1]  # rank 0: 2 rows per fused pass


def sharded(tied, checkpointing):
    model = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1, tie_embeddings=tied)
    if checkpointing:  # as verl's engine enables it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
    policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, cast_forward_inputs=True)
    apply_fsdp2(model, {"mesh": mesh, "mp_policy": policy, "offload_policy": None, "reshard_after_forward": True}, {})
    return model.train()  # the actor between updates; attribution switches to eval and back


for variant, (tied, checkpointing) in enumerate(((False, False), (True, False), (False, True))):
    reference = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1, tie_embeddings=tied).eval()
    model = sharded(tied, checkpointing)
    if not tied:
        assert type(model.lm_head).__name__.startswith("FSDP") and type(model.model.embed_tokens).__name__.startswith("FSDP")
    for target in TARGET_MODES:
        config = GradientConfig(target=target, seed=3, max_tokens_per_pass=budget)
        fused = gradient.attribute_with_log_probs(model, batch, segments, config, rows=attributed, temperature=0.7, sync_passes=max_over_ranks)
        expected = gradient.attribute_with_log_probs(reference, batch, segments, config, rows=attributed, temperature=0.7)
        torch.testing.assert_close(fused.scores, expected.scores, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(fused.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.entropy, expected.entropy, rtol=1e-5, atol=1e-5)
        standalone = gradient.attribute(model, batch, segments, config, rows=attributed, sync_passes=max_over_ranks)
        torch.testing.assert_close(standalone, gradient.attribute(reference, batch, segments, config, rows=attributed), rtol=1e-4, atol=1e-9)
        # OAR-P taylor (several backward passes per forward): each target once fused, once standalone over the variants
        if target == "every_answer":  # taylor refuses it: its Fisher form takes one distribution a row
            continue
        taylor = PerturbationConfig(
            target=target, perturbation_id=tokenizer.pad_token_id, mode="taylor", taylor_top=2, taylor_samples=1, max_tokens_per_pass=budget
        )
        if target == TARGET_MODES[variant]:
            fused_taylor = taylor_fused(model, batch, segments, taylor, rows=attributed, temperature=0.7, sync_passes=max_over_ranks)
            expected = taylor_fused(reference, batch, segments, taylor, rows=attributed, temperature=0.7)
            torch.testing.assert_close(fused_taylor.scores, expected.scores, rtol=1e-4, atol=1e-9)
            torch.testing.assert_close(fused_taylor.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)
        if target == TARGET_MODES[(variant + 1) % 3]:
            estimate = attribute(model, batch, segments, taylor, rows=attributed, sync_passes=max_over_ranks)
            torch.testing.assert_close(estimate, attribute(reference, batch, segments, taylor, rows=attributed), rtol=1e-4, atol=1e-9)
    mode = "guided_approx" if checkpointing else "exact"  # guided: OAR-G passes, then OAR-P's
    config = PerturbationConfig(target=TARGET_MODES[int(tied)], perturbation_id=tokenizer.pad_token_id, mode=mode, max_tokens_per_pass=600)
    torch.testing.assert_close(
        attribute(model, batch, segments, config, rows=attributed, sync_passes=max_over_ranks),
        attribute(reference, batch, segments, config, rows=attributed),
        rtol=1e-4,
        atol=1e-6,
    )
    assert model.training and all(m.training for m in model.modules()), "training mode not restored"
    assert all(p.grad is None for p in model.parameters()), "parameter gradients were produced"
    assert all(type(p).__name__ == "DTensor" for p in model.parameters()), "parameters were left gathered"
    with torch.no_grad():  # the sharded model still runs its own forward
        torch.testing.assert_close(model.eval()(input_ids=batch.input_ids).logits, reference(input_ids=batch.input_ids).logits)
open(os.path.join(os.environ["OK_DIR"], f"rank{rank}.ok"), "w").close()
