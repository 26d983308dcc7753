"""Rank script, run by `tests.torchrun.run_ranks` on each process: Fused OAR-G log-probs against verl's Megatron engine on the CPU backend (tests/verl_cpu/test_fused_numerics.py)."""

import json
import os

import torch.distributed as dist
from verl.trainer.config import CheckpointConfig
from verl.workers.config import HFModelConfig, McoreEngineConfig, McoreOptimizerConfig
from verl.workers.engine import EngineRegistry

from oar_verl.core import GradientConfig, PerturbationConfig
from oar_verl.core.attribution import fused_attribution
from oar_verl.integration.backends import engine_adapter
from tests.ranks.fused_batch import P, R, batch, largest, path, segments, tokenizer, verl_pass

engine = EngineRegistry.new(
    model_type="language_model",
    backend="megatron",
    checkpoint_config=CheckpointConfig(),
    optimizer_config=McoreOptimizerConfig(lr=1e-5, total_training_steps=10, lr_warmup_steps=0),
    model_config=HFModelConfig(path=path, use_remove_padding=True),
    engine_config=McoreEngineConfig(
        dtype="bfloat16",
        use_mbridge=True,
        vanilla_mbridge=True,
        forward_only=False,
        use_remove_padding=True,
        tensor_model_parallel_size=dist.get_world_size(),
        sequence_parallel=False,
        micro_batch_size_per_gpu=2,
        override_transformer_config={"attention_backend": "local", "sequence_parallel": False},
    ),
)
engine.initialize()
adapter = engine_adapter(engine)


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
    verl = [verl_pass(engine, temperature, micro, use_remove_padding=True, max_token_len_per_gpu=None) for micro in (1, 3, 6)]
    fused = [fused_pass(temperature, config) for config in FUSED]
    for k, name in enumerate(("log_probs", "entropy")):
        own = largest([(a[k], b[k]) for a in verl for b in verl])
        versus = largest([(a[k], b[k]) for a in fused for b in verl])
        report[f"T={temperature} {name}"] = (own, versus)
        assert versus <= own, f"T={temperature}: fused {name} differ from verl's by {versus}, verl's own passes by {own}"
print("REPORT", json.dumps(report))
open(os.path.join(os.environ["OK_DIR"], f"rank{dist.get_rank()}.ok"), "w").close()
