"""How well OAR-P's `taylor` mode ranks tokens as exact OAR-P does, beside OAR-G and the
other approximate modes, on the trained tiny models of `attribution.py`.

    python benchmarks/taylor_fidelity.py

Models: the demo's planted-pivot model, the study's warm-started arithmetic model, and the
same task with longer chains (50-150 reasoning tokens). For each model and target: mean
per-response Spearman against exact OAR-P with the same
target over the reasoning tokens, the planted-pivot model's top-1 rate (the pivot token
scored highest), and the cost in backward passes per chunk beside one forward.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from typing import TYPE_CHECKING

from oar_verl.demo import pivot_example

if TYPE_CHECKING:
    from oar_verl.core import GradientConfig, PerturbationConfig

TARGETS = ("first_answer", "answer_mean", "answer_logprob")
PIVOTS = [pivot_example(random.Random(1000 + i))[1] for i in range(20)]  # pivot_model_and_batch's responses


def settings(config: PerturbationConfig) -> list[tuple[str, object, PerturbationConfig | GradientConfig]]:
    """(label, attribute function, config) of every estimator measured for one target."""
    from attribution import APPROXIMATE

    from oar_verl.core import GradientConfig
    from oar_verl.core.attribution import attribute, gradient

    rows = [("OAR-G (sigma 1e-3)", gradient.attribute, GradientConfig(target=config.target))]
    if config.target == "answer_logprob":
        rows.append(("taylor, first order", attribute, dataclasses.replace(config, mode="taylor")))
    else:
        for top, samples in ((1, 0), (4, 0), (16, 0), (4, 4), (64, 0)):
            label = f"taylor, top {top}" + (f" + {samples} samples" if samples else "")
            rows.append((label, attribute, dataclasses.replace(config, mode="taylor", taylor_top=top, taylor_samples=samples)))
    rows += [(label, attribute, approx) for label, approx in APPROXIMATE(config, spans=(2, 4))]
    return rows


def long_arithmetic_model_and_batch(chain_steps: int = 12, responses: int = 24):
    """The study's task with longer chains: a model warm-started on problems of up to
    `chain_steps` operations (responses of ~50-150 reasoning tokens, as math RL produces
    more than 10-30), and responses it samples."""
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
        max_steps=chain_steps,
        max_operand=FULL.max_operand,
        slip_probability=FULL.slip_probability,
    )
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    rng = random.Random(7)
    questions = [make_problem(rng, chain_steps, FULL.max_operand).question for _ in range(responses)]
    return model, tokenizer, sample_responses(model, tokenizer, questions, max_new_tokens=192, seed=7)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python benchmarks/taylor_fidelity.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    import torch
    from attribution import arithmetic_model_and_batch, pivot_model_and_batch, spearman

    from oar_verl.core import PerturbationConfig, segment_responses
    from oar_verl.core.attribution import attribute

    torch.manual_seed(0)
    models = (("pivot", pivot_model_and_batch), ("arithmetic", arithmetic_model_and_batch), ("long arithmetic", long_arithmetic_model_and_batch))
    for model_label, build in models:
        model, tokenizer, batch = build()
        segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
        usable = segments.usable & (segments.reasoning_end >= 3)
        rows = usable.nonzero().flatten().tolist()
        lengths = [int(segments.reasoning_end[i]) for i in rows]
        print(f"\n{model_label} model: {len(rows)} responses, {min(lengths)}-{max(lengths)} reasoning tokens")
        for target in TARGETS:
            config = PerturbationConfig(target=target, perturbation_id=tokenizer.pad_token_id)
            start = time.perf_counter()
            exact = attribute(model, batch, segments, config, rows=usable)
            exact_s = time.perf_counter() - start
            print(f"  target {target}: exact OAR-P {exact_s:.2f} s")
            for label, run, estimator in settings(config):
                start = time.perf_counter()
                scores = run(model, batch, segments, estimator, rows=usable)
                seconds = time.perf_counter() - start
                rhos = [spearman(exact[i, :n], scores[i, :n]) for i, n in zip(rows, lengths)]
                line = f"    {label:<44} Spearman {sum(rhos) / len(rhos):6.3f}   {seconds:6.2f} s"
                if model_label == "pivot":
                    hits = [int(scores[i, :n].argmax()) == PIVOTS[i] for i, n in zip(rows, lengths)]
                    line += f"   pivot top-1 {sum(hits) / len(hits):.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
