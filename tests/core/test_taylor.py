"""OAR-P's Taylor mode against the expansions' definitions, computed independently on the
full model, one response at a time: the target's full Jacobian with respect to the input
embeddings (autograd through `model(inputs_embeds=...)`), projected on each replacement."""

import pytest
import torch

from oar_verl.core import GradientConfig, PerturbationConfig
from oar_verl.core.attribution import attribute, fused_attribution, gradient, taylor

from . import reference
from .test_fused import layer_events, plain_log_probs

PERTURBATION_ID = 3


def directional_derivatives(model, prompt, response, reasoning_end, answer_start, answer_end, mode):
    """([reasoning_end, V] or [reasoning_end] for answer_logprob, clean target): the
    derivative of the target along E_t -> E(perturbation id), for each reasoning token t."""
    sequence = torch.tensor([prompt + response])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(sequence)[0]  # [L, H]
        replacement = model.get_input_embeddings()(torch.tensor([PERTURBATION_ID]))[0]  # [H]
        clean = reference.target_from_logits(model(input_ids=sequence).logits[0], len(prompt), response, answer_start, answer_end, mode)

    def target(inputs):  # [L, H] -> [V] or []
        logits = model(inputs_embeds=inputs[None]).logits[0]
        return reference.target_from_logits(logits, len(prompt), response, answer_start, answer_end, mode)

    jacobian = torch.autograd.functional.jacobian(target, embeds)  # [V, L, H] or [L, H]
    positions = range(len(prompt), len(prompt) + reasoning_end)
    derivatives = [(jacobian[..., t, :] * (replacement - embeds[t])).sum(dim=-1) for t in positions]
    return torch.stack(derivatives), clean


def expansion(model, batch_and_segments, mode):
    """Row -> [reasoning_end] the expansion's score by its definition: |dphi| or
    1/2 sum_v p_v (dlog p_v)^2."""
    prompts, responses, _, segments = batch_and_segments
    expected = {}
    for row in range(3):
        end, start, stop = (int(x[row]) for x in (segments.reasoning_end, segments.answer_start, segments.answer_end))
        derivative, clean = directional_derivatives(model, prompts[row], responses[row], end, start, stop, mode)
        if mode == "answer_logprob":
            expected[row] = derivative.abs()
        else:
            expected[row] = 0.5 * (clean.exp()[None] * derivative.square()).sum(dim=-1)
    return expected


def taylor_config(mode, **kwargs):
    return PerturbationConfig(target=mode, perturbation_id=PERTURBATION_ID, mode="taylor", **kwargs)


@pytest.mark.parametrize("mode", ["answer_logprob", "first_answer", "answer_mean"])
def test_equals_the_expansion_exactly_with_the_whole_vocabulary(model64, batch_and_segments, mode):
    """answer_logprob: the first-order term; KL targets: the Fisher form over every token."""
    _, _, batch, segments = batch_and_segments
    vocabulary = model64.config.vocab_size
    scores = attribute(model64, batch, segments, taylor_config(mode, taylor_top=vocabulary, taylor_samples=0))
    for row, values in expansion(model64, batch_and_segments, mode).items():
        end = int(segments.reasoning_end[row])
        assert torch.all(values > 0)
        torch.testing.assert_close(scores[row, :end], values.float(), rtol=1e-4, atol=1e-10)
        assert torch.all(scores[row, end:] == 0)
    assert torch.all(scores[3] == 0)


