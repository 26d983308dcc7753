"""The checks a session with a lent GPU runs, in one command, in at most a few minutes.

    python benchmarks/gpu_check.py --out gpu_check.json             # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --small --out x.json  # a smoke run here

(a) numerics on the device, float32 and bf16: fused OAR-G (`answer_mean`, `answer_logprob`)
    and fused taylor against their unfused runs (scores) and against a plain forward's
    log-probs; exact OAR-P against the definition (one full forward per reasoning token);
    a mixed-length batch, so the length-aware chunks are exercised;
(b) memory: peak bytes of OAR-G's noisy pass at two budgets on a Qwen2.5-0.5B-shaped model
    (random weights, bf16, gradient checkpointing), their slope per token against the
    memory model of `benchmarks/attribution_memory.py`, and the peak at 16384 tokens;
Not yet here: attribution through verl's FSDP2 engine built on one GPU without Ray (pi_old
against the engine's own pass, packed, bf16; `tests/verl_cpu/test_engine_attribution.py`
does it on the CPU backend): the device machine has no verl, and Ray's wheel is over what a
run can carry. Every figure goes to the JSON file; a check that cannot run records why. Never part of CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution_memory import Shape  # noqa: E402

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments  # noqa: E402
from oar_verl.core.attribution import attribute, gradient, taylor  # noqa: E402
from oar_verl.core.attribution.chunks import response_log_probs  # noqa: E402
from oar_verl.core.models import log_probs_and_entropy, model_parts  # noqa: E402
from oar_verl.tiny.models import tiny_qwen2  # noqa: E402

QWEN_0_5B = Shape("Qwen2.5-0.5B", 896, 24, 14, 2, 4864, 151936)


def mixed_batch(vocab: int, device: str, lengths: list[tuple[int, int]]) -> tuple[ResponseBatch, Segments]:
    """Random prompts and responses of the given (prompt, response) lengths; each response
    ends with reasoning, a one-token bridge, a two-token answer and a one-token tail."""
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (p,), generator=generator).tolist() for p, _ in lengths]
    responses = [torch.randint(3, vocab, (r,), generator=generator).tolist() for _, r in lengths]
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=0, device=device)
    n = torch.tensor([r for _, r in lengths])
    segments = Segments(n - 4, n - 3, n - 1, torch.ones(len(lengths), dtype=torch.bool)).to(device)
    return batch, segments


def largest_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def plain_log_probs(model, batch: ResponseBatch) -> torch.Tensor:
    """[B, R] float32 log-probs of the response tokens from one forward of the whole batch."""
    parts = model_parts(model)
    with torch.no_grad():
        hidden = parts.hidden_states(parts.embed(batch.input_ids), batch.attention_mask, batch.position_ids)
        values, _ = response_log_probs(
            parts, hidden, batch.responses, batch.prompt_length, 1.0, lambda logits, tokens: log_probs_and_entropy(parts, logits, tokens)
        )
    return values * batch.response_mask


def oar_p_definition(model, batch: ResponseBatch, segments: Segments, row: int, perturbation_id: int) -> torch.Tensor:
    """[reasoning_end] exact OAR-P (`answer_mean`) of one row by the definition: its real
    tokens alone, one full forward per perturbed reasoning token, full logits."""
    real = batch.attention_mask[row].bool()
    ids = batch.input_ids[row][real][None]
    P = int(real[: batch.prompt_length].sum())
    start, end = int(segments.answer_start[row]), int(segments.answer_end[row])

    def target(sequence):
        logits = model(input_ids=sequence).logits[0].float()
        return torch.log_softmax(logits[P + start - 1 : P + end - 1].mean(dim=0), dim=-1)

    with torch.no_grad():
        clean = target(ids)
        scores = []
        for t in range(int(segments.reasoning_end[row])):
            perturbed = ids.clone()
            perturbed[0, P + t] = perturbation_id
            other = target(perturbed)
            scores.append((clean.exp() * (clean - other)).sum().abs())
    return torch.stack(scores)


def numerics(device: str, small: bool) -> dict:
    """(a): relative differences, per dtype."""
    lengths = [(12, 60), (3, 14), (30, 120), (7, 33), (5, 9)] if not small else [(6, 20), (2, 9), (9, 30)]
    report = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_qwen2(1000, hidden_size=128, num_layers=4, seed=0, dtype=dtype).to(device).eval()
        batch, segments = mixed_batch(1000, device, lengths)
        budget = 2 * batch.input_ids.shape[1]
        entry = {}
        for target in ("answer_mean", "answer_logprob"):
            config = GradientConfig(target=target, noise_std=0.0 if target == "answer_logprob" else 1e-3, max_tokens_per_pass=budget)
            fused = gradient.attribute_with_log_probs(model, batch, segments, config)
            entry[f"oar_g_{target}_fused_vs_unfused_scores"] = largest_relative(fused.scores, gradient.attribute(model, batch, segments, config))
            entry[f"oar_g_{target}_fused_vs_forward_log_probs"] = float((fused.log_probs - plain_log_probs(model, batch)).abs().max())
        config = PerturbationConfig(mode="taylor", target="answer_logprob", perturbation_id=0, max_tokens_per_pass=budget)
        entry["taylor_fused_vs_unfused_scores"] = largest_relative(
            taylor.attribute_with_log_probs(model, batch, segments, config).scores, taylor.attribute(model, batch, segments, config)
        )
        exact = attribute(model, batch, segments, PerturbationConfig(target="answer_mean", perturbation_id=0, max_tokens_per_pass=budget))
        entry["oar_p_exact_vs_definition"] = max(
            largest_relative(exact[row, : int(segments.reasoning_end[row])], oar_p_definition(model, batch, segments, row, 0))
            for row in range(len(lengths))
        )
        report[str(dtype).replace("torch.", "")] = entry
    return report


def peak_bytes(fn, device: str) -> int | None:
    """Peak bytes allocated by `fn` on a CUDA device (None elsewhere)."""
    if not device.startswith("cuda"):
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def memory(device: str, small: bool) -> dict:
    """(b): bytes per token of OAR-G's noisy pass (slope between two budgets) vs the model."""
    if not device.startswith("cuda"):
        return {"skipped": "peak memory is measured on CUDA only"}
    shape = QWEN_0_5B if not small else Shape("small", 256, 4, 4, 2, 704, 4096)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate, tie_word_embeddings=True)  # fmt: skip
    model = Qwen2ForCausalLM(config).to(device=device, dtype=torch.bfloat16).eval()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    sequence = 1024
    peaks = {}
    for tokens in (8192, 16384):
        rows = tokens // sequence
        batch, segments = mixed_batch(shape.vocab, device, [(24, sequence - 24)] * rows)
        settings = GradientConfig(target="answer_mean", max_tokens_per_pass=tokens)
        peaks[tokens] = peak_bytes(lambda: gradient.attribute(model, batch, segments, settings), device)
    slope = (peaks[16384] - peaks[8192]) / 8192
    predicted = shape.bytes_per_token(2, checkpointing=True)
    return {
        "shape": shape.name,
        "sequence": sequence,
        "peak_bytes": peaks,
        "bytes_per_token": slope,
        "model_bytes_per_token": predicted,
        "ratio": slope / predicted,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="smaller shapes, for a smoke run on the CPU (default: the full shapes)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures (required)")
    args = parser.parse_args(argv)
    report = {"machine": platform.platform(), "torch": torch.__version__, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}  # fmt: skip
    for name, check in (("numerics", numerics), ("memory", memory)):
        start = time.perf_counter()
        try:
            report[name] = check(args.device, args.small)
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        report[name + "_seconds"] = time.perf_counter() - start
        args.out.write_text(json.dumps(report, indent=1))
        print(name, json.dumps(report[name], indent=1), flush=True)


if __name__ == "__main__":
    main()
