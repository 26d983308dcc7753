"""OAR-G fused with the log-prob pass: the log-probs are the model's (plain forward, at the
temperature), the scores are the autograd definition's (answer_logprob: at noise 0), and
gradient checkpointing on the model changes nothing."""

import pytest
import torch

from oar_verl.core import TARGET_MODES, GradientConfig
from oar_verl.core.attribution import gradient

from .test_gradient import reference_scores


def plain_log_probs(model, batch, temperature):
    """([B, R] log-probs of the response tokens, [B, R] entropies) from one ordinary forward."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits.double()
    P = batch.prompt_length
    distribution = torch.distributions.Categorical(logits=logits[:, P - 1 : -1] / temperature)
    log_probs = distribution.log_prob(batch.responses)
    return log_probs * batch.response_mask, distribution.entropy() * batch.response_mask


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_fused_scores_and_log_probs_equal_their_definitions(model64, batch_and_segments, mode):
    _, _, batch, segments = batch_and_segments
    sigma = 0.0 if mode == "answer_logprob" else 1e-3  # fused answer_logprob takes the clean-pass gradient
    config = GradientConfig(target=mode, noise_std=1e-3, seed=7, max_tokens_per_pass=2 * batch.input_ids.shape[1])
    with torch.no_grad():
        expected_log_probs, expected_entropy = plain_log_probs(model64, batch, temperature=0.7)
    fused = gradient.attribute_with_log_probs(model64, batch, segments, config, temperature=0.7)
    torch.testing.assert_close(fused.log_probs.double(), expected_log_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.entropy.double(), expected_entropy, rtol=1e-5, atol=1e-6)
    expected = reference_scores(model64, batch_and_segments, mode, sigma, 7)
    for row, values in expected.items():
        end = int(segments.reasoning_end[row])
        torch.testing.assert_close(fused.scores[row, :end], values.float(), rtol=1e-4, atol=1e-12)
        assert torch.all(fused.scores[row, end:] == 0)
    assert torch.all(fused.scores[3] == 0) and torch.any(fused.log_probs[3] != 0)  # unattributed rows still get log-probs
    for parameter in model64.parameters():
        assert parameter.grad is None


def test_fused_kl_scores_equal_standalone_and_rows_are_honoured(model, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = GradientConfig(target="answer_mean", seed=3, max_tokens_per_pass=batch.input_ids.shape[1])  # one row per pass
    rows = torch.tensor([True, False, True, True])
    standalone = gradient.attribute(model, batch, segments, config, rows=rows)
    fused = gradient.attribute_with_log_probs(model, batch, segments, config, rows=rows)
    torch.testing.assert_close(fused.scores, standalone, rtol=1e-4, atol=1e-9)
    assert torch.all(fused.scores[1] == 0) and torch.any(fused.log_probs[1] != 0)


def test_gradient_checkpointing_changes_nothing(model, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    config = GradientConfig(target="answer_mean", seed=5)
    before = gradient.attribute_with_log_probs(model, batch, segments, config)
    model.gradient_checkpointing_enable()
    try:
        model.train()
        after = gradient.attribute_with_log_probs(model, batch, segments, config)
        standalone = gradient.attribute(model, batch, segments, config)
        assert model.training and model.is_gradient_checkpointing  # mode and setting restored
    finally:
        model.gradient_checkpointing_disable()
        model.eval()
    torch.testing.assert_close(after.scores, before.scores)
    torch.testing.assert_close(after.log_probs, before.log_probs)
    torch.testing.assert_close(standalone, before.scores, rtol=1e-4, atol=1e-9)


def test_bad_temperature_and_budget_are_named(model, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    with pytest.raises(ValueError, match="temperature"):
        gradient.attribute_with_log_probs(model, batch, segments, GradientConfig(), temperature=0)
    with pytest.raises(ValueError, match="max_tokens_per_pass: 4 tokens cannot hold one sequence"):
        gradient.attribute_with_log_probs(model, batch, segments, GradientConfig(max_tokens_per_pass=4))


def layer_events(model):
    """Records 'F' (forward) and 'B' (backward) of the first decoder layer, the passes an
    FSDP-wrapped layer gathers its parameters for; returns (events, remove hooks)."""
    layer, events = model.model.layers[0], []
    handles = [layer.register_forward_pre_hook(lambda *_: events.append("F")), layer.register_full_backward_pre_hook(lambda *_: events.append("B"))]
    return events, lambda: [handle.remove() for handle in handles]


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_every_row_set_runs_the_same_passes(model, batch_and_segments, mode):
    """With the step counts fixed by the sync, the model passes (the collectives an FSDP rank
    issues) are the same whatever rows a rank attributes: all, some or none."""
    _, _, batch, segments = batch_and_segments
    config = GradientConfig(target=mode, max_tokens_per_pass=batch.input_ids.shape[1])  # one row per pass
    four_steps = lambda local: 4  # noqa: E731 - every rank runs 4 steps of each kind
    for attribute in (
        lambda rows: gradient.attribute(model, batch, segments, config, rows=rows, sync_passes=four_steps),
        lambda rows: gradient.attribute_with_log_probs(model, batch, segments, config, rows=rows, sync_passes=four_steps),
    ):
        seen = []
        for rows in (torch.tensor([True, True, True, True]), torch.tensor([False, True, False, False]), torch.zeros(4, dtype=torch.bool)):
            events, remove = layer_events(model)
            try:
                attribute(rows)
            finally:
                remove()
            seen.append(events)
        assert seen[0] == seen[1] == seen[2] and "B" in seen[0], seen


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_scores_do_not_depend_on_the_split_into_passes(model, batch_and_segments, mode):
    _, _, batch, segments = batch_and_segments
    L = batch.input_ids.shape[1]
    one_per_pass = gradient.attribute(model, batch, segments, GradientConfig(target=mode, seed=4, max_tokens_per_pass=L))
    all_in_one = gradient.attribute(model, batch, segments, GradientConfig(target=mode, seed=4, max_tokens_per_pass=4 * L))
    torch.testing.assert_close(one_per_pass, all_in_one, rtol=1e-4, atol=1e-9)
    fused = gradient.attribute_with_log_probs(model, batch, segments, GradientConfig(target=mode, seed=4, max_tokens_per_pass=2 * L))
    expected = all_in_one if mode != "answer_logprob" else gradient.attribute(model, batch, segments, GradientConfig(target=mode, noise_std=0.0))
    torch.testing.assert_close(fused.scores, expected, rtol=1e-4, atol=1e-9)


def test_gradient_checkpointing_is_honoured(model, batch_and_segments):
    """A checkpointing model recomputes each layer in the attribution backward (its
    activations are not kept) and gives the same scores and log-probs."""
    _, _, batch, segments = batch_and_segments
    config = GradientConfig(target="answer_mean", seed=5, max_tokens_per_pass=4 * batch.input_ids.shape[1])  # one step
    events, remove = layer_events(model)
    try:
        before = gradient.attribute_with_log_probs(model, batch, segments, config)
        plain_events = list(events)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        events.clear()
        after = gradient.attribute_with_log_probs(model, batch, segments, config)
    finally:
        remove()
        model.gradient_checkpointing_disable()
    assert plain_events == ["F", "F", "B", "F"]  # clean, noisy, backward; log-prob-only row
    assert events == ["F", "F", "B", "F", "F"]  # the backward recomputes the noisy forward
    torch.testing.assert_close(after.scores, before.scores)
    torch.testing.assert_close(after.log_probs, before.log_probs)
