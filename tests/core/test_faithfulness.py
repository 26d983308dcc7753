"""Faithfulness on a planted pivot: a tiny model trained so that one known reasoning
token decides the answer (`oar_verl.demo`); OAR-P must rank that token first."""

import random

import pytest
import torch

from oar_verl.core import TARGET_MODES, GradientConfig, PerturbationConfig, ResponseBatch, segment_responses
from oar_verl.core.attribution import gradient, perturbation
from oar_verl.demo import PROMPT, pivot_example, pivot_rank, train_pivot_model

EXAMPLES = 20


@pytest.fixture(scope="module")
def trained():
    model, tokenizer = train_pivot_model(steps=400, seed=0)
    examples = [pivot_example(random.Random(1000 + i)) for i in range(EXAMPLES)]
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] for text, _ in examples]
    batch = ResponseBatch.from_token_lists([prompt] * EXAMPLES, responses, pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    assert segments.usable.all()
    return model, tokenizer, batch, segments, [pivot for _, pivot in examples]


def ranks(scores, segments, pivots):
    return [pivot_rank(scores[i].tolist(), int(segments.reasoning_end[i]), pivots[i]) for i in range(len(pivots))]


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_p_ranks_the_pivot_first(trained, mode):
    model, tokenizer, batch, segments, pivots = trained
    scores = perturbation.attribute(model, batch, segments, PerturbationConfig(target=mode, perturbation_id=tokenizer.pad_token_id))
    assert ranks(scores, segments, pivots) == [1] * EXAMPLES


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_g_pivot_rank_reported(trained, mode, record_property):
    model, _, batch, segments, pivots = trained
    scores = gradient.attribute(model, batch, segments, GradientConfig(target=mode))
    found = ranks(scores, segments, pivots)
    mean_rank = sum(found) / len(found)
    chance = sum((int(n) + 1) / 2 for n in segments.reasoning_end) / len(found)  # mean rank of a random order
    record_property(f"oar_g_{mode}_mean_pivot_rank", mean_rank)
    record_property(f"oar_g_{mode}_pivot_first_fraction", found.count(1) / len(found))
    print(f"OAR-G {mode}: pivot ranks {found}; mean {mean_rank:.2f} (chance {chance:.2f}); first in {found.count(1)}/{len(found)}")
    assert mean_rank < chance / 2, f"OAR-G ({mode}) ranks the pivot no better than chance: {found}"


def test_perturbing_the_pivot_changes_the_prediction(trained):
    """The trained model copies the planted digit: the attribution has a real pivot to find."""
    model, _, batch, segments, pivots = trained
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    P = batch.prompt_length
    rows = torch.arange(EXAMPLES)
    predicted = logits[rows, P + segments.answer_start - 1].argmax(-1)
    answers = batch.responses[rows, segments.answer_start]
    # 0.85 to 1.0 on different x86 CPUs: the 400-step training's float sums differ by machine
    assert (predicted == answers).float().mean() >= 0.8
