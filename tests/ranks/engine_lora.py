"""Rank script (tests/verl_cpu/test_engine_attribution.py): OAR-G through verl's FSDP2 engine
on a LoRA actor (`lora_rank` > 0: verl wraps the model in a PEFT adapter) attributes the
adapted model: its scores equal the brute-force definition on the model with the adapter
merged, and differ from the base model's. One gloo rank, remove-padding, fp32."""

import json
import os

import torch
from peft import LoraConfig, get_peft_model
from torch.distributed.tensor import distribute_tensor
from transformers import AutoModelForCausalLM
from verl.trainer.config import CheckpointConfig
from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
from verl.workers.engine import EngineRegistry

from oar_verl.core import GradientConfig
from oar_verl.integration.engine_attribution import EngineAttribution, RowSpec
from tests.core import reference
from tests.ranks.fused_batch import B, P, R, batch, lengths, path, segments, tokenizer

RANK, ALPHA = 4, 8
engine = EngineRegistry.new(
    model_type="language_model",
    backend="fsdp2",
    checkpoint_config=CheckpointConfig(),
    optimizer_config=FSDPOptimizerConfig(lr=1e-5),
    model_config=HFModelConfig(
        path=path, use_remove_padding=True, enable_gradient_checkpointing=True, lora_rank=RANK, lora_alpha=ALPHA,
        target_modules="all-linear", override_config={"attn_implementation": "sdpa"},
    ),
    engine_config=FSDPEngineConfig(
        strategy="fsdp2", forward_only=False, model_dtype="fp32", use_torch_compile=False,
        mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
    ),
)  # fmt: skip
engine.initialize()
generator = torch.Generator().manual_seed(1)
adapter = {}
with torch.no_grad():  # a trained-looking adapter (verl initialises lora_B to zero: the adapted model would be the base)
    for name, parameter in engine.module.named_parameters():
        if "lora_B" in name:
            values = torch.randn(parameter.shape, generator=generator) * 0.3
            parameter.copy_(distribute_tensor(values, parameter.device_mesh, parameter.placements))
        if "lora_" in name:
            adapter[name] = parameter.full_tensor().clone()

prompts = [batch.input_ids[b, P - p :].tolist()[:p] for b, (p, _) in enumerate(lengths)]
responses = [batch.responses[b, :r].tolist() for b, (_, r) in enumerate(lengths)]
rows = [
    RowSpec(b, prompts[b] + responses[b], len(prompts[b]), *(int(getattr(segments, k)[b]) for k in ("reasoning_end", "answer_start", "answer_end")))
    for b in range(B)
]
config = GradientConfig(target="answer_logprob", noise_std=0.0, max_tokens_per_pass=2 * (P + R))
scores = EngineAttribution(engine, config, True, tokenizer.pad_token_id).scores(rows, B, R, None)

base = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", torch_dtype=torch.float32).eval()
adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", torch_dtype=torch.float32),
                         LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules="all-linear", lora_dropout=0.0))  # fmt: skip
missing = set(adapter) - {name for name, _ in adapted.named_parameters()}
assert not missing, f"adapter parameters the reference lacks: {sorted(missing)[:3]}"
with torch.no_grad():
    for name, parameter in adapted.named_parameters():
        if name in adapter:
            parameter.copy_(adapter[name])
merged = adapted.merge_and_unload().eval()


def definition(model) -> torch.Tensor:
    expected = torch.zeros_like(scores)
    for b in range(B):
        args = (prompts[b], responses[b], rows[b].reasoning_end, rows[b].answer_start, rows[b].answer_end)
        p, r = len(prompts[b]), len(responses[b])
        expected[b, : rows[b].reasoning_end] = reference.oar_g(model, *args, "answer_logprob", torch.zeros(p + r, model.config.hidden_size))
    return expected


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


report = {"vs adapted": relative(scores, definition(merged)), "vs base": relative(scores, definition(base))}
assert report["vs adapted"] < 1e-4, report
assert report["vs base"] > 1e-2, report
with open(os.path.join(os.environ["OK_DIR"], "report0.json"), "w") as file:
    json.dump(report, file)
open(os.path.join(os.environ["OK_DIR"], "rank0.ok"), "w").close()