def test_sampled_projections_converge_to_the_fisher_form(model64, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    exact = attribute(model64, batch, segments, taylor_config("answer_mean", taylor_top=model64.config.vocab_size))
    errors = []
    for samples in (4, 64, 512):
        estimate = attribute(model64, batch, segments, taylor_config("answer_mean", taylor_top=0, taylor_samples=samples, seed=5))
        errors.append(float((estimate - exact).norm() / exact.norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1, errors


def test_top_tokens_plus_samples_is_unbiased_and_top_alone_a_lower_bound(model64, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    exact = attribute(model64, batch, segments, taylor_config("first_answer", taylor_top=model64.config.vocab_size))
    top_only = attribute(model64, batch, segments, taylor_config("first_answer", taylor_top=4))
    mixed = attribute(model64, batch, segments, taylor_config("first_answer", taylor_top=4, taylor_samples=1024, seed=1))
    assert torch.all(top_only <= exact * (1 + 1e-6)) and float(top_only.sum()) < float(exact.sum())
    assert float((mixed - exact).norm() / exact.norm()) < 0.1


def test_directions_span_the_fisher_matrix():
    """sum_k weight_k w_k w_k^T = diag(p) - p p^T with every token taken exactly."""
    log_probs = torch.log_softmax(torch.randn(2, 7, dtype=torch.float64), dim=-1)
    projections, weights = taylor.directions(log_probs, torch.tensor([0, 1]), top=7, samples=0, seed=0)
    assert projections.shape == (7, 2, 7)
    for row in range(2):
        p = log_probs[row].exp().float()
        fisher = torch.einsum("k,ki,kj->ij", weights, projections[:, row], projections[:, row])
        torch.testing.assert_close(fisher, torch.diag(p) - torch.outer(p, p), rtol=1e-5, atol=1e-6)


def test_scores_do_not_depend_on_the_rows_a_pass_holds(model64, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    together = attribute(model64, batch, segments, taylor_config("answer_mean", taylor_top=2, taylor_samples=3, seed=9))
    alone = attribute(model64, batch, segments, taylor_config("answer_mean", taylor_top=2, taylor_samples=3, seed=9, max_tokens_per_pass=20))
    torch.testing.assert_close(alone, together, rtol=1e-9, atol=1e-12)


def test_rows_honoured_no_parameter_gradient_and_modes_restored(model, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    model.train()
    try:
        scores = attribute(model, batch, segments, taylor_config("first_answer"), rows=torch.tensor([False, True, False, True]))
        assert model.training and all(module.training for module in model.modules())
    finally:
        model.eval()
    assert all(parameter.grad is None for parameter in model.parameters())
    assert torch.all(scores[[0, 2, 3]] == 0) and torch.all(scores[1, :3] > 0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"taylor_top": -1}, "taylor_top"),
        ({"taylor_samples": -2}, "taylor_samples"),
        ({"taylor_top": 0, "taylor_samples": 0}, "taylor_top, taylor_samples"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        taylor_config("first_answer", **kwargs)


def test_activation_checkpointing_gives_the_same_scores(tokenizer, batch_and_segments):
    """Several backward passes through one checkpointed graph (recomputed per backward)."""
    from oar_verl.tiny.models import tiny_qwen2

    _, _, batch, segments = batch_and_segments
    plain = tiny_qwen2(len(tokenizer), hidden_size=32, seed=4, dtype=torch.float64).eval()
    checkpointed = tiny_qwen2(len(tokenizer), hidden_size=32, seed=4, dtype=torch.float64)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed.eval()
    config = taylor_config("answer_mean", taylor_top=3, taylor_samples=2)
    torch.testing.assert_close(attribute(checkpointed, batch, segments, config), attribute(plain, batch, segments, config), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["answer_logprob", "first_answer", "answer_mean"])
def test_fused_with_the_log_prob_pass(model64, batch_and_segments, mode):
    """The fused step's scores are the standalone estimates, its log-probs and entropies
    those of a plain forward at the temperature, for attributed and other rows alike."""
    _, _, batch, segments = batch_and_segments
    config = taylor_config(mode, taylor_top=3, taylor_samples=2, seed=4, max_tokens_per_pass=2 * batch.input_ids.shape[1])
    rows = torch.tensor([True, False, True, True])
    standalone = attribute(model64, batch, segments, config, rows=rows)
    fused = taylor.attribute_with_log_probs(model64, batch, segments, config, rows=rows, temperature=0.7)
    with torch.no_grad():
        expected_log_probs, expected_entropy = plain_log_probs(model64, batch, temperature=0.7)
    torch.testing.assert_close(fused.scores, standalone, rtol=1e-7, atol=1e-12)
    assert torch.all(fused.scores[1] == 0) and torch.any(standalone[0] > 0)
    torch.testing.assert_close(fused.log_probs.double(), expected_log_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.entropy.double(), expected_entropy, rtol=1e-5, atol=1e-6)
    assert all(parameter.grad is None for parameter in model64.parameters())


def test_fused_steps_are_the_same_whatever_rows_a_rank_holds(model, batch_and_segments):
    """With the step counts fixed by the sync, the layer passes (an FSDP rank's collectives)
    do not depend on which rows a rank attributes."""
    _, _, batch, segments = batch_and_segments
    config = taylor_config("first_answer", taylor_top=2, taylor_samples=1, max_tokens_per_pass=batch.input_ids.shape[1])  # one row per pass
    seen = []
    for rows in (torch.tensor([True, True, True, True]), torch.tensor([False, True, False, False]), torch.zeros(4, dtype=torch.bool)):
        events, remove = layer_events(model)
        try:
            taylor.attribute_with_log_probs(model, batch, segments, config, rows=rows, sync_passes=lambda local: 4)
        finally:
            remove()
        seen.append(events)
    assert seen[0] == seen[1] == seen[2] and seen[0].count("B") == 4 * 3, seen


def test_fused_is_offered_for_the_gradient_methods_only():
    assert fused_attribution(taylor_config("first_answer")) is taylor.attribute_with_log_probs
    assert fused_attribution(GradientConfig()) is gradient.attribute_with_log_probs
    for mode in ("exact", "span_approx", "guided_approx"):
        assert fused_attribution(PerturbationConfig(perturbation_id=0, mode=mode)) is None
