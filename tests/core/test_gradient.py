import numpy as np
import pytest
import torch

from oar_verl.core import TARGET_MODES, GradientConfig
from oar_verl.core.attribution import gradient

from . import reference


def documented_noise(row, reasoning_tokens, hidden_size, sigma, seed):
    """The noise draw the module docstring promises for one row: [n, H] on its n reasoning
    tokens, from a generator seeded by (seed, row)."""
    row_seed = int(np.random.SeedSequence([seed, row]).generate_state(1, np.uint64)[0]) % 2**63
    generator = torch.Generator().manual_seed(row_seed)
    return torch.randn((reasoning_tokens, hidden_size), generator=generator, dtype=torch.float32) * sigma


def reference_scores(model, batch_and_segments, mode, sigma, seed):
    prompts, responses, batch, segments = batch_and_segments
    expected = {}
    for row in range(3):
        end, start, stop = (int(x[row]) for x in (segments.reasoning_end, segments.answer_start, segments.answer_end))
        prompt, response = prompts[row], responses[row]
        row_noise = torch.zeros(len(prompt) + len(response), model.config.hidden_size)  # the row's real positions
        row_noise[len(prompt) : len(prompt) + end] = documented_noise(row, end, model.config.hidden_size, sigma, seed)
        expected[row] = reference.oar_g(model, prompt, response, end, start, stop, mode, row_noise)
    return expected


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_g_equals_autograd_definition_float64(model64, batch_and_segments, mode):
    _, _, batch, segments = batch_and_segments
    config = GradientConfig(target=mode, noise_std=1e-3, seed=7)
    scores = gradient.attribute(model64, batch, segments, config)
    expected = reference_scores(model64, batch_and_segments, mode, 1e-3, 7)
    for row, values in expected.items():
        end = int(segments.reasoning_end[row])
        assert torch.all(values > 0)
        torch.testing.assert_close(scores[row, :end], values.float(), rtol=1e-4, atol=1e-12)
        assert torch.all(scores[row, end:] == 0)
    assert torch.all(scores[3] == 0)


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_oar_g_float32_close_to_definition(model, batch_and_segments, mode):
    _, _, batch, segments = batch_and_segments
    scores = gradient.attribute(model, batch, segments, GradientConfig(target=mode, seed=3, max_tokens_per_pass=30))
    expected = reference_scores(model, batch_and_segments, mode, 1e-3, 3)
    for row, values in expected.items():
        end = int(segments.reasoning_end[row])
        scale = float(values.abs().max())
        torch.testing.assert_close(scores[row, :end], values.float(), rtol=0, atol=2e-2 * scale)


def test_noise_seed_changes_kl_scores_but_not_first_order_ones(model64, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    a = gradient.attribute(model64, batch, segments, GradientConfig(target="answer_mean", seed=0))
    b = gradient.attribute(model64, batch, segments, GradientConfig(target="answer_mean", seed=1))
    assert (a - b).abs().max() > 0.1 * a.abs().max(), "the KL gradient is a randomised second-order signal"
    exact = gradient.attribute(model64, batch, segments, GradientConfig(target="answer_logprob", noise_std=0.0))
    noisy = gradient.attribute(model64, batch, segments, GradientConfig(target="answer_logprob", noise_std=1e-6, seed=5))
    torch.testing.assert_close(exact, noisy, rtol=0, atol=1e-2 * float(exact.abs().max()))


def test_no_parameter_gradient_and_mode_restored(model, batch_and_segments):
    _, _, batch, segments = batch_and_segments
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back as it was
    marker = torch.full_like(model.lm_head.weight, 0.5)
    model.lm_head.weight.grad = marker.clone()
    try:
        scores = gradient.attribute(model, batch, segments, GradientConfig())
        assert torch.any(scores > 0)
        assert torch.equal(model.lm_head.weight.grad, marker), "an existing .grad was changed"
        others = [name for name, p in model.named_parameters() if p.grad is not None and name != "lm_head.weight"]
        assert others == [], f"parameter gradients were created: {others}"
        assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    finally:
        model.lm_head.weight.grad = None
        model.eval()


def test_attribution_runs_in_eval_mode(tokenizer, batch_and_segments):
    """With dropout on, a train-mode pass would differ between two calls."""
    from oar_verl.tiny.models import tiny_qwen2

    _, _, batch, segments = batch_and_segments
    model = tiny_qwen2(len(tokenizer), hidden_size=32, seed=1)
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    model.train()
    first = gradient.attribute(model, batch, segments, GradientConfig())
    second = gradient.attribute(model, batch, segments, GradientConfig())
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert model.training


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"target": "last"}, "target"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"noise_std": 0.0}, "noise_std"),
        ({"seed": -1}, "seed"),
        ({"max_tokens_per_pass": 0}, "max_tokens_per_pass"),
    ],
)
def test_bad_config_names_the_setting(settings, name):
    with pytest.raises(ValueError, match=name):
        GradientConfig(**settings)
