"""Attribution through verl's engine against verl's own old-log-prob pass, on the recipes'
layout: verl's FSDP2 engine on the CPU backend (one gloo rank, no Ray), packed rows
(`use_remove_padding=True`), dynamic batch sizes, activation checkpointing.

    python benchmarks/verl_pass.py [--pairs 5] [--rows 64] [--scale 8]

For each recipe shape of `recipe_shapes.py` (GSM8K-like: prompts 100-400, responses
log-normal with mean 250, at most 1024; MATH-like: mean 850, at most 3072), lengths,
`--rows` and the token budgets divided by `--scale` (verl's 32768 tokens a log-prob
micro-batch, OAR's 16384 a pass), prints

- tokens: the real tokens (what verl's packed pass computes), what each attribution pass
  computes (engine path: the attributed rows packed, each up to its last answer token; the
  project's own forward, the path before: length-aware padded chunks), as ratios;
- FLOPs of one step at the real models' sizes (Qwen2.5-0.5B for GSM8K, -7B for MATH),
  counted from the token counts: a forward is 2 x the non-embedding parameters per token
  plus attention, plus the head (verl's pass: every token; attribution: the 3 answer
  positions of each row), an input-only backward the same again (no weight gradients);
- time: median [quartiles] of interleaved pairs (`attribution.paired_ratios`) of verl's
  pass alone and verl's pass followed by the engine's attribution passes (OAR-G
  `answer_mean`, `answer_logprob`, OAR-P taylor top 4), on a Qwen2 of hidden 256, 4 layers
  and the tests' byte vocabulary (260 ids: the head's share is far below a 151k
  vocabulary's), float32. The CPU has no varlen attention kernel: packed rows run as one
  sequence with a block-diagonal mask, so these are ratios against verl's own packed pass
  on the same machine, not GPU figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL_MODELS = {  # hidden, layers, intermediate, heads, kv heads, vocabulary
    "Qwen2.5-0.5B": (896, 24, 4864, 14, 2, 151936),
    "Qwen2.5-7B": (3584, 28, 18944, 28, 4, 152064),
}
SHAPE_MODELS = {"GSM8K-like (0.5B recipe)": "Qwen2.5-0.5B", "MATH-like (7B recipe)": "Qwen2.5-7B"}


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


def step_flops(model: str, lengths: list[int], needed: list[int], answers: int, passes: dict[str, float]) -> dict[str, float]:
    """FLOPs of verl's pass over rows of `lengths` tokens (the head on every token), and of
    each method's attribution passes over the `needed` tokens (`passes`: forwards +
    input-only backwards per row; the head on each row's `answers` answer positions only)."""
    hidden, layers, intermediate, heads, kv_heads, vocab = REAL_MODELS[model]
    head_dim = hidden // heads
    per_layer = 2 * (hidden * hidden * 2 + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate)  # projections and MLP
    head = 2 * hidden * vocab

    def forward(rows: list[int], head_tokens) -> float:
        return sum(
            n * layers * per_layer + head_tokens(n) * head + layers * 2 * 2 * hidden * n * n / 2 for n in rows
        )  # causal attention: half the square

    verl = forward(lengths, lambda n: n)
    attribution = forward(needed, lambda n: answers)
    return {"verl": verl, **{name: count * attribution for name, count in passes.items()}}


