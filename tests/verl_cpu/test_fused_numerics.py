"""Fused attribution's `old_log_probs` and `entropy` are verl's: verl's FSDP2 engine (CPU
backend, one gloo rank) computes them on a batch with several micro-batch sizes, fused OAR-G
with several token budgets (and its `answer_logprob` target, whose clean pass runs with
autograd), fused OAR-P `taylor`, at T = 0.6, 1.0 and 1.2, with float32 and bf16 mixed
precision. The
fused values must differ from verl's by no more than verl's own passes differ from each
other (in bf16: not at all). The same for verl's Megatron engine at tensor parallelism 2."""

import textwrap

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed

BATCH = textwrap.dedent(
    """
    import json, os, torch, torch.distributed as dist
    import verl  # the plugin: cpu platform and engines
    from tensordict import TensorDict
    from verl.trainer.config import CheckpointConfig
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine import EngineRegistry
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding
    from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments
    from oar_verl.core.attribution import fused_attribution
    from oar_verl.tiny import byte_tokenizer, tiny_qwen2

    dist.init_process_group("gloo")
    path = os.path.join(os.environ["OK_DIR"], "model")
    tokenizer = byte_tokenizer()
    if dist.get_rank() == 0:
        tiny_qwen2(len(tokenizer), hidden_size=64, seed=3).save_pretrained(path)
        tokenizer.save_pretrained(path)
    dist.barrier()
    generator = torch.Generator().manual_seed(0)
    lengths = [(5, 30), (9, 12), (3, 25), (7, 18), (4, 30), (6, 9)]  # (prompt, response)
    batch = ResponseBatch.from_token_lists(
        [torch.randint(0, 250, (p,), generator=generator).tolist() for p, _ in lengths],
        [torch.randint(0, 250, (r,), generator=generator).tolist() for _, r in lengths], pad_token_id=tokenizer.pad_token_id,
    )
    B, P, R, mask = len(lengths), batch.prompt_length, batch.response_length, batch.response_mask
    end = torch.tensor([r for _, r in lengths])
    segments = Segments(end - 4, end - 3, end - 1, torch.ones(B, dtype=torch.bool))

    def largest(pairs):
        return max(float((a - b).abs()[mask].max()) for a, b in pairs)
    """
)
"""What both scripts share: verl's modules, a tiny Qwen2 saved by rank 0, 6 rows of 9 to 30
response tokens with their segments, and the largest difference over response tokens."""


SCRIPT = BATCH + textwrap.dedent(
    """
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from oar_verl.integration.backends import engine_autocast, verl_log_prob_fn


    def verl_pass(engine, temperature, micro):
        data = TensorDict({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids,
                           "prompts": batch.input_ids[:, :P], "responses": batch.responses, "response_mask": mask.long()}, batch_size=[B])
        data = left_right_2_no_padding(data)
        tu.assign_non_tensor(data, temperature=temperature, calculate_entropy=True, compute_loss=False, use_remove_padding=False,
                             use_dynamic_bsz=False, micro_batch_size_per_gpu=micro, use_fused_kernels=False)
        with engine.eval_mode():
            output = engine.infer_batch(data, loss_function=None)["model_output"]
        return [no_padding_2_padding(output[key], data).float() * mask for key in ("log_probs", "entropy")]

    def fused_pass(engine, temperature, config):
        with engine.eval_mode(), engine_autocast(engine):
            result = fused_attribution(config)(engine.module, batch, segments, config, temperature=temperature, log_prob_fn=verl_log_prob_fn(engine, False))
        return [result.log_probs, result.entropy]

    FUSED = [GradientConfig(max_tokens_per_pass=rows * (P + R)) for rows in (1, 2, 6)] + [
        GradientConfig(target="answer_logprob", max_tokens_per_pass=2 * (P + R)),
        PerturbationConfig(perturbation_id=tokenizer.pad_token_id, mode="taylor", taylor_top=2, max_tokens_per_pass=3 * (P + R)),
    ]

    report = {}
    for dtype in ("fp32", "bf16"):
        engine = EngineRegistry.new(
            model_type="language_model", backend="fsdp2", checkpoint_config=CheckpointConfig(), optimizer_config=FSDPOptimizerConfig(lr=1e-5),
            model_config=HFModelConfig(path=path, use_remove_padding=False, override_config={"attn_implementation": "sdpa"}),
            engine_config=FSDPEngineConfig(strategy="fsdp2", forward_only=False, model_dtype="fp32", use_torch_compile=False,
                                           mixed_precision={"param_dtype": dtype, "reduce_dtype": "fp32", "buffer_dtype": "fp32"}),
        )
        engine.initialize()
        assert engine._autocast_dtype == (torch.float32 if dtype == "fp32" else torch.bfloat16)
        for temperature in (0.6, 1.0, 1.2):
            verl = [verl_pass(engine, temperature, micro) for micro in (1, 2, 3, 6)]
            fused = [fused_pass(engine, temperature, config) for config in FUSED]
            for k, name in enumerate(("log_probs", "entropy")):
                own = largest([(a[k], b[k]) for a in verl for b in verl])
                versus = largest([(a[k], b[k]) for a in fused for b in verl])
                report[f"{dtype} T={temperature} {name}"] = (own, versus)
                assert versus <= own, f"{dtype}, T={temperature}: fused {name} differ from verl's by {versus}, verl's own passes by {own}"
    print("REPORT", json.dumps(report))
    open(os.path.join(os.environ["OK_DIR"], "rank0.ok"), "w").close()
    """
)


