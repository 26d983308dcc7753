"""Rank script, run by `tests.torchrun.run_ranks` on each process: Attribution on megatron-core's GPTModel with tensor parallelism against the Hugging Face model (tests/core/test_megatron.py)."""

import os

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from oar_verl.core import TARGET_MODES, GradientConfig, PerturbationConfig, ResponseBatch, Segments
from oar_verl.core.attribution import attribute, gradient
from oar_verl.core.models.megatron import megatron_parts
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
from oar_verl.verl_cpu.megatron import install_model_shims, model_from_hf
from tests.core import reference

TIED = os.environ["TIED"] == "True"  # the model's input embeddings and head share their weights
dist.init_process_group("gloo")
tp = dist.get_world_size()
tokenizer = byte_tokenizer()
hf = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1, tie_embeddings=TIED).eval()
path = os.path.join(os.environ["OK_DIR"], "model")
if dist.get_rank() == 0:
    hf.save_pretrained(path)
dist.barrier()
install_model_shims()
parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp)
tensor_parallel.model_parallel_cuda_manual_seed(0)
(model,) = model_from_hf(path)
parts = megatron_parts(model)
assert parts.tensor_parallel == tp and parts.gpt.share_embeddings_and_output_weights == TIED
assert parts.logits(torch.zeros(1, 32)).shape == (1, hf.config.vocab_size // tp), "a shard of the vocabulary per rank"
model.train()
modes = [m.training for m in model.modules()]
buffers = [p.main_grad.clone() for p in model.parameters()]

prompts, responses = [[5, 6, 7], [8, 9]], [[20, 21, 22, 30, 40, 41], [50, 51, 30, 42]]
batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=tokenizer.pad_token_id)
segments = Segments(torch.tensor([3, 2]), torch.tensor([4, 3]), torch.tensor([6, 4]), torch.tensor([True, True]))
pad = tokenizer.pad_token_id
for target in TARGET_MODES:
    # OAR-P exact against the definition (brute force on the HF model), two token budgets
    for budget in (16384, 24):
        scores = attribute(model, batch, segments, PerturbationConfig(target=target, perturbation_id=pad, max_tokens_per_pass=budget))
        for row in range(2):
            end, start, stop = (int(x[row]) for x in (segments.reasoning_end, segments.answer_start, segments.answer_end))
            expected = reference.oar_p(hf, prompts[row], responses[row], end, start, stop, target, pad)
            torch.testing.assert_close(scores[row, :end], expected.float(), atol=1e-5, rtol=0)
            assert torch.all(scores[row, end:] == 0)
    # OAR-G, plain and fused with the log-prob pass: the HF model's scores (same noise)
    config = GradientConfig(target=target, max_tokens_per_pass=12)
    torch.testing.assert_close(
        gradient.attribute(model, batch, segments, config), gradient.attribute(hf, batch, segments, config), rtol=1e-4, atol=1e-9
    )
    fused = gradient.attribute_with_log_probs(model, batch, segments, config, temperature=0.8)
    expected = gradient.attribute_with_log_probs(hf, batch, segments, config, temperature=0.8)
    torch.testing.assert_close(fused.scores, expected.scores, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(fused.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.entropy, expected.entropy, rtol=1e-5, atol=1e-5)
    # approximate OAR-P modes: the HF model's
    for mode, extra in (("span_approx", {"span": 2}), ("guided_approx", {"guided_fraction": 0.5})):
        config = PerturbationConfig(target=target, perturbation_id=pad, mode=mode, **extra)
        torch.testing.assert_close(attribute(model, batch, segments, config), attribute(hf, batch, segments, config), rtol=1e-4, atol=1e-6)
    if target == "every_answer":  # taylor refuses it (test_perturbation.py): its Fisher form takes one distribution a row
        continue
    taylor = PerturbationConfig(target=target, perturbation_id=pad, mode="taylor", taylor_top=3, taylor_samples=2)
    if tp == 1 or target == "answer_logprob":
        torch.testing.assert_close(attribute(model, batch, segments, taylor), attribute(hf, batch, segments, taylor), rtol=1e-4, atol=1e-9)
    else:  # the Fisher directions need the whole vocabulary
        try:
            attribute(model, batch, segments, taylor)
            raise AssertionError("taylor over a split vocabulary was not refused")
        except ValueError as error:
            assert "tensor-parallel" in str(error)
# with the model's activation recomputation on, each decoder layer runs checkpointed: same scores
checkpointed, original = [], torch.utils.checkpoint.checkpoint
torch.utils.checkpoint.checkpoint = lambda function, *args, **kwargs: checkpointed.append(1) or original(function, *args, **kwargs)
parts.gpt.config.recompute_granularity = "full"
config = GradientConfig(target="answer_mean", max_tokens_per_pass=12)
torch.testing.assert_close(gradient.attribute(model, batch, segments, config), gradient.attribute(hf, batch, segments, config), rtol=1e-4, atol=1e-9)
parts.gpt.config.recompute_granularity = None
torch.utils.checkpoint.checkpoint = original
assert len(checkpointed) == 2 * 2, checkpointed  # 2 layers x 2 chunks of rows (noisy passes)
assert all("forward" not in vars(layer) for layer in parts.gpt.decoder.layers), "layer forwards were not restored"
assert all(p.grad is None for p in model.parameters()), "parameter gradients were produced"
assert all(torch.equal(p.main_grad, b) for p, b in zip(model.parameters(), buffers)), "megatron's gradient buffers changed"
assert [m.training for m in model.modules()] == modes, "module modes were not restored"
open(os.path.join(os.environ["OK_DIR"], f"rank{dist.get_rank()}.ok"), "w").close()
