"""Rank script (tests/verl_cpu/test_engine_attribution.py): attribution through verl's FSDP2
engine (CPU backend, gloo), remove-padding on and off, fp32 and bf16, fixed and dynamic
micro-batches, on 1-3 ranks where rank 1 attributes nothing and rank 2 one row.

Checks, per engine: pi_old from verl's pass with the clean targets recorded is bit-equal to
verl's pass without; OAR-G scores (every target) equal the brute-force definition
(tests/core/reference.py) and taylor's the core's (fp32); a row's scores and log-probs do not
change with its neighbours in the pack; no parameter gradient, no reduce-scatter."""

import json
import os

import torch
import torch.distributed as dist
from tensordict import TensorDict
from transformers import AutoModelForCausalLM
from verl.trainer.config import CheckpointConfig
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
from verl.workers.engine import EngineRegistry
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from oar_verl.core import GradientConfig, PerturbationConfig
from oar_verl.core.attribution import attribute
from oar_verl.core.attribution.base import max_over_ranks
from oar_verl.core.attribution.gradient import row_noise
from oar_verl.integration.backends import engine_autocast
from oar_verl.integration.engine_attribution import EngineAttribution, RowSpec, row_fields
from tests.core import reference
from tests.ranks.fused_batch import B, P, R, batch, lengths, mask, path, segments, tokenizer

rank, world = dist.get_rank(), dist.get_world_size()
ATTRIBUTED = {0: list(range(B)), 1: [], 2: [3]}[rank]  # rank 1: nothing to attribute (the common case)
flags = torch.zeros(B, dtype=torch.long)
flags[ATTRIBUTED] = 1
segment_field = torch.stack([segments.reasoning_end, segments.answer_start, segments.answer_end, flags], dim=1)
prompts = [batch.input_ids[b, P - p :].tolist()[:p] for b, (p, _) in enumerate(lengths)]
responses = [batch.responses[b, :r].tolist() for b, (_, r) in enumerate(lengths)]
CONFIGS = [GradientConfig(target=t, max_tokens_per_pass=2 * (P + R)) for t in ("answer_mean", "first_answer", "every_answer")] + [
    GradientConfig(target="answer_logprob", noise_std=0.0, max_tokens_per_pass=P + R),
    PerturbationConfig(perturbation_id=tokenizer.pad_token_id, mode="taylor", target="answer_logprob", max_tokens_per_pass=3 * (P + R)),
    PerturbationConfig(perturbation_id=tokenizer.pad_token_id, mode="taylor", taylor_top=2, taylor_samples=1, max_tokens_per_pass=3 * (P + R)),
]


def request(order: list[int], dynamic: bool, packed: bool) -> TensorDict:
    """verl's log-prob request (no-padding layout) of rows `order`, with the OAR row fields."""
    data = TensorDict(
        {
            "input_ids": batch.input_ids[order],
            "attention_mask": batch.attention_mask[order],
            "position_ids": batch.position_ids[order],
            "prompts": batch.input_ids[order, :P],
            "responses": batch.responses[order],
            "response_mask": mask[order].long(),
        },
        batch_size=[len(order)],
    )
    data = left_right_2_no_padding(data)
    settings = dict(temperature=1.0, calculate_entropy=True, compute_loss=False, use_fused_kernels=False, use_remove_padding=packed)
    settings.update(use_dynamic_bsz=True, max_token_len_per_gpu=60) if dynamic else settings.update(use_dynamic_bsz=False, micro_batch_size_per_gpu=2)
    tu.assign_non_tensor(data, **settings)
    for key, values in row_fields([len(prompts[b]) for b in order], segment_field[order]).items():
        data[key] = values
    return data


def verl_pass(engine, data: TensorDict, loss_function=None) -> torch.Tensor:
    """[b, R] log-probs of verl's pass; `loss_function` as verl's worker gives it with `compute_loss`."""
    with engine.eval_mode():
        output = engine.infer_batch(data, loss_function=loss_function)["model_output"]
    return no_padding_2_padding(output["log_probs"], data)


