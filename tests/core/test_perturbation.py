import pytest
import torch

from oar_verl.core import TARGET_MODES, PerturbationConfig
from oar_verl.core.attribution import perturbation

from . import reference


@pytest.mark.parametrize("mode", TARGET_MODES)
@pytest.mark.parametrize("max_tokens_per_pass", [16384, 40])
def test_oar_p_equals_brute_force_definition(model, tokenizer, batch_and_segments, mode, max_tokens_per_pass):
    prompts, responses, batch, segments = batch_and_segments
    config = PerturbationConfig(target=mode, perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=max_tokens_per_pass)
    scores = perturbation.attribute(model, batch, segments, config)
    assert scores.shape == (4, batch.response_length) and scores.dtype == torch.float32
    for row in range(3):
        end, start, stop = (int(x[row]) for x in (segments.reasoning_end, segments.answer_start, segments.answer_end))
        expected = reference.oar_p(model, prompts[row], responses[row], end, start, stop, mode, tokenizer.pad_token_id)
        assert torch.all(expected > 0), "the definition gives a nonzero shift for every token of a random model"
        torch.testing.assert_close(scores[row, :end], expected.float(), atol=1e-5, rtol=0)
        assert torch.all(scores[row, end:] == 0)
    assert torch.all(scores[3] == 0), "a row without an answer is not attributed"


def test_rows_argument_skips_rows(model, tokenizer, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = PerturbationConfig(perturbation_id=tokenizer.pad_token_id)
    everything = perturbation.attribute(model, batch, segments, config)
    some = perturbation.attribute(model, batch, segments, config, rows=torch.tensor([False, True, True, True]))
    assert torch.all(some[0] == 0) and torch.any(everything[0] > 0)
    torch.testing.assert_close(some[1:], everything[1:], atol=1e-6, rtol=0)


def test_no_attributable_row_gives_zeros(model, tokenizer, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = PerturbationConfig(perturbation_id=tokenizer.pad_token_id)
    scores = perturbation.attribute(model, batch, segments, config, rows=torch.tensor([False, False, False, True]))
    assert scores.shape == (4, batch.response_length) and torch.all(scores == 0)


def test_token_budget_smaller_than_one_sequence_is_refused(model, tokenizer, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = PerturbationConfig(perturbation_id=tokenizer.pad_token_id, max_tokens_per_pass=4)
    with pytest.raises(ValueError, match="max_tokens_per_pass"):
        perturbation.attribute(model, batch, segments, config)


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"target": "last"}, "target"),
        ({"perturbation_id": None}, "perturbation_id"),
        ({"perturbation_id": 1, "max_tokens_per_pass": 0}, "max_tokens_per_pass"),
        ({"perturbation_id": 1, "mode": "fast"}, "mode"),
        ({"perturbation_id": 1, "mode": "span_approx", "span": 0}, "span"),
        ({"perturbation_id": 1, "guided_fraction": 0.0}, "guided_fraction"),
        ({"perturbation_id": 1, "calibration_fraction": 1.5}, "calibration_fraction"),
    ],
)
def test_bad_config_names_the_setting(settings, name):
    with pytest.raises(ValueError, match=name):
        PerturbationConfig(**settings)


