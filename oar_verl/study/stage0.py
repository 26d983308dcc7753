"""Stage 0 of the oracle-grounded study, no RL: on sampled wrong responses of the study's
warm-started model, how well each estimator finds the token where the response first goes
wrong (`study.oracle`): hit@1 and hit@3 of its scores, and the Bi-Level weight (default
settings) it puts on that token against the other reasoning tokens.

    python -m oar_verl.study.stage0 [--plan first] [--workdir outputs/study] [--responses 300] [--out docs/results/stage0.json]

Estimators: exact OAR-P, OAR-P taylor and OAR-G at sigma 1e-3 (absolute) and at 0.1 and 1 x
the embeddings' RMS, each with targets first_answer, answer_logprob, answer_mean and every_answer
(not taylor: one distribution a row); the oracle
itself (hit@1 = 1 by construction) and random scores (chance). Results are saved after each
estimator, and a rerun computes only the estimators missing from `--out` (on the same
responses: same model, seed and count). hit@1 is also given by how many step lines follow
the error before the answer line (the screening-off test: a perturbation teacher-forces
those lines, which restate the slipped value).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

TARGETS = ("first_answer", "answer_logprob", "answer_mean", "every_answer")
# The chains task's answers are one token: answer_mean and every_answer equal first_answer there.
PLAN_TARGETS = {"first": TARGETS, "chains": ("first_answer", "answer_logprob")}
SIGNAL_BINS = (0.01, 0.1, 1.0)  # a row's largest reasoning score over the median row's: bin edges
RELATIVE_SIGMAS = (0.1, 1.0)  # OAR-G's noise as shares of the embeddings' RMS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oar_verl.study.stage0", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=("first", "chains"), default="first", help="whose task and warm-started model (default: %(default)s)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("outputs/study"), help="the study's model and data, built when absent (default: %(default)s)"
    )
    parser.add_argument("--responses", type=int, default=300, help="wrong responses with an error in their reasoning (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="problems, sampling and noise (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/stage0.json"), help="results, read back to resume (default: %(default)s)")
    args = parser.parse_args(argv)
    run(args.workdir, args.responses, args.seed, args.out, args.plan)


def run(workdir: Path, responses: int, seed: int, out: Path, plan_name: str = "first") -> dict:
    """Builds (or reuses) the study's model, samples the wrong responses and evaluates every
    estimator missing from `out`; returns the results."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oar_verl.study.plan import PLANS
    from oar_verl.study.runner import prepare

    torch.set_num_threads(1)
    plan = PLANS[plan_name]
    paths = prepare(plan, workdir)
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    results = json.loads(out.read_text()) if out.exists() else {}
    setup = {"model": str(paths["model"]), "responses": responses, "seed": seed, **plan.task}
    if {key: results.get("setup", {}).get(key) for key in setup} != setup:
        results = {"setup": setup, "estimators": {}}
    batch, segments, questions, error_tokens, sampled = wrong_responses(model, tokenizer, responses, seed, plan.task, plan.max_response_length)
    groups = lines_after_error(tokenizer, batch, questions)
    results["setup"]["sampled"] = sampled
    for name, scores_of in estimators(model, tokenizer, questions, seed, PLAN_TARGETS[plan_name]).items():
        if name in results["estimators"]:
            continue
        started = time.perf_counter()
        scores = scores_of(batch, segments)
        results["estimators"][name] = {**error_statistics(scores, segments, error_tokens, groups), "time_s": round(time.perf_counter() - started, 1)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name:36s} {results['estimators'][name]}", flush=True)
    print(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    """The results as a markdown table, one estimator a row (as in docs/results.md)."""
    lines = [
        "| estimator | hit@1 (SE) | hit@3 | weight on the error token | weight on the others | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results["estimators"].items():
        lines.append(
            f"| {name} | {row['hit@1']:.3f} ({row['hit@1_se']:.3f}) | {row['hit@3']:.3f} | {row['weight_on_error']:.2f} | {row['weight_on_others']:.2f} | {row['time_s']:g} |"
        )
    return "\n".join(lines)


def wrong_responses(model, tokenizer, count: int, seed: int, task: dict, max_new_tokens: int = 48):
    """(batch, segments, questions, [B] error token, responses sampled): `count` sampled
    responses (temperature 1) to problems of `task` whose first error lies in their reasoning."""
    from oar_verl.core import ResponseBatch, segment_responses
    from oar_verl.study.fidelity import sample_responses
    from oar_verl.study.oracle import oracle_scores
    from oar_verl.tiny.arithmetic import make_problem

    rng = random.Random(seed)
    kept_prompts, kept_responses, questions, sampled = [], [], [], 0
    while len(questions) < count:
        batch_questions = [make_problem(rng, **task).question for _ in range(64)]
        batch = sample_responses(model, tokenizer, batch_questions, max_new_tokens=max_new_tokens, seed=seed + sampled)
        sampled += len(batch_questions)
        segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
        marked = (oracle_scores(tokenizer, batch.responses, batch.response_mask, segments, batch_questions) == 1.0).any(dim=1) & segments.usable
        for row in marked.nonzero().flatten().tolist()[: count - len(questions)]:
            P = batch.prompt_length
            kept_prompts.append(batch.input_ids[row, :P][batch.attention_mask[row, :P].bool()].tolist())
            kept_responses.append(batch.responses[row][batch.response_mask[row].bool()].tolist())
            questions.append(batch_questions[row])
    batch = ResponseBatch.from_token_lists(kept_prompts, kept_responses, pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    marked = oracle_scores(tokenizer, batch.responses, batch.response_mask, segments, questions) == 1.0
    if not bool(marked.any(dim=1).all()):
        raise RuntimeError("a kept response lost its error token when rebatched")
    return batch, segments, questions, marked.float().argmax(dim=1), sampled


def estimators(model, tokenizer, questions: list[str], seed: int, targets: tuple[str, ...] = TARGETS) -> dict[str, Callable]:
    """{name: (batch, segments) -> [B, R] scores} of every estimator stage 0 compares."""
    import torch

    from oar_verl.core import GradientConfig, PerturbationConfig
    from oar_verl.core.attribution import attribute, gradient
    from oar_verl.study.oracle import oracle_scores

    embedding_rms = float(model.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    pad = tokenizer.pad_token_id

    def exact(target, mode="exact"):
        return lambda batch, segments: attribute(model, batch, segments, PerturbationConfig(target=target, perturbation_id=pad, mode=mode, seed=seed))

    def noisy(target, sigma):
        return lambda batch, segments: gradient.attribute(model, batch, segments, GradientConfig(target=target, noise_std=sigma, seed=seed))

    def random_scores(batch, segments):
        return torch.rand(batch.responses.shape, generator=torch.Generator().manual_seed(seed))

    table: dict[str, Callable] = {
        "oracle": lambda batch, segments: oracle_scores(tokenizer, batch.responses, batch.response_mask, segments, questions),
        "random": random_scores,
    }
    for target in targets:
        table[f"oar_p exact {target}"] = exact(target)
        if target != "every_answer":  # taylor's Fisher form takes one distribution a row
            table[f"oar_p taylor {target}"] = exact(target, mode="taylor")
        table[f"oar_g sigma=1e-3 {target}"] = noisy(target, 1e-3)
        for share in RELATIVE_SIGMAS:
            table[f"oar_g sigma={share:g}xRMS ({share * embedding_rms:.2g}) {target}"] = noisy(target, share * embedding_rms)
    return table


def lines_after_error(tokenizer, batch, questions: list[str]) -> list[int]:
    """Per row, the step lines its response writes after the line of its first error."""
    from oar_verl.core.offsets import batch_token_offsets
    from oar_verl.study.oracle import first_error

    lengths = batch.response_mask.bool().sum(dim=1).tolist()
    texts = [offsets.text for offsets in batch_token_offsets(tokenizer, [ids[:n] for ids, n in zip(batch.responses.tolist(), lengths)])]
    counts = []
    for text, question in zip(texts, questions):
        error = first_error(question, text)
        lines = text.split("\n")
        steps = sum(1 for line in lines if not line.startswith("####"))
        counts.append(steps - text[: error.char].count("\n") - 1)
    return counts


def error_statistics(scores, segments, error_tokens, groups: list[int] | None = None) -> dict:
    """hit@1 and hit@3 of `scores` [B, R] at each row's error token (ties shared: the
    expected hit under a random order of equal scores) with hit@1's standard error over the
    rows, chance hit@1, the mean Bi-Level weight on the error token and on the other
    reasoning tokens, each row's hit@1 (`hits@1`, for paired comparisons), hit@1 by the
    row's signal (its largest reasoning score over the median row's, binned at
    `SIGNAL_BINS`: does a row whose scores are far below the others' still point at its
    error?) and, with `groups` (a label per row), hit@1 and chance per label."""
    import torch

    from oar_verl.core.reshape import bilevel_weights

    R = scores.shape[1]
    reasoning = segments.reasoning_mask(R)
    rows = torch.arange(scores.shape[0])
    at_error = scores[rows, error_tokens][:, None]
    higher = ((scores > at_error) & reasoning).sum(dim=1).float()
    equal = ((scores == at_error) & reasoning).sum(dim=1).float()
    weights = bilevel_weights(scores.float().nan_to_num(0.0), reasoning)
    others = reasoning.clone()
    others[rows, error_tokens] = False

    def hits(k: int) -> torch.Tensor:
        return ((k - higher) / equal).clamp(0.0, 1.0)  # [B]

    first = hits(1)
    chance = 1.0 / reasoning.sum(dim=1).float()
    by_group = {}
    for label in sorted(set(groups or [])):
        rows_in = torch.tensor([g == label for g in groups])
        by_group[str(label)] = {
            "rows": int(rows_in.sum()),
            "hit@1": round(float(first[rows_in].mean()), 4),
            "chance_hit@1": round(float(chance[rows_in].mean()), 4),
        }
    row_max = torch.where(reasoning, scores.float().nan_to_num(0.0), 0.0).amax(dim=1)
    relative = row_max / row_max.median().clamp(min=torch.finfo(torch.float32).tiny)
    edges = (0.0, *SIGNAL_BINS, float("inf"))
    by_signal = {}
    for low, high in zip(edges[:-1], edges[1:]):
        rows_in = (relative >= low) & (relative < high)
        if bool(rows_in.any()):
            by_signal[f"[{low:g}, {high:g})"] = {
                "rows": int(rows_in.sum()),
                "hit@1": round(float(first[rows_in].mean()), 4),
                "chance_hit@1": round(float(chance[rows_in].mean()), 4),
            }
    return {
        "hit@1": round(float(first.mean()), 4), "hit@1_se": round(float(first.std() / len(first) ** 0.5), 4),
        "hit@3": round(float(hits(3).mean()), 4), "chance_hit@1": round(float((1.0 / reasoning.sum(dim=1)).mean()), 4),
        "weight_on_error": round(float(weights[rows, error_tokens].mean()), 4),
        "weight_on_others": round(float((weights * others).sum(dim=1).div(others.sum(dim=1).clamp(min=1)).mean()), 4),
        "hits@1": [round(float(h), 4) for h in first], "by_relative_signal": by_signal, **({"by_lines_after_error": by_group} if groups is not None else {}),
    }  # fmt: skip


if __name__ == "__main__":
    main()
