"""Memory of an OAR-G attribution pass: a model of it, checked against CPU measurements
at two model shapes, and its figures for the recipes' models and GPUs.

    python benchmarks/attribution_memory.py            # a few minutes on 2 CPU cores

The pass that bounds attribution memory is OAR-G's noisy forward with autograd and its
backward to the input embeddings (OAR-P's passes and the clean passes keep no graph). Per
token of the pass, with b bytes per element of the compute dtype, H the hidden size, K
the key/value width (key/value heads x head size), I the intermediate size, N layers:

    A = 8H + b (7H + 2K + 4I)   a Qwen2/Llama decoder layer's tensors kept for the backward:
                                each RMSNorm's float32 copy of its input (4H, none when the
                                model computes in float32) and normalised input (bH), the
                                q/k/v input, rotated q and k, v, the attention output and
                                o_proj's input (b(4H + 2K)), the MLP's input, gate,
                                activation, up and product (b(H + 4I))
    E = 4H + 5bH                outside the layers: the float32 noise, the embeddings (a
                                leaf), their gradient, the noisy input, the last hidden
                                state's gradient
    no checkpointing:   N A + E bytes per token
    checkpointing:      N bH + A + E (each layer keeps its input; one layer is recomputed
                        at a time in the backward)

On the CPU the attention of `sdpa` with a mask (math kernel) also keeps its probabilities,
heads x S x b per token for sequences of S tokens in every layer without checkpointing
(flash / memory-efficient kernels on GPUs keep none); the measurement adds that term to
the model. Fixed costs beside the per-token ones: the gathered embeddings and output head
(2 V H b) and, in fused OAR-G, the log-prob pass's logits (`chunks.LOGIT_TOKENS`
positions at a time, at most about 20 bytes per logit with their float32 log-softmax and
entropy temporaries).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from attribution import build, cpu_peak_memory

from oar_verl.core import GradientConfig, ResponseBatch, Segments
from oar_verl.core.attribution import chunks, gradient


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    dtype: torch.dtype = torch.float32  # of the measured models (`attribution.build` reads it)

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    def layer_bytes(self, b: int) -> int:
        """A: bytes per token one layer keeps for the backward."""
        float32_copies = 8 * self.hidden if b < 4 else 0
        return float32_copies + b * (7 * self.hidden + 2 * self.kv_width + 4 * self.intermediate)

    def bytes_per_token(self, b: int, checkpointing: bool, sequence: int = 0) -> int:
        """Bytes per token of the noisy forward + backward; `sequence` > 0 adds the math
        attention kernel's probabilities (CPU) for sequences of that many tokens."""
        attention = self.heads * sequence * b
        outside = 4 * self.hidden + 5 * b * self.hidden
        if checkpointing:
            return self.layers * b * self.hidden + self.layer_bytes(b) + attention + outside
        return self.layers * (self.layer_bytes(b) + attention) + outside


MEASURED = (
    Shape("small", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704, vocab=1024),
    Shape("wide", hidden=512, layers=6, heads=8, kv_heads=2, intermediate=1408, vocab=1024),
)
SEQUENCE = 128  # tokens per sequence in the measurements
BUDGETS = (1024, 2048)  # tokens per pass: the slope between them is the per-token cost

RECIPES = (  # (recipe, model shape, GPUs)
    ("gsm8k_qwen2.5-0.5b", Shape("Qwen2.5-0.5B-Instruct", 896, 24, 14, 2, 4864, 151936), 1),
    ("math_qwen2.5-math-1.5b", Shape("Qwen2.5-Math-1.5B", 1536, 28, 12, 2, 8960, 151936), 8),
    ("math_gsm8k_qwen2.5-math-7b", Shape("Qwen2.5-Math-7B", 3584, 28, 28, 4, 18944, 152064), 8),
)
GPU_MEMORY_GIB = (24, 40, 80, 141)
USABLE = 0.8  # share of a GPU's memory attribution may plan on (the rest: allocator slack, workspace, NCCL buffers)
PARAMETERS = {"Qwen2.5-0.5B-Instruct": 0.49e9, "Qwen2.5-Math-1.5B": 1.54e9, "Qwen2.5-Math-7B": 7.62e9}


