"""Fused attribution on one batch of recipe-like mixed lengths, against a log-prob pass over
the same rows in length-sorted micro-batches: the GPU counterpart of `verl_pass.py` for a
machine without verl.

    python benchmarks/mixed_lengths.py --config cuda [--rows 64] [--pairs 5]   # on a GPU
    python benchmarks/mixed_lengths.py --config cpu --rows 8 --scale 8         # a smoke run

Lengths: the MATH-like draw of `recipe_shapes.py` (prompts 100-400, responses log-normal
with mean 850, at most 3072; at least 16 here, so every row has reasoning and an 8-token
answer) divided by `--scale`. The baseline is verl's old-log-prob pass as it runs with
`use_dynamic_bsz` and without remove-padding: rows in micro-batches of at most
`--budget` tokens, each padded to its own longest row, one no-grad forward with full
logits, log-softmax in float32, a gather. With `use_remove_padding=True` verl packs the rows
(flash-attention's varlen kernels) and computes only the real tokens; the padding share of
each side is printed, so the ratio against that pass can be bounded from these figures.
The fused methods (`core.attribution.fused_attribution`) return the same log-probs plus the
scores; their time over the baseline's is the cost of attribution on top of the pass it
replaces, minus one (median and quartiles of interleaved pairs, `attribution.paired_ratios`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import CONFIGS, Meter, build, memory, paired_ratios, ratio_text  # noqa: E402
from recipe_shapes import SHAPES, sample_lengths  # noqa: E402

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments  # noqa: E402
from oar_verl.core.attribution import fused_attribution  # noqa: E402
from oar_verl.core.attribution.chunks import plan_chunks  # noqa: E402

ANSWER = 8  # answer tokens at the end of each response
MINIMUM_RESPONSE = 16
TokenLists = tuple[list[list[int]], list[list[int]]]


def mixed_token_lists(rows: int, scale: int, vocab: int, seed: int = 0) -> TokenLists:
    """(prompt ids, response ids) of `rows` random-token rows with MATH-like lengths / `scale`."""
    _, mean, maximum = SHAPES["MATH-like (7B recipe)"]
    generator = torch.Generator().manual_seed(seed)
    prompts, responses = sample_lengths(rows, mean, maximum, generator)
    prompts, responses = (prompts // scale).clamp(min=4), (responses // scale).clamp(min=MINIMUM_RESPONSE)
    prompt_ids = [torch.randint(1, vocab, (int(n),), generator=generator).tolist() for n in prompts]
    return prompt_ids, [torch.randint(1, vocab, (int(n),), generator=generator).tolist() for n in responses]


def batch_and_segments(tokens: TokenLists, device: str) -> tuple[ResponseBatch, Segments]:
    """The rows as one batch (left-padded prompts, right-padded responses: [B, P + R]) and their
    segments: the last `ANSWER` tokens of each response are its answer, after two marker tokens."""
    batch = ResponseBatch.from_token_lists(*tokens, pad_token_id=0, device=device)
    end = torch.tensor([len(response) for response in tokens[1]], device=device)
    return batch, Segments(end - ANSWER - 2, end - ANSWER, end, torch.ones(len(end), dtype=torch.bool, device=device))


def micro_batches(tokens: TokenLists, budget: int, device: str) -> list[tuple[list[int], ResponseBatch]]:
    """The rows in length-sorted micro-batches of at most `budget` tokens, each padded to its
    own longest prompt and response (`chunks.plan_chunks`): (row indices, micro-batch) each."""
    prompts, responses = (torch.tensor([len(ids) for ids in side]) for side in tokens)
    chunks = [chunk.tolist() for chunk in plan_chunks(prompts, responses, torch.arange(len(prompts)), budget)]
    return [
        (rows, ResponseBatch.from_token_lists([tokens[0][i] for i in rows], [tokens[1][i] for i in rows], pad_token_id=0, device=device))
        for rows in chunks
    ]


def log_prob_pass(model, micro: list[tuple[list[int], ResponseBatch]]) -> list[torch.Tensor]:
    """verl's old-log-prob pass without remove-padding: per micro-batch, full logits, float32
    log-softmax, the response tokens' log-probs gathered ([b, R_m] each)."""
    outputs = []
    with torch.no_grad():
        for _, batch in micro:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
            logits = logits[:, batch.prompt_length - 1 : -1].float()
            outputs.append(torch.log_softmax(logits, dim=-1).gather(2, batch.responses[..., None])[..., 0])
            del logits
    return outputs


