"""Rank script, run by `tests.torchrun.run_ranks` on each process: Fused OAR-G log-probs against verl's FSDP engine on the CPU backend (tests/verl_cpu/test_fused_numerics.py)."""

import json
import os

import torch
from verl.trainer.config import CheckpointConfig
from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
from verl.workers.engine import EngineRegistry

from oar_verl.core import GradientConfig, PerturbationConfig
from oar_verl.core.attribution import fused_attribution
from oar_verl.integration.backends import engine_autocast, verl_log_prob_fn
from tests.ranks.fused_batch import P, R, batch, largest, path, segments, tokenizer, verl_pass


def fused_pass(engine, temperature, config):
    with engine.eval_mode(), engine_autocast(engine):
        result = fused_attribution(config)(
            engine.module, batch, segments, config, temperature=temperature, log_prob_fn=verl_log_prob_fn(engine, False)
        )
    return [result.log_probs, result.entropy]


FUSED = [GradientConfig(max_tokens_per_pass=rows * (P + R)) for rows in (1, 2, 6)] + [
    GradientConfig(target="answer_logprob", max_tokens_per_pass=2 * (P + R)),
    PerturbationConfig(perturbation_id=tokenizer.pad_token_id, mode="taylor", taylor_top=2, max_tokens_per_pass=3 * (P + R)),
]

report = {}
for dtype in ("fp32", "bf16"):
    engine = EngineRegistry.new(
        model_type="language_model",
        backend="fsdp2",
        checkpoint_config=CheckpointConfig(),
        optimizer_config=FSDPOptimizerConfig(lr=1e-5),
        model_config=HFModelConfig(path=path, use_remove_padding=False, override_config={"attn_implementation": "sdpa"}),
        engine_config=FSDPEngineConfig(
            strategy="fsdp2",
            forward_only=False,
            model_dtype="fp32",
            use_torch_compile=False,
            mixed_precision={"param_dtype": dtype, "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
        ),
    )
    engine.initialize()
    assert engine._autocast_dtype == (torch.float32 if dtype == "fp32" else torch.bfloat16)
    for temperature in (0.6, 1.0, 1.2):
        verl = [verl_pass(engine, temperature, micro, use_remove_padding=False) for micro in (1, 2, 3, 6)]
        fused = [fused_pass(engine, temperature, config) for config in FUSED]
        for k, name in enumerate(("log_probs", "entropy")):
            own = largest([(a[k], b[k]) for a in verl for b in verl])
            versus = largest([(a[k], b[k]) for a in fused for b in verl])
            report[f"{dtype} T={temperature} {name}"] = (own, versus)
            assert versus <= own, f"{dtype}, T={temperature}: fused {name} differ from verl's by {versus}, verl's own passes by {own}"
print("REPORT", json.dumps(report))
open(os.path.join(os.environ["OK_DIR"], "rank0.ok"), "w").close()
