"""Faithfulness on a planted pivot: a tiny model trained so that one known reasoning
token decides the answer (`oar_verl.demo`); OAR-P must rank that token first.

The model is the shipped fixture `tests/fixtures/models/pivot` (the demo's training, 400
steps, seed 0), not trained here: retraining on another CPU gives another model
(`tests/fixtures/models`). The spread of each statistic over 20 retrained models and over
30 OAR-G noise seeds is measured by `benchmarks/pivot_spread.py` and recorded in
`docs/benchmarks.md` ("Planted-pivot statistics"); each bound below is stated against it.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.core import TARGET_MODES, GradientConfig, PerturbationConfig
from oar_verl.core.attribution import attribute, gradient
from tests.fixtures.models import PIVOT_EXAMPLES, PIVOT_MODEL, chance_mean_rank, copied_answers, pivot_ranks, pivot_test_batch


@pytest.fixture(scope="module")
def trained():
    model = AutoModelForCausalLM.from_pretrained(PIVOT_MODEL, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(PIVOT_MODEL)
    batch, segments, pivots = pivot_test_batch(tokenizer)
    assert segments.usable.all()
    return model, tokenizer, batch, segments, pivots


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_p_ranks_the_pivot_first(trained, mode):
    model, tokenizer, batch, segments, pivots = trained
    scores = attribute(model, batch, segments, PerturbationConfig(target=mode, perturbation_id=tokenizer.pad_token_id))
    assert pivot_ranks(scores, segments, pivots) == [1] * PIVOT_EXAMPLES


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_g_ranks_the_pivot_well_above_chance(trained, mode, record_property):
    """Mean pivot rank below half of chance's (2.83). On the fixture over 30 noise seeds
    the mean rank is 1.57 +- 0.21 (max 2.10) for the KL targets and 1.89 +- 0.29 (max
    2.55) for answer_logprob: the bound is 3.2 standard deviations above the worst case's
    mean, so neither the noise draw nor last-bit differences between CPUs decide it."""
    model, _, batch, segments, pivots = trained
    scores = gradient.attribute(model, batch, segments, GradientConfig(target=mode))
    found = pivot_ranks(scores, segments, pivots)
    mean_rank = sum(found) / len(found)
    chance = chance_mean_rank(segments)
    record_property(f"oar_g_{mode}_mean_pivot_rank", mean_rank)
    assert mean_rank < chance / 2, f"OAR-G ({mode}) ranks the pivot no better than chance: {found} (chance {chance:.2f})"


def test_the_model_copies_the_planted_digit(trained):
    """The model predicts the answer digit of at least 16 of the 20 responses: the
    attribution has a real pivot to find. The fixture predicts 17; the logit of the answer
    leads the next digit's by 2.4 or more on each of them, so no float difference between
    CPUs moves the count."""
    model, _, batch, segments, _ = trained
    assert int(copied_answers(model, batch, segments).sum()) >= 16