def model_of(shape: Shape, checkpointing: bool):
    """The benchmark's random-weight Qwen2 of `shape` (`attribution.build`), on the CPU."""
    model = build(shape, "cpu")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def pass_peak(model, shape: Shape, rows: int) -> int:
    """Peak bytes of `gradient.attribute` on `rows` sequences of SEQUENCE tokens, one pass."""
    generator = torch.Generator().manual_seed(rows)
    prompts = [torch.randint(0, shape.vocab, (8,), generator=generator).tolist() for _ in range(rows)]
    responses = [torch.randint(0, shape.vocab, (SEQUENCE - 8,), generator=generator).tolist() for _ in range(rows)]
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=0)
    end = torch.full((rows,), SEQUENCE - 8)
    segments = Segments(end - 6, end - 4, end, torch.ones(rows, dtype=torch.bool))
    config = GradientConfig(target="answer_mean", max_tokens_per_pass=rows * SEQUENCE)
    return cpu_peak_memory(lambda: gradient.attribute(model, batch, segments, config))


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python benchmarks/attribution_memory.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    print(f"device: CPU, {torch.get_num_threads()} threads; float32 (b = 4); sequences of {SEQUENCE} tokens; budgets {BUDGETS}")
    print("\nmeasured bytes per token (peak difference between the two budgets / token difference) vs the model:")
    for shape in MEASURED:
        for checkpointing in (False, True):
            model = model_of(shape, checkpointing)
            peaks = [pass_peak(model, shape, budget // SEQUENCE) for budget in BUDGETS]
            measured = (peaks[1] - peaks[0]) / (BUDGETS[1] - BUDGETS[0])
            predicted = shape.bytes_per_token(4, checkpointing, sequence=SEQUENCE)
            label = f"{shape.name} (H {shape.hidden}, I {shape.intermediate}, {shape.layers} layers), {'checkpointing' if checkpointing else 'no checkpointing'}"
            print(f"  {label:<62} measured {measured:9.0f} B   model {predicted:9.0f} B   ratio {measured / predicted:5.2f}"
                  f"   (peaks {peaks[0] / 2**20:.1f} / {peaks[1] / 2**20:.1f} MiB)")  # fmt: skip

    budget = GradientConfig().max_tokens_per_pass
    print(f"\nrecipes, bf16 (b = 2), GPU attention kernels (no probabilities kept); default budget {budget} tokens;")
    print(
        f"largest budget in {USABLE:.0%} of a GPU's memory beside the sharded actor state (fp32 parameters, gradients, Adam: 16 B per parameter / GPUs), the gathered"
    )
    print("embeddings and head, and the log-prob logits (vLLM asleep during the old-log-prob step, as verl's colocated rollout is):")
    print(
        f"  {'recipe':<28} {'checkpointing':<14} {'MiB/token':>9} {'GiB at default':>15}  "
        + "  ".join(f"{memory:>4} GiB" for memory in GPU_MEMORY_GIB)
    )
    for recipe, shape, gpus in RECIPES:
        fixed = 2 * shape.vocab * shape.hidden * 2 + 20 * chunks.LOGIT_TOKENS * shape.vocab
        state = 16 * PARAMETERS[shape.name] / gpus
        for checkpointing in (True, False):
            per_token = shape.bytes_per_token(2, checkpointing)
            fits = [max(int((memory * 2**30 * USABLE - state - fixed) // per_token), 0) for memory in GPU_MEMORY_GIB]
            print(f"  {recipe:<28} {'on' if checkpointing else 'off':<14} {per_token / 2**20:9.3f} {(budget * per_token + fixed) / 2**30:15.1f}  "
                  + "  ".join(f"{tokens:>8}" for tokens in fits))  # fmt: skip


if __name__ == "__main__":
    main()
