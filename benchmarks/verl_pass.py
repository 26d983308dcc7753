"""Fused attribution against verl's own old-log-prob pass, as the recipes configure it, on one
batch of recipe-like mixed lengths: verl's FSDP2 engine on the CPU backend (one gloo rank,
no Ray), `use_dynamic_bsz=True` with `log_prob_max_token_len_per_gpu`, against fused OAR-G
(`answer_mean`, `answer_logprob`) and fused OAR-P taylor (top 4) through the same engine.

    python benchmarks/verl_pass.py [--pairs 5] [--rows 64] [--scale 8]

Lengths: the MATH-like distribution of `recipe_shapes.py` (prompts 100-400, responses
log-normal with mean 850, at most 3072) divided by `--scale`, `--rows` responses (the 7B
recipe's 512 per rank divided by `--scale` too), the token budgets divided alike (verl's
32768 tokens per micro-batch, OAR's 16384 per pass). Model: a Qwen2 of hidden 256, 4
layers, the tests' byte vocabulary (260 ids: the output head's share of the cost is far
below a 151k vocabulary's). On the CPU verl's pass pads each micro-batch (packing needs
flash-attn), as the length-aware chunks do. Prints the median and quartiles of the
time ratio over interleaved pairs (`attribution.paired_ratios`), and the tokens each side
computes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/verl_pass.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="interleaved timing pairs per method (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=64, help="responses in the batch (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=8, help="lengths and budgets divided by this (default: %(default)s)")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:  # one gloo rank under torch.distributed.run, as verl's engine expects
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
        ]
        raise SystemExit(subprocess.run(command, env={**os.environ, "VERL_PLATFORM": "cpu"}, check=False).returncode)
    run(args)


def run(args) -> None:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import torch
    import torch.distributed as dist
    import verl  # noqa: F401  (the plugin: the cpu platform and engines)
    from attribution import paired_ratios
    from recipe_shapes import sample_lengths
    from tensordict import TensorDict
    from verl.trainer.config import CheckpointConfig
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine import EngineRegistry
    from verl.workers.utils.padding import left_right_2_no_padding

    from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments
    from oar_verl.core.attribution import fused_attribution
    from oar_verl.integration.backends import engine_autocast, verl_log_prob_fn
    from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    tokenizer = byte_tokenizer()
    path = Path(tempfile.mkdtemp()) / "model"
    tiny_qwen2(len(tokenizer), hidden_size=256, num_layers=4, max_positions=1024, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)

    generator = torch.Generator().manual_seed(0)
    prompt_lengths, response_lengths = sample_lengths(args.rows, 850, 3072, generator)
    prompt_lengths = (prompt_lengths // args.scale).clamp(min=1)
    response_lengths = (response_lengths // args.scale).clamp(min=6)
    batch = ResponseBatch.from_token_lists(
        [torch.randint(0, 250, (int(p),), generator=generator).tolist() for p in prompt_lengths],
        [torch.randint(0, 250, (int(r),), generator=generator).tolist() for r in response_lengths], pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    B, P = len(prompt_lengths), batch.prompt_length
    end = response_lengths
    segments = Segments(end - 4, end - 3, end - 1, torch.ones(B, dtype=torch.bool))
    engine = EngineRegistry.new(
        model_type="language_model", backend="fsdp2", checkpoint_config=CheckpointConfig(), optimizer_config=FSDPOptimizerConfig(lr=1e-5),
        model_config=HFModelConfig(path=str(path), use_remove_padding=False, override_config={"attn_implementation": "sdpa"}),
        engine_config=FSDPEngineConfig(strategy="fsdp2", forward_only=False, model_dtype="fp32", use_torch_compile=False,
                                       mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}),
    )  # fmt: skip
    engine.initialize()
    verl_tokens = 32768 // args.scale
    oar_tokens = 16384 // args.scale

    def verl_pass():
        data = TensorDict({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids,
                           "prompts": batch.input_ids[:, :P], "responses": batch.responses, "response_mask": batch.response_mask.long()}, batch_size=[B])  # fmt: skip
        data = left_right_2_no_padding(data)
        tu.assign_non_tensor(data, temperature=1.0, calculate_entropy=True, compute_loss=False, use_remove_padding=False,
                             use_dynamic_bsz=True, max_token_len_per_gpu=verl_tokens, micro_batch_size_per_gpu=None, use_fused_kernels=False)  # fmt: skip
        with engine.eval_mode():
            engine.infer_batch(data, loss_function=None)

    def fused(config):
        def run_fused():
            with engine.eval_mode(), engine_autocast(engine):
                fused_attribution(config)(engine.module, batch, segments, config, temperature=1.0, log_prob_fn=verl_log_prob_fn(engine, False))

        return run_fused

    real = int((prompt_lengths + response_lengths).sum())
    print(f"{B} rows, prompts {int(prompt_lengths.min())}-{int(prompt_lengths.max())}, responses mean {float(response_lengths.float().mean()):.0f} "
          f"max {int(response_lengths.max())}; real tokens {real}; padded batch {B * batch.input_ids.shape[1]}; verl {verl_tokens} tokens a micro-batch, "
          f"OAR {oar_tokens} a pass; {torch.get_num_threads()} thread", flush=True)  # fmt: skip
    methods = {
        "fused OAR-G answer_mean": GradientConfig(target="answer_mean", max_tokens_per_pass=oar_tokens),
        "fused OAR-G answer_logprob": GradientConfig(target="answer_logprob", max_tokens_per_pass=oar_tokens),
        "fused taylor top 4 (answer_mean)": PerturbationConfig(target="answer_mean", mode="taylor", taylor_top=4, perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=oar_tokens),
    }  # fmt: skip
    for name, config in methods.items():
        median, lower, upper = paired_ratios(verl_pass, fused(config), args.pairs, "cpu")
        print(f"{name:36s} {median:5.2f}x verl's pass [{lower:.2f}, {upper:.2f}]", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