def engine_scores(engine, config, packed: bool, order: list[int], dynamic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pi_old [b, R] of verl's pass with the clean targets recorded, scores [b, R]) of rows `order`."""
    attribution = EngineAttribution(engine, config, packed, tokenizer.pad_token_id)
    data = request(order, dynamic, packed)
    with attribution.clean_target_recorder() as recorder:
        log_probs = verl_pass(engine, data, recorder)
    specs = [RowSpec(i, prompts[b] + responses[b], len(prompts[b]), *segment_field[b, :3].tolist()) for i, b in enumerate(order) if flags[b]]
    return log_probs, attribution.scores(specs, len(order), R, recorder.clean if recorder else None)


def definition(model, config: GradientConfig, b: int) -> torch.Tensor:
    """Row b's OAR-G scores by the brute-force definition, with the row's own noise."""
    p, r = len(prompts[b]), len(responses[b])
    noise = row_noise(torch.tensor([b]), segments.reasoning_end[b : b + 1], p + r, p, model.config.hidden_size, config)[0]
    args = (prompts[b], responses[b], int(segments.reasoning_end[b]), int(segments.answer_start[b]), int(segments.answer_end[b]))
    return reference.oar_g(model, *args, config.target, noise)


collectives = {"reduce_scatter": 0}
for name in ("reduce_scatter_tensor", "reduce_scatter"):
    original = getattr(dist, name)

    def counting(*args, _original=original, **kwargs):
        collectives["reduce_scatter"] += 1
        return _original(*args, **kwargs)

    setattr(dist, name, counting)

plain = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", torch_dtype=torch.float32).eval()
report = {}
ENGINES = [(dtype, packed, -1) for dtype in ("fp32", "bf16") for packed in (True, False)]
ENGINES += [("fp32", True, 1)] if world > 1 else []  # fsdp_size 1: parameters replicated, not sharded (hybrid sharding's sub-mesh)
for dtype, packed, fsdp_size in ENGINES:
    engine = EngineRegistry.new(
        model_type="language_model",
        backend="fsdp2",
        checkpoint_config=CheckpointConfig(),
        optimizer_config=FSDPOptimizerConfig(lr=1e-5),
        model_config=HFModelConfig(path=path, use_remove_padding=packed, enable_gradient_checkpointing=True, override_config={"attn_implementation": "sdpa"}),
        engine_config=FSDPEngineConfig(
            strategy="fsdp2", forward_only=False, model_dtype="fp32", use_torch_compile=False, fsdp_size=fsdp_size,
            mixed_precision={"param_dtype": dtype, "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
        ),
    )  # fmt: skip
    engine.initialize()
    label = f"{dtype} {'packed' if packed else 'padded'}" + (f" fsdp_size={fsdp_size}" if fsdp_size > 0 else "")
    order = list(range(B))
    for dynamic in (False, True):  # every config with dynamic batches; fixed ones: a recorded KL target and taylor's several backwards
        reference_log_probs = verl_pass(engine, request(order, dynamic, packed))
        for config in CONFIGS if dynamic else (CONFIGS[0], CONFIGS[5]):
            log_probs, scores = engine_scores(engine, config, packed, order, dynamic)
            assert torch.equal(log_probs, reference_log_probs), f"{label}: pi_old with {config} differs from verl's pass"
            assert all(p.grad is None for p in engine.module.parameters()), f"{label}: a parameter gradient after {config}"
    assert collectives["reduce_scatter"] == 0, f"{label}: {collectives['reduce_scatter']} reduce-scatters"
    # the update's first forward (another token limit, as the recipes set) against pi_old with
    # and without OAR: the per-token ratios must be the same, whatever their gap to 1
    update = request(order, True, packed)
    tu.assign_non_tensor(update, max_token_len_per_gpu=120)
    update_log_probs = verl_pass(engine, update)
    grpo_old = verl_pass(engine, request(order, True, packed))
    for config in (CONFIGS[0], CONFIGS[5]):
        oar_old, _ = engine_scores(engine, config, packed, order, dynamic=True)
        grpo_ratio, oar_ratio = (torch.exp(update_log_probs - old)[mask] for old in (grpo_old, oar_old))
        assert torch.equal(grpo_ratio, oar_ratio), f"{label}: the first update's ratios differ with {config}"
        report[f"{label} max |ratio - 1| {getattr(config, 'mode', 'oar_g')}"] = float((oar_ratio - 1).abs().max())
    if dtype == "fp32":
        for config in CONFIGS:
            _, scores = engine_scores(engine, config, packed, order)
            if isinstance(config, GradientConfig):
                expected = torch.zeros_like(scores)
                for b in ATTRIBUTED:
                    expected[b, : int(segments.reasoning_end[b])] = definition(plain, config, b)
            else:
                with engine.eval_mode(), engine_autocast(engine):
                    expected = attribute(engine.module, batch, segments, config, rows=flags.bool(), sync_passes=max_over_ranks)
            error = float((scores - expected).abs().max() / expected.abs().max().clamp(min=1e-30)) if ATTRIBUTED else float(scores.abs().max())
            report[f"{label} {getattr(config, 'mode', 'oar_g')} {config.target}"] = error
            assert error < 1e-4, f"{label}: {config} scores {error} from the definition"
        # neighbours: row 3 packed with other rows, in another order
        for config in CONFIGS[3:5]:
            alone_lp, alone = engine_scores(engine, config, packed, [3, 0, 1, 2, 4, 5])
            mixed_lp, mixed = engine_scores(engine, config, packed, [5, 4, 3, 2, 1, 0])
            report[f"{label} neighbours {getattr(config, 'mode', 'oar_g')} {config.target}"] = float((alone[0] - mixed[2]).abs().max())
            assert torch.allclose(alone[0], mixed[2], rtol=1e-5, atol=1e-9), f"{label}: row 3's scores change with its neighbours"
            assert torch.allclose(alone_lp[0], mixed_lp[2], rtol=1e-5, atol=1e-6), f"{label}: row 3's log-probs change with its neighbours"
with open(os.path.join(os.environ["OK_DIR"], f"report{rank}.json"), "w") as file:
    json.dump({"rank": rank, **report}, file)
dist.barrier()
open(os.path.join(os.environ["OK_DIR"], f"rank{rank}.ok"), "w").close()