def run(args) -> None:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import torch
    import torch.distributed as dist
    import verl  # noqa: F401  (the plugin: the cpu platform and engines)
    from attribution import paired_ratios
    from recipe_shapes import SHAPES, length_aware_tokens, sample_lengths
    from tensordict import TensorDict
    from verl.trainer.config import CheckpointConfig
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine import EngineRegistry

    from oar_verl.core import GradientConfig, PerturbationConfig
    from oar_verl.integration.engine_attribution import EngineAttribution, RowSpec, row_fields
    from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    tokenizer = byte_tokenizer()
    path = Path(tempfile.mkdtemp()) / "model"
    tiny_qwen2(len(tokenizer), hidden_size=256, num_layers=4, max_positions=1024, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    engine = EngineRegistry.new(
        model_type="language_model", backend="fsdp2", checkpoint_config=CheckpointConfig(), optimizer_config=FSDPOptimizerConfig(lr=1e-5),
        model_config=HFModelConfig(path=str(path), use_remove_padding=True, enable_gradient_checkpointing=True, override_config={"attn_implementation": "sdpa"}),
        engine_config=FSDPEngineConfig(strategy="fsdp2", forward_only=False, model_dtype="fp32", use_torch_compile=False,
                                       mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}),
    )  # fmt: skip
    engine.initialize()
    verl_tokens, oar_tokens = 32768 // args.scale, 16384 // args.scale
    methods = {  # name: (config, attribution passes counted in forward-equivalents: forwards + input-only backwards)
        "OAR-G answer_mean": (GradientConfig(target="answer_mean", max_tokens_per_pass=oar_tokens), 2.0),
        "OAR-G answer_logprob": (GradientConfig(target="answer_logprob", noise_std=0.0, max_tokens_per_pass=oar_tokens), 2.0),
        "OAR-P taylor top 4": (PerturbationConfig(target="answer_mean", mode="taylor", taylor_top=4, perturbation_id=tokenizer.pad_token_id,
                                                  max_tokens_per_pass=oar_tokens), 5.0),
    }  # fmt: skip
    for shape, (_, mean, maximum) in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        prompt_lengths, response_lengths = sample_lengths(args.rows, mean, maximum, generator)
        prompt_lengths = (prompt_lengths // args.scale).clamp(min=1)
        response_lengths = (response_lengths // args.scale).clamp(min=6)
        prompts = [torch.randint(0, 250, (int(p),), generator=generator).tolist() for p in prompt_lengths]
        responses = [torch.randint(0, 250, (int(r),), generator=generator).tolist() for r in response_lengths]
        segments = torch.stack([response_lengths - 4, response_lengths - 3, response_lengths - 1, torch.ones_like(response_lengths)], dim=1)
        rows = [RowSpec(b, p + r, len(p), *segments[b, :3].tolist()) for b, (p, r) in enumerate(zip(prompts, responses))]
        real = int((prompt_lengths + response_lengths).sum())
        needed = [len(row.needed) for row in rows]
        before, chunks = length_aware_tokens(prompt_lengths, response_lengths - 2, oar_tokens)  # the own forward's padded chunks, to the answer
        print(
            f"\n{shape}, / {args.scale}: {len(rows)} rows, real tokens {real}; verl {verl_tokens} tokens a micro-batch, OAR {oar_tokens} a pass",
            flush=True,
        )
        print(
            f"  attribution pass tokens / real tokens: engine (packed) {sum(needed) / real:.3f}, own forward before (padded chunks) {before / real:.3f}"
        )
        full_prompts, full_responses = sample_lengths(SHAPES[shape][0], mean, maximum, torch.Generator().manual_seed(0))
        full_lengths = (full_prompts + full_responses).tolist()
        full_needed = (full_prompts + full_responses - 2).tolist()
        flops = step_flops(SHAPE_MODELS[shape], full_lengths, full_needed, 3, {name: count for name, (_, count) in methods.items()})
        print(f"  FLOPs of a step at full size ({SHAPE_MODELS[shape]}, {len(full_lengths)} rows): verl's pass {flops['verl']:.3g}; "
              + ", ".join(f"{name} {(flops['verl'] + flops[name]) / flops['verl']:.2f}x" for name in methods))  # fmt: skip

        def request() -> TensorDict:
            data = TensorDict(
                {
                    "input_ids": torch.nested.as_nested_tensor([torch.tensor(p + r) for p, r in zip(prompts, responses)], layout=torch.jagged),
                    "position_ids": torch.nested.as_nested_tensor([torch.arange(len(p) + len(r)) for p, r in zip(prompts, responses)], layout=torch.jagged),
                    "loss_mask": torch.nested.as_nested_tensor([torch.ones(len(p) + len(r), dtype=torch.long) for p, r in zip(prompts, responses)], layout=torch.jagged),
                },
                batch_size=[len(rows)],
            )  # fmt: skip
            for key, values in row_fields([len(p) for p in prompts], segments).items():
                data[key] = values
            tu.assign_non_tensor(data, temperature=1.0, calculate_entropy=True, compute_loss=False, use_remove_padding=True,
                                 use_dynamic_bsz=True, max_token_len_per_gpu=verl_tokens, use_fused_kernels=False)  # fmt: skip
            return data

        def verl_pass(loss_function=None) -> None:
            with engine.eval_mode():
                engine.infer_batch(request(), loss_function=loss_function)

        def with_attribution(config):
            def run_both() -> None:
                attribution = EngineAttribution(engine, config, True, tokenizer.pad_token_id)
                with attribution.clean_target_recorder() as recorder:
                    verl_pass(recorder)
                attribution.scores(rows, len(rows), int(response_lengths.max()), recorder.clean if recorder else None)

            return run_both

        for name, (config, _) in methods.items():
            median, lower, upper = paired_ratios(verl_pass, with_attribution(config), args.pairs, "cpu")
            print(f"  time, verl's pass + {name:22s} {median:5.2f}x verl's pass alone [{lower:.2f}, {upper:.2f}]", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
