"""Cost of OAR attribution, measured in one run, each figure printed against its bound.

    python benchmarks/attribution.py --config cpu      # small model, 2 CPU cores: a few minutes
    python benchmarks/attribution.py --config cuda     # Qwen2.5-1.5B-shaped, bf16, 1k/2k/4k responses
    python benchmarks/attribution.py --config cpu --backends   # the same model on verl's Megatron model, side by side

Figures (same inputs for every method):
- OAR-P exact vs the naive algorithm (full logits, no key/value reuse, one response at a
  time): time ratio and max score difference; tokens recomputed vs the floor (each
  perturbation recomputing only from its own position to the last target position);
- OAR-G and OAR-P `taylor` vs the no-grad log-prob pass the trainer runs anyway (full
  logits, as verl's `compute_log_prob`): time ratio per target mode, timed in interleaved
  pairs (median and quartiles of the per-pair ratios), standalone (the method's own clean
  pass) and fused (`attribute_with_log_probs`: the log-probs come out of the method's clean
  pass; the figure with a bound is its cost beyond that pass, flagged when the median falls
  below the pass it contains; taylor's bound, 2x beyond the pass, is the target of 3 log-prob-pass units in all);
- approximate OAR-P (span occlusion; gradient-guided: exact on the top OAR-G tokens and a
  calibration sample, the rest OAR-G scaled): speedup over the naive algorithm on the same inputs,
  and Spearman rank correlation against exact per response on trained tiny models (the
  demo's planted-pivot model, the study's arithmetic model; random weights give
  meaningless rankings);
- peak memory of each (CUDA: allocator peak; CPU: tensor memory from torch.profiler's
  allocation events).

`--backends` instead measures the backends side by side (needs the megatron extra): the
same weights as the Hugging Face model (the FSDP engines' model) and as megatron-core's
`GPTModel` built by mbridge as verl's Megatron engine builds it (tensor parallelism 1), the
same inputs; per method the median time on each, Megatron / HF, each against its own
log-prob pass, and the largest score difference between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr
from transformers import Qwen2Config, Qwen2ForCausalLM

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments
from oar_verl.core.attribution import attribute, fused_attribution, gradient
from oar_verl.core.targets import TARGET_MODES, answer_positions


@dataclass(frozen=True)
class Setup:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    prompt: int
    responses: tuple[int, ...]  # response lengths to measure
    rows: int
    answer: int  # answer tokens at the end of each response
    dtype: torch.dtype
    token_budget: int


TAYLOR_BOUND = 2.0  # fused taylor's cost beyond the log-prob pass: 3 pass units in all


def APPROXIMATE(config: PerturbationConfig, spans=(4, 16)):  # noqa: N802 - a table of settings
    """(label, config) of each approximate OAR-P setting measured."""
    settings = [(f"span_approx, span {span}", dataclasses.replace(config, mode="span_approx", span=span)) for span in spans]
    for fraction in (0.1, 0.25):
        guided = dataclasses.replace(config, mode="guided_approx", guided_fraction=fraction, calibration_fraction=0.05)
        settings.append((f"guided_approx, top {fraction:.0%} + 5% calibration", guided))
    return settings


CONFIGS = {
    "cpu": Setup(128, 4, 4, 2, 256, 2048, 32, (128, 256), 4, 4, torch.float32, 8192),
    # Qwen2.5-1.5B's shape (random weights), bf16
    "cuda": Setup(1536, 28, 12, 2, 8960, 151936, 256, (1024, 2048, 4096), 2, 8, torch.bfloat16, 32768),
}


def build(setup: Setup, device: str):
    """A random-weight Qwen2 of `setup`'s hidden, layers, heads, kv_heads, intermediate, vocab
    and dtype (`attribution_memory.Shape` has the same fields), in eval mode."""
    config = Qwen2Config(
        vocab_size=setup.vocab, hidden_size=setup.hidden, num_hidden_layers=setup.layers, num_attention_heads=setup.heads,
        num_key_value_heads=setup.kv_heads, intermediate_size=setup.intermediate, max_position_embeddings=8192,
        attn_implementation="sdpa", tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=setup.dtype).eval()


def make_batch(setup: Setup, response_length: int, device: str):
    generator = torch.Generator().manual_seed(response_length)
    prompts = [torch.randint(0, setup.vocab, (setup.prompt - 3 * row,), generator=generator).tolist() for row in range(setup.rows)]
    responses = [torch.randint(0, setup.vocab, (response_length,), generator=generator).tolist() for _ in range(setup.rows)]
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=0, device=device)
    end = torch.full((setup.rows,), response_length, device=device)
    segments = Segments(end - setup.answer - 2, end - setup.answer, end, torch.ones(setup.rows, dtype=torch.bool, device=device))
    return batch, segments


class Meter:
    """Median wall time over `repeats` runs (after one untimed warm-up run) and peak memory
    of a block: on CUDA the allocator's peak above what was allocated before; on the CPU
    the peak of the tensor memory allocated and freed during the warm-up run, replayed
    from torch.profiler's memory events (`cpu_peak_memory`)."""

    def __init__(self, device: str, repeats: int):
        self.device = device
        self.repeats = repeats

    def __call__(self, fn):
        times, peak = [], None
        if self.device == "cuda":
            fn()  # warm-up: first-call allocations and kernel selection are not timed
        else:
            peak = cpu_peak_memory(fn)  # the warm-up run, profiled
        for _ in range(self.repeats):
            if self.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            result = fn()
            if self.device == "cuda":
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
            times.append(time.perf_counter() - start)
        return result, sorted(times)[len(times) // 2], peak


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def paired_ratios(baseline, candidate, pairs: int, device: str) -> tuple[float, float, float]:
    """(median, lower, upper quartile) of candidate / baseline time ratios, each pair timed
    back to back in alternating order, so that load changes on a shared machine hit both
    sides of a ratio alike. One warm-up call of each first."""
    baseline(), candidate()
    ratios = []
    for index in range(pairs):
        times = {}
        for name, fn in (("a", baseline), ("b", candidate)) if index % 2 == 0 else (("b", candidate), ("a", baseline)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name] = time.perf_counter() - start
        ratios.append(times["b"] / times["a"])
    ratios.sort()
    return ratios[len(ratios) // 2], ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]


def ratio_text(ratios: tuple[float, float, float], bound: float | None = None) -> str:
    """'3.10x [2.95, 3.30]' and, for a cost beyond the log-prob pass (ratio - 1), the figure
    against its bound; a median below the pass is flagged, never printed as a cost."""
    median, lower, upper = ratios
    text = f"{median:5.2f}x log-prob pass [quartiles {lower:.2f}, {upper:.2f}]"
    if bound is not None:
        beyond = median - 1.0
        text += (
            f", {beyond:5.2f}x beyond it (target <= {bound}x)" if beyond >= 0 else ", FLAG: below the pass it contains (timing noise), no cost figure"
        )
    return text


def memory(peak: int | None) -> str:
    return "peak n/a" if peak is None else f"peak {peak / 2**20:9.1f} MiB"


def cpu_peak_memory(fn) -> int:
    """Bytes: the highest net tensor memory allocated while `fn` runs on the CPU, from
    torch.profiler's allocation and free events in time order (net per operator, so a
    temporary allocated and freed inside one operator is not seen)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


@torch.no_grad()
def naive_oar_p(model, batch: ResponseBatch, segments: Segments, config: PerturbationConfig) -> torch.Tensor:
    """The reference fragment's algorithm, fixed: one response at a time, every
    perturbation a full forward with full logits, targets from them."""
    from oar_verl.core.models import model_parts
    from oar_verl.core.targets import compute_target, target_shift

    parts = model_parts(model)
    scores = torch.zeros(batch.input_ids.shape[0], batch.response_length, device=batch.input_ids.device)
    for row in range(batch.input_ids.shape[0]):
        sub, seg = batch.select([row]), segments.select([row])
        answer = answer_positions(sub, seg)
        full = model(input_ids=sub.input_ids, attention_mask=sub.attention_mask, position_ids=sub.position_ids, output_hidden_states=True)
        clean = compute_target(parts, full.hidden_states[-1], answer, config.target)
        for t in range(int(seg.reasoning_end[0])):
            ids = sub.input_ids.clone()
            ids[0, batch.prompt_length + t] = config.perturbation_id
            out = model(input_ids=ids, attention_mask=sub.attention_mask, position_ids=sub.position_ids, output_hidden_states=True)
            scores[row, t] = target_shift(parts, clean, compute_target(parts, out.hidden_states[-1], answer, config.target), config.target).abs()[0]
    return scores


def recomputed_tokens(batch: ResponseBatch, segments: Segments, budget: int) -> tuple[int, int]:
    """(tokens OAR-P exact runs through the model after the clean pass, the floor)."""
    from oar_verl.core.attribution.perturbation import _windows

    P = batch.prompt_length
    measured = floor = 0
    for row in range(batch.input_ids.shape[0]):
        length = P + int(segments.answer_end[row]) - 1  # up to the last target position
        for window in _windows(torch.arange(int(segments.reasoning_end[row])), 1, P, length, budget):
            measured += len(window) * (length - P - int(window[0]))
        floor += sum(length - P - t for t in range(int(segments.reasoning_end[row])))
    return measured, floor


def log_prob_pass(model, batch: ResponseBatch) -> torch.Tensor:
    """What the trainer's old_log_prob pass does: full logits, log-softmax, gather."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
        return torch.log_softmax(logits.float(), dim=-1)[:, :-1].gather(2, batch.input_ids[:, 1:, None])


def megatron_model(model, device: str):
    """`model`'s weights as verl's Megatron engine's model (one gloo process, TP 1)."""
    import os
    import tempfile

    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel

    from oar_verl.verl_cpu.megatron import install_model_shims, model_from_hf

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29591")
    dist.init_process_group("gloo", rank=0, world_size=1)
    install_model_shims()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    path = tempfile.mkdtemp(prefix="oar_bench_")
    model.save_pretrained(path)
    (chunk,) = model_from_hf(path, dtype=model.dtype)
    return chunk.to(device).eval()


def parts_log_prob_pass(model, batch: ResponseBatch) -> torch.Tensor:
    """The log-prob pass through a model's parts: full logits, log-softmax, gather."""
    from oar_verl.core.models import model_parts

    parts = model_parts(model)
    with torch.no_grad():
        hidden = parts.hidden_states(parts.embed(batch.input_ids), batch.attention_mask, batch.position_ids)
        return parts.token_values(parts.log_softmax(parts.logits(hidden[:, :-1])), batch.input_ids[:, 1:])


def compare_backends(setup: Setup, device: str, meter: Meter) -> None:
    """The `--backends` figures (module docstring)."""
    hf = build(setup, device)
    megatron = megatron_model(hf, device)
    print(f"backends side by side: Hugging Face (FSDP engines) vs megatron-core GPTModel (Megatron engine, TP 1); {setup.dtype}")
    for length in setup.responses:
        batch, segments = make_batch(setup, length, device)
        print(f"\nresponse length {length}: method{'':<36} HF s    Megatron s   Megatron/HF   x own log-prob pass (HF, Megatron)   max |score diff|")
        passes = [meter(lambda m=m: parts_log_prob_pass(m, batch))[1] for m in (hf, megatron)]
        print(f"  {'log-prob pass (no grad, full logits)':<43} {passes[0]:8.3f} {passes[1]:10.3f} {passes[1] / passes[0]:11.2f}x")
        methods = [
            ("OAR-G answer_mean", lambda m, c=GradientConfig(max_tokens_per_pass=setup.token_budget): gradient.attribute(m, batch, segments, c)),
            (
                "OAR-G answer_mean fused",
                lambda m, c=GradientConfig(max_tokens_per_pass=setup.token_budget): gradient.attribute_with_log_probs(m, batch, segments, c).scores,
            ),
            (
                "OAR-G answer_logprob",
                lambda m, c=GradientConfig(target="answer_logprob", max_tokens_per_pass=setup.token_budget): gradient.attribute(
                    m, batch, segments, c
                ),
            ),
            (
                "OAR-P taylor answer_mean",
                lambda m, c=PerturbationConfig(target="answer_mean", perturbation_id=0, mode="taylor", max_tokens_per_pass=setup.token_budget): (
                    attribute(m, batch, segments, c)
                ),
            ),
            (
                "OAR-P exact first_answer",
                lambda m, c=PerturbationConfig(perturbation_id=0, max_tokens_per_pass=setup.token_budget): attribute(m, batch, segments, c),
            ),
        ]
        for label, method in methods:
            (hf_scores, hf_time, _), (m_scores, m_time, _) = meter(lambda: method(hf)), meter(lambda: method(megatron))
            difference = float((hf_scores - m_scores).abs().max())
            print(
                f"  {label:<43} {hf_time:8.3f} {m_time:10.3f} {m_time / hf_time:11.2f}x   {hf_time / passes[0]:8.2f}x, {m_time / passes[1]:6.2f}x{'':<16} {difference:.1e}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/attribution.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu",
                        help="cpu: a small model in float32; cuda: Qwen2.5-1.5B's shape in bf16 (default: %(default)s)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per OAR-P figure, the median printed (default: %(default)s)")
    parser.add_argument("--gradient-repeats", type=int, default=21,
                        help="timed runs per log-prob / OAR-G figure, passes of ms on the CPU (default: %(default)s)")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=15,
                        help="interleaved (log-prob pass, method) pairs per ratio, their median and quartiles printed "
                             "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--skip-naive-above", type=int, default=1024,
                        help="response length above which the naive OAR-P baseline is not run (default: %(default)s)")  # fmt: skip
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="response lengths to measure (default: the config's)")  # fmt: skip
    parser.add_argument("--skip-exact-above", type=int, default=None,
                        help="response length above which exact and approximate OAR-P are not run (default: run at every length)")  # fmt: skip
    parser.add_argument("--backends", action="store_true",
                        help="instead, the Hugging Face and Megatron models side by side; needs the megatron extra "
                             "(default: off)")  # fmt: skip
    args = parser.parse_args(argv)
    setup = CONFIGS[args.config]
    device = "cuda" if args.config == "cuda" else "cpu"
    torch.set_grad_enabled(True)
    if args.backends:
        return compare_backends(setup, device, Meter(device, repeats=args.repeats))
    model = build(setup, device)
    meter = Meter(device, repeats=args.repeats)
    gradient_meter = Meter(device, repeats=args.gradient_repeats)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; model: hidden {setup.hidden}, {setup.layers} layers, vocab {setup.vocab}, {setup.dtype}; {setup.rows} rows, prompt ~{setup.prompt}"
    )
    exact_peaks: dict[int, int | None] = {}
    for length in args.lengths or setup.responses:
        batch, segments = make_batch(setup, length, device)
        print(f"\nresponse length {length} (reasoning {length - setup.answer - 2} tokens per row)")
        log_probs, base_time, base_peak = gradient_meter(lambda: log_prob_pass(model, batch))
        print(f"  log-prob pass (no grad, full logits)      {base_time:8.3f} s   {memory(base_peak)}")

        def base():
            return log_prob_pass(model, batch)

        for target in TARGET_MODES:
            config = GradientConfig(target=target, max_tokens_per_pass=setup.token_budget)
            _, g_time, g_peak = gradient_meter(lambda: gradient.attribute(model, batch, segments, config))
            fused, f_time, f_peak = gradient_meter(lambda: gradient.attribute_with_log_probs(model, batch, segments, config))
            standalone_ratios = paired_ratios(base, lambda: gradient.attribute(model, batch, segments, config), args.pairs, device)
            fused_ratios = paired_ratios(base, lambda: gradient.attribute_with_log_probs(model, batch, segments, config), args.pairs, device)
            bound = 1.3 if target == "answer_logprob" else 2.3
            agree = float((fused.log_probs - log_probs[:, batch.prompt_length - 1 :, 0] * batch.response_mask).abs().max())
            print(f"  OAR-G {target:<15} standalone        {g_time:8.3f} s   {memory(g_peak)}   {ratio_text(standalone_ratios)}")
            print(f"  OAR-G {target:<15} fused             {f_time:8.3f} s   {memory(f_peak)}   {ratio_text(fused_ratios, bound)}; "
                  f"log-probs max diff {agree:.1e}")  # fmt: skip
            if target == "every_answer":  # taylor's Fisher form takes one distribution a row (the config refuses it)
                continue
            taylor = PerturbationConfig(target=target, perturbation_id=0, max_tokens_per_pass=setup.token_budget, mode="taylor")
            _, t_time, t_peak = gradient_meter(lambda: attribute(model, batch, segments, taylor))
            taylor_ratios = paired_ratios(base, lambda: attribute(model, batch, segments, taylor), args.pairs, device)
            _, tf_time, tf_peak = gradient_meter(lambda: fused_attribution(taylor)(model, batch, segments, taylor))
            taylor_fused_ratios = paired_ratios(base, lambda: fused_attribution(taylor)(model, batch, segments, taylor), args.pairs, device)
            directions = 1 if target == "answer_logprob" else taylor.taylor_top + taylor.taylor_samples
            print(f"  OAR-P taylor {target:<15} ({directions} backward)  {t_time:8.3f} s   {memory(t_peak)}   {ratio_text(taylor_ratios)}")
            print(f"  OAR-P taylor {target:<15} fused        {tf_time:8.3f} s   {memory(tf_peak)}   {ratio_text(taylor_fused_ratios, TAYLOR_BOUND)}")
        if args.skip_exact_above is not None and length > args.skip_exact_above:
            del log_probs
            continue
        config = PerturbationConfig(target="first_answer", perturbation_id=0, max_tokens_per_pass=setup.token_budget)
        exact, p_time, p_peak = meter(lambda: attribute(model, batch, segments, config))
        exact_peaks[length] = p_peak
        measured, floor = recomputed_tokens(batch, segments, setup.token_budget)
        print(f"  OAR-P exact                               {p_time:8.3f} s   {memory(p_peak)}")
        print(f"    tokens recomputed {measured} vs floor {floor}: {measured / floor:.3f}x (target <= 1.3x)")
        n_time = None
        if length <= args.skip_naive_above:
            naive, n_time, n_peak = meter(lambda: naive_oar_p(model, batch, segments, config))
            difference = float((naive - exact).abs().max())
            print(f"  OAR-P naive                               {n_time:8.3f} s   {memory(n_peak)}")
            print(f"    exact is {n_time / p_time:.2f}x faster than naive (target >= 2x); max score difference {difference:.2e}")
        for label, approx in APPROXIMATE(config):
            _, a_time, a_peak = meter(lambda: attribute(model, batch, segments, approx))
            versus = f"{n_time / a_time:6.1f}x faster than naive (target >= 20x)" if n_time else f"{p_time / a_time:6.1f}x faster than exact"
            print(f"  OAR-P {label:<34} {a_time:8.3f} s   {memory(a_peak)}   {versus}")
        del log_probs
    if exact_peaks and None not in exact_peaks.values():
        peaks = ", ".join(f"{length}: {peak / 2**20:.1f} MiB" for length, peak in exact_peaks.items())
        lengths = sorted(exact_peaks)
        growth = exact_peaks[lengths[-1]] / exact_peaks[lengths[0]]
        print(f"\nOAR-P exact peak memory at a {setup.token_budget}-token budget: {peaks}; x{growth:.2f} for x{lengths[-1] / lengths[0]:.0f} the length "
              "(target: flat in length at a fixed budget)")  # fmt: skip
    print("\nagreement with exact OAR-P on trained tiny models (mean per-response Spearman):")
    for label, rho in approximate_agreement():
        print(f"  {label:<80} {rho:.3f} (target >= 0.85)")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (scipy; 0 when either is constant)."""
    rho = spearmanr(a.double().cpu().numpy(), b.double().cpu().numpy()).statistic
    return 0.0 if rho != rho else float(rho)


def approximate_agreement() -> list[tuple[str, float]]:
    """(label, mean per-response Spearman against exact OAR-P) of each approximate setting,
    on two trained tiny models: the demo's planted-pivot model (20 held-out responses of 8
    to 12 reasoning tokens) and the study's warm-started arithmetic model (responses it
    samples, 10 to 30 reasoning tokens)."""
    results = []
    for model_label, (model, tokenizer, batch) in (("pivot", pivot_model_and_batch()), ("arithmetic", arithmetic_model_and_batch())):
        from oar_verl.core import segment_responses

        segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
        usable = segments.usable & (segments.reasoning_end >= 3)
        config = PerturbationConfig(perturbation_id=tokenizer.pad_token_id)
        exact = attribute(model, batch, segments, config, rows=usable)
        rows = usable.nonzero().flatten().tolist()
        for label, approx_config in APPROXIMATE(config, spans=(2, 3)):
            approx = attribute(model, batch, segments, approx_config, rows=usable)
            rhos = [spearman(exact[i, : int(segments.reasoning_end[i])], approx[i, : int(segments.reasoning_end[i])]) for i in rows]
            results.append((f"{model_label} model ({len(rows)} responses), {label}", sum(rhos) / len(rhos)))
    return results


def pivot_model_and_batch():
    import random

    from oar_verl.demo import PROMPT, pivot_example, train_pivot_model

    model, tokenizer = train_pivot_model(steps=400, seed=0)
    texts = [pivot_example(random.Random(1000 + i))[0] for i in range(20)]
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    responses = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return model, tokenizer, ResponseBatch.from_token_lists([prompt] * 20, responses, pad_token_id=tokenizer.pad_token_id)


def arithmetic_model_and_batch():
    import random
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oar_verl.study.fidelity import sample_responses
    from oar_verl.study.plan import FULL
    from oar_verl.tiny.arithmetic import make_problem
    from oar_verl.tiny.warmstart import warm_start

    path = warm_start(
        tempfile.mkdtemp(),
        steps=FULL.warm_start_steps,
        seed=0,
        max_steps=FULL.max_steps,
        max_operand=FULL.max_operand,
        slip_probability=FULL.slip_probability,
    )
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    rng = random.Random(7)
    questions = [make_problem(rng, FULL.max_steps, FULL.max_operand).question for _ in range(32)]
    return model, tokenizer, sample_responses(model, tokenizer, questions, max_new_tokens=FULL.max_response_length, seed=7)


if __name__ == "__main__":
    main()