def test_sync_passes_runs_idle_passes_and_refuses_fewer(model, tokenizer, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = PerturbationConfig(perturbation_id=tokenizer.pad_token_id)
    seen = []
    scores = perturbation.attribute(model, batch, segments, config, sync_passes=lambda local: seen.append(local) or local + 3)
    torch.testing.assert_close(scores, perturbation.attribute(model, batch, segments, config), rtol=0, atol=1e-6)
    assert len(seen) == 1 and seen[0] >= 1 + 3  # a clean pass, then at least one pass per attributed row
    with pytest.raises(ValueError, match="sync_passes"):
        perturbation.attribute(model, batch, segments, config, sync_passes=lambda local: local - 1)


def test_windows_bound_the_recomputed_tokens():
    """Each pass recomputes from its window's first perturbed token; windows are narrow
    enough that the tokens recomputed stay within 1.3x the floor (each perturbation
    recomputing from its own token) and each pass within the token budget."""
    from oar_verl.core.attribution.perturbation import _windows

    for reasoning, prompt, tail, budget in [(122, 40, 6, 8192), (1000, 300, 10, 32768), (50, 10, 3, 200), (7, 3, 2, 64)]:
        length = prompt + reasoning + tail
        windows = _windows(torch.arange(reasoning), 1, prompt, length, budget)
        assert torch.equal(torch.cat(windows), torch.arange(reasoning))
        recomputed = sum(len(w) * (length - prompt - int(w[0])) for w in windows)
        floor = sum(length - prompt - t for t in range(reasoning))
        assert recomputed <= 1.3 * floor, (reasoning, recomputed / floor)
        assert all(len(w) * (length - prompt - int(w[0])) <= budget for w in windows)


@pytest.mark.parametrize("span", [1, 2, 3])
def test_span_occlusion_equals_its_definition(model, tokenizer, batch_and_segments, span):
    """span_approx replaces runs of `span` reasoning tokens together; each token of a run
    gets the run's shift (brute force: one full forward per run)."""
    prompts, responses, batch, segments = batch_and_segments
    config = PerturbationConfig(target="answer_mean", perturbation_id=tokenizer.pad_token_id, mode="span_approx", span=span)
    scores = perturbation.attribute(model, batch, segments, config)
    for row in range(3):
        end, start, stop = (int(x[row]) for x in (segments.reasoning_end, segments.answer_start, segments.answer_end))
        with torch.no_grad():
            sequence = torch.tensor([prompts[row] + responses[row]])
            clean = reference.target_from_logits(model(input_ids=sequence).logits[0], len(prompts[row]), responses[row], start, stop, "answer_mean")
            for first in range(0, end, span):
                perturbed = sequence.clone()
                perturbed[0, len(prompts[row]) + first : len(prompts[row]) + min(first + span, end)] = tokenizer.pad_token_id
                other = reference.target_from_logits(
                    model(input_ids=perturbed).logits[0], len(prompts[row]), responses[row], start, stop, "answer_mean"
                )
                expected = reference.shift(clean, other, "answer_mean").abs().float()
                torch.testing.assert_close(
                    scores[row, first : min(first + span, end)], expected.expand(min(first + span, end) - first), atol=1e-5, rtol=0
                )
        assert torch.all(scores[row, end:] == 0)
    exact = perturbation.attribute(model, batch, segments, PerturbationConfig(target="answer_mean", perturbation_id=tokenizer.pad_token_id))
    if span == 1:
        torch.testing.assert_close(scores, exact, atol=1e-6, rtol=0)


def test_guided_approx_scores_exactly_the_top_tokens_and_scales_the_rest(model, tokenizer, batch_and_segments):
    """guided_approx: the top OAR-G tokens and a calibration sample carry exact OAR-P
    scores; the others are OAR-G scores times one per-row factor."""
    from oar_verl.core.attribution import gradient

    _, _, batch, segments = batch_and_segments
    base = PerturbationConfig(target="answer_mean", perturbation_id=tokenizer.pad_token_id)
    exact = perturbation.attribute(model, batch, segments, base)
    config = PerturbationConfig(
        target="answer_mean", perturbation_id=tokenizer.pad_token_id, mode="guided_approx", guided_fraction=0.34, calibration_fraction=0.5
    )
    approx = perturbation.attribute(model, batch, segments, config)
    guide = gradient.attribute(model, batch, segments, gradient.GradientConfig(target="answer_mean", seed=0))
    for row in range(3):
        end = int(segments.reasoning_end[row])
        top = guide[row, :end].argsort(descending=True)[: -(-34 * end // 100)]
        torch.testing.assert_close(approx[row, top], exact[row, top], atol=1e-6, rtol=0)
        same = (approx[row, :end] - exact[row, :end]).abs() < 1e-6
        assert int(same.sum()) >= len(top) + 1, "the calibration tokens are exact too"
        scaled = ~same
        if bool(scaled.any()):
            ratio = approx[row, :end][scaled] / guide[row, :end][scaled]
            torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-4, atol=0)
    full = PerturbationConfig(target="answer_mean", perturbation_id=tokenizer.pad_token_id, mode="guided_approx", guided_fraction=1.0)
    torch.testing.assert_close(perturbation.attribute(model, batch, segments, full), exact, atol=1e-6, rtol=0)


def test_taylor_refuses_the_every_answer_target():
    with pytest.raises(ValueError, match="taylor's Fisher form takes one distribution a row; target 'every_answer'"):
        PerturbationConfig(target="every_answer", mode="taylor")
