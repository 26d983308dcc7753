"""Attribution fidelity: how well the cheap estimators' token rankings (OAR-G, OAR-P's
`taylor` mode) agree with exact OAR-P's (the perturbation definition), per response, for
each target mode."""

from __future__ import annotations

import dataclasses
import math
import random

import torch
from scipy.stats import spearmanr

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, segment_responses
from oar_verl.core.attribution import attribute, gradient
from oar_verl.tiny.arithmetic import make_problem, prompt_ids


def sample_responses(model, tokenizer, questions: list[str], *, max_new_tokens: int, seed: int) -> ResponseBatch:
    """One sampled response (temperature 1) per question, in verl's layout [B, P + R]."""
    prompts = [prompt_ids(tokenizer, q) for q in questions]
    stop_ids = list(model.generation_config.eos_token_id or [tokenizer.eos_token_id])
    stop_ids = stop_ids if isinstance(stop_ids, list) else [stop_ids]
    responses = []
    torch.manual_seed(seed)
    for prompt in prompts:
        output = model.generate(torch.tensor([prompt]), do_sample=True, temperature=1.0, top_k=0, max_new_tokens=max_new_tokens,
                                eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        responses.append(output[0, len(prompt) :].tolist())
    return ResponseBatch.from_token_lists(prompts, responses, pad_token_id=tokenizer.pad_token_id)


def rank_agreement(model, tokenizer, *, responses: int, targets: tuple[str, ...], task: dict, max_new_tokens: int, seed: int = 0) -> dict:
    """Per-response Spearman correlation of OAR-G scores and of OAR-P `taylor` scores
    (default settings; each target) against exact OAR-P (the reference's default target, first_answer)
    over the reasoning tokens of sampled responses to problems of `task` (the shape settings
    of `data.arithmetic.make_problem`) with an answer and at least 3 reasoning tokens.

    Returns {"responses": n used, "sampled": n sampled, target: OAR-G's {"mean", "median",
    "frac_above_0.5", "values": [...]}, "taylor": {target: the same for taylor}}.
    """
    rng = random.Random(seed)
    questions = [make_problem(rng, **task).question for _ in range(responses)]
    model.eval()
    batch = sample_responses(model, tokenizer, questions, max_new_tokens=max_new_tokens, seed=seed)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    usable = segments.usable & (segments.reasoning_end >= 3)
    exact_config = PerturbationConfig(target="first_answer", perturbation_id=tokenizer.pad_token_id)
    exact = attribute(model, batch, segments, exact_config, rows=usable)

    def agreement(scores: torch.Tensor) -> dict:
        values = []
        for row in usable.nonzero().flatten().tolist():
            n = int(segments.reasoning_end[row])
            rho = spearmanr(exact[row, :n].numpy(), scores[row, :n].numpy()).statistic
            values.append(0.0 if math.isnan(rho) else float(rho))  # a constant ranking agrees with nothing
        tensor = torch.tensor(values or [float("nan")])
        return {
            "mean": float(tensor.mean()),
            "median": float(tensor.median()),
            "frac_above_0.5": float((tensor > 0.5).float().mean()),
            "values": values,
        }

    result: dict = {"responses": int(usable.sum()), "sampled": responses, "taylor": {}}
    for target in targets:
        result[target] = agreement(gradient.attribute(model, batch, segments, GradientConfig(target=target, seed=seed), rows=usable))
        taylor = dataclasses.replace(exact_config, target=target, mode="taylor", seed=seed)
        result["taylor"][target] = agreement(attribute(model, batch, segments, taylor, rows=usable))
    return result