def methods(budget: int) -> list[tuple[str, GradientConfig | PerturbationConfig, float | None]]:
    """(label, config, the bound set for its cost beyond the pass, if any) of each fused method."""
    taylor = PerturbationConfig(target="answer_mean", perturbation_id=0, max_tokens_per_pass=budget, mode="taylor")
    return [
        ("OAR-G answer_mean (KL)", GradientConfig(target="answer_mean", max_tokens_per_pass=budget), 2.3),
        ("OAR-G every_answer (KL)", GradientConfig(target="every_answer", max_tokens_per_pass=budget), 2.3),
        ("OAR-G answer_logprob", GradientConfig(target="answer_logprob", max_tokens_per_pass=budget), 1.3),
        ("OAR-P taylor answer_mean, 4 directions", taylor, None),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/mixed_lengths.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu", help="model shape and dtype, as attribution.py's (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=64, help="responses in the batch (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=1, help="lengths divided by this (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=16384, help="tokens per micro-batch and per attribution pass (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved timing pairs per method (default: %(default)s)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing on, as the recipes' actors (attribution's backward honours it; default: off)")  # fmt: skip
    args = parser.parse_args(argv)
    setup = CONFIGS[args.config]
    device = "cuda" if args.config == "cuda" else "cpu"
    torch.set_grad_enabled(True)
    model = build(setup, device)
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tokens = mixed_token_lists(args.rows, args.scale, setup.vocab)
    batch, segments = batch_and_segments(tokens, device)
    micro = micro_batches(tokens, args.budget, device)
    real = sum(len(p) + len(r) for p, r in zip(*tokens))
    padded = sum(m.input_ids.numel() for _, m in micro)
    lengths = torch.tensor([len(r) for r in tokens[1]]).float()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; model: hidden {setup.hidden}, {setup.layers} layers, vocab {setup.vocab}, {setup.dtype}, "
          f"gradient checkpointing {'on' if args.checkpointing else 'off'}")  # fmt: skip
    print(f"batch: {args.rows} rows, responses mean {lengths.mean():.0f} (min {lengths.min():.0f}, max {lengths.max():.0f}), {real:,} real tokens")
    print(f"baseline: {len(micro)} micro-batches of <= {args.budget} tokens, {padded:,} tokens ({padded / real:.3f}x the real ones)")
    per_micro_batch, base, base_peak = Meter(device, repeats=args.pairs)(lambda: log_prob_pass(model, micro))
    reference = torch.zeros(batch.responses.shape, device=device)
    for (rows, m), log_probs in zip(micro, per_micro_batch):
        reference[rows, : m.response_length] = log_probs * m.response_mask
    print(f"  log-prob pass: {base:.3f} s, {memory(base_peak)}")
    for label, config, bound in methods(args.budget):
        fused = fused_attribution(config)
        ratios = paired_ratios(lambda: log_prob_pass(model, micro), lambda: fused(model, batch, segments, config), args.pairs, device)
        output, _, peak = Meter(device, repeats=1)(lambda: fused(model, batch, segments, config))
        difference = float((output.log_probs - reference).abs().max())
        print(f"  {label:<40} {ratio_text(ratios, bound)}, {memory(peak)}; log-probs max diff {difference:.2e}")
    print(f"verl's pass with remove-padding computes the {real:,} real tokens only: scaling the baseline by its token count, "
          f"the cost beyond that pass is about (ratio x {padded / real:.3f}) - 1")  # fmt: skip


if __name__ == "__main__":
    main()
