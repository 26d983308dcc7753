"""The chunk driver (`core/attribution/chunks.py`): chunks cost their rows' real tokens,
and no method's scores or log-probs depend on the chunking, the order of the rows or the
budget: each row's results equal those of the row computed alone."""

import random

import pytest
import torch

from oar_verl.core import GradientConfig, PerturbationConfig, ResponseBatch, Segments
from oar_verl.core.attribution import attribute, chunks, gradient, taylor

ROWS = 7


@pytest.fixture(scope="module")
def mixed_batch():
    """(prompts, responses, batch, segments): prompts of 1 to 12 tokens and responses of 5
    to 40, each response reasoning, a one-token bridge, a two-token answer and a one-token
    tail, so both paddings are large for most rows."""
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 250) for _ in range(n)] for n in (12, 1, 5, 3, 9, 2, 7)]
    responses = [[rng.randrange(3, 250) for _ in range(n)] for n in (40, 6, 22, 5, 13, 31, 9)]
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=0)
    n = torch.tensor([len(r) for r in responses])
    segments = Segments(reasoning_end=n - 4, answer_start=n - 3, answer_end=n - 1, found=torch.ones(ROWS, dtype=torch.bool))
    return prompts, responses, batch, segments


def alone(batch, segments, row):
    """Row `row` as a batch of its own, with no padding: (batch, segments)."""
    real = batch.attention_mask[row].bool()
    P = int(real[: batch.prompt_length].sum())
    ids = batch.input_ids[row][real]
    single = ResponseBatch.from_token_lists([ids[:P].tolist()], [ids[P:].tolist()], pad_token_id=0)
    return single, segments.select(torch.tensor([row]))


def test_chunks_cost_their_rows_real_tokens(mixed_batch):
    _, _, batch, segments = mixed_batch
    prompts, widths = chunks.prompt_lengths(batch), chunks.response_widths(batch)
    assert prompts.tolist() == [12, 1, 5, 3, 9, 2, 7] and widths.tolist() == [40, 6, 22, 5, 13, 31, 9]
    for budget in (52, 60, 100, 400):
        planned = chunks.plan_chunks(prompts, widths, torch.arange(ROWS), budget)
        assert sorted(torch.cat(planned).tolist()) == list(range(ROWS))
        for rows in planned:
            assert len(rows) * int(prompts[rows].max() + widths[rows].max()) <= budget
        assert planned[0][0] == 0, "the longest row goes first"
    # at 60 tokens the 52-token row goes alone and no short row pays for its width
    planned = chunks.plan_chunks(prompts, widths, torch.arange(ROWS), 60)
    assert planned[0].tolist() == [0]
    chunk = chunks.Chunk.of(batch, segments, planned[-1], with_answer=False)
    assert chunk.input_ids.shape[1] == int(prompts[planned[-1]].max() + widths[planned[-1]].max()) < batch.input_ids.shape[1]


def test_one_row_over_the_budget_is_refused_by_name(mixed_batch):
    _, _, batch, _ = mixed_batch
    with pytest.raises(ValueError, match="max_tokens_per_pass: 51 tokens cannot hold one sequence of 52 tokens"):
        chunks.plan_chunks(chunks.prompt_lengths(batch), chunks.response_widths(batch), torch.arange(ROWS), 51)


# Methods without a random draw: a row's scores are a function of the row alone. (OAR-G's
# noise and taylor's sampled directions are drawn from the row's index in the batch.)
DETERMINISTIC = {
    "oar_g_answer_logprob": lambda model, batch, segments, budget: gradient.attribute(model, batch, segments, GradientConfig(target="answer_logprob", noise_std=0.0, max_tokens_per_pass=budget)),
    "taylor_top": lambda model, batch, segments, budget: taylor.attribute(model, batch, segments, PerturbationConfig(target="first_answer", mode="taylor", taylor_top=3, taylor_samples=0, perturbation_id=0, max_tokens_per_pass=budget)),
    "oar_p_exact": lambda model, batch, segments, budget: attribute(model, batch, segments, PerturbationConfig(target="answer_mean", perturbation_id=0, max_tokens_per_pass=budget)),
}  # fmt: skip
SEEDED = {
    "oar_g_answer_mean": lambda model, batch, segments, budget: gradient.attribute(model, batch, segments, GradientConfig(target="answer_mean", max_tokens_per_pass=budget)),
    "taylor_sampled": lambda model, batch, segments, budget: taylor.attribute(model, batch, segments, PerturbationConfig(target="answer_mean", mode="taylor", taylor_top=1, taylor_samples=2, perturbation_id=0, max_tokens_per_pass=budget)),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(DETERMINISTIC))
def test_scores_equal_each_row_alone_in_any_order_and_budget(model64, mixed_batch, method):
    _, _, batch, segments = mixed_batch
    attribute = DETERMINISTIC[method]
    expected = [attribute(model64, *alone(batch, segments, row), 10_000)[0] for row in range(ROWS)]
    order = torch.tensor([3, 6, 0, 5, 1, 4, 2])
    for budget, rows in ((10_000, torch.arange(ROWS)), (60, torch.arange(ROWS)), (130, order)):
        scores = attribute(model64, batch.select(rows), segments.select(rows), budget)
        for position, row in enumerate(rows.tolist()):
            width = len(expected[row])
            torch.testing.assert_close(scores[position, :width], expected[row], rtol=1e-6, atol=1e-12)
            assert torch.all(scores[position, width:] == 0)
            assert bool((expected[row][: int(segments.reasoning_end[row])] > 0).all())


@pytest.mark.parametrize("method", sorted(SEEDED))
def test_seeded_scores_do_not_depend_on_the_budget(model64, mixed_batch, method):
    _, _, batch, segments = mixed_batch
    attribute = SEEDED[method]
    whole = attribute(model64, batch, segments, 10_000)
    assert bool((whole[segments.reasoning_mask(batch.response_length)] > 0).all())
    for budget in (52, 60, 130):
        torch.testing.assert_close(attribute(model64, batch, segments, budget), whole, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("method", ["oar_g", "taylor"])
def test_fused_log_probs_equal_each_row_alone(model64, mixed_batch, method):
    _, _, batch, segments = mixed_batch
    fused = gradient.attribute_with_log_probs if method == "oar_g" else taylor.attribute_with_log_probs
    config = (
        GradientConfig(target="answer_logprob", noise_std=0.0, max_tokens_per_pass=60)
        if method == "oar_g"
        else PerturbationConfig(mode="taylor", taylor_samples=0, perturbation_id=0, max_tokens_per_pass=60)
    )
    attributed = torch.tensor([True, False, True, True, False, False, True])  # the others: log-probs only
    result = fused(model64, batch, segments, config, attributed, temperature=0.7)
    for row in range(ROWS):
        single, single_segments = alone(batch, segments, row)
        expected = fused(model64, single, single_segments, config, attributed[row : row + 1], temperature=0.7)
        width = single.response_length
        for name in ("scores", "log_probs", "entropy"):
            torch.testing.assert_close(getattr(result, name)[row, :width], getattr(expected, name)[0], rtol=1e-6, atol=1e-12)
            assert torch.all(getattr(result, name)[row, width:] == 0)
        assert bool((result.scores[row] != 0).any()) == bool(attributed[row])