def test_fused_log_probs_are_verls(tmp_path):
    result = run_ranks(SCRIPT, tmp_path, world_size=1, env={"VERL_PLATFORM": "cpu"})
    print(next(line for line in result.stdout.splitlines() if line.startswith("REPORT")))


MEGATRON_SCRIPT = BATCH + textwrap.dedent(
    """
    from verl.workers.config import HFModelConfig, McoreEngineConfig, McoreOptimizerConfig
    from oar_verl.integration.backends import engine_adapter

    engine = EngineRegistry.new(
        model_type="language_model", backend="megatron", checkpoint_config=CheckpointConfig(),
        optimizer_config=McoreOptimizerConfig(lr=1e-5, total_training_steps=10, lr_warmup_steps=0),
        model_config=HFModelConfig(path=path, use_remove_padding=True),
        engine_config=McoreEngineConfig(dtype="bfloat16", use_mbridge=True, vanilla_mbridge=True, forward_only=False, use_remove_padding=True,
                                        tensor_model_parallel_size=dist.get_world_size(), sequence_parallel=False, micro_batch_size_per_gpu=2,
                                        override_transformer_config={"attention_backend": "local", "sequence_parallel": False}),
    )
    engine.initialize()
    adapter = engine_adapter(engine, use_remove_padding=True)

    def verl_pass(temperature, micro):
        data = TensorDict({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids,
                           "prompts": batch.input_ids[:, :P], "responses": batch.responses, "response_mask": mask.long()}, batch_size=[B])
        data = left_right_2_no_padding(data)
        tu.assign_non_tensor(data, temperature=temperature, calculate_entropy=True, compute_loss=False, use_remove_padding=True,
                             use_dynamic_bsz=False, micro_batch_size_per_gpu=micro, use_fused_kernels=False, max_token_len_per_gpu=None)
        with engine.eval_mode():
            output = engine.infer_batch(data, loss_function=None)["model_output"]
        return [no_padding_2_padding(output[key], data).float() * mask for key in ("log_probs", "entropy")]

    def fused_pass(temperature, config):
        with engine.eval_mode(), adapter.precision():
            result = fused_attribution(config)(adapter.model, batch, segments, config, temperature=temperature, log_prob_fn=adapter.log_prob_fn)
        return [result.log_probs, result.entropy]

    FUSED = [GradientConfig(max_tokens_per_pass=rows * (P + R)) for rows in (1, 2, 6)] + [
        GradientConfig(target="answer_logprob", max_tokens_per_pass=2 * (P + R)),
        PerturbationConfig(target="answer_logprob", perturbation_id=tokenizer.pad_token_id, mode="taylor", max_tokens_per_pass=3 * (P + R)),
    ]

    report = {}
    for temperature in (0.6, 1.0):
        verl = [verl_pass(temperature, micro) for micro in (1, 3, 6)]
        fused = [fused_pass(temperature, config) for config in FUSED]
        for k, name in enumerate(("log_probs", "entropy")):
            own = largest([(a[k], b[k]) for a in verl for b in verl])
            versus = largest([(a[k], b[k]) for a in fused for b in verl])
            report[f"T={temperature} {name}"] = (own, versus)
            assert versus <= own, f"T={temperature}: fused {name} differ from verl's by {versus}, verl's own passes by {own}"
    print("REPORT", json.dumps(report))
    open(os.path.join(os.environ["OK_DIR"], f"rank{dist.get_rank()}.ok"), "w").close()
    """
)


def test_fused_log_probs_are_verls_on_megatron(tmp_path):
    """verl's Megatron engine (bf16, the only precisions it has; packed sequences; tensor
    parallelism 2: each rank holds half of the vocabulary) against fused OAR-G (3 budgets,
    `answer_logprob`) and fused first-order `taylor` at T = 0.6 and 1.0."""
    pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")
    result = run_ranks(MEGATRON_SCRIPT, tmp_path, world_size=2, env={"VERL_PLATFORM": "cpu"})
    print(next(line for line in result.stdout.splitlines() if line.startswith("REPORT")))
