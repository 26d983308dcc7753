import pytest
import torch

from oar_verl.core import bilevel_weights, explain
from oar_verl.core.attribution import attribute, gradient, perturbation


@pytest.mark.parametrize("method", ["oar_p", "oar_g"])
def test_explain_one_pair(model, tokenizer, method):
    result = explain(model, tokenizer, "Q: 1+1?\n", "one and one\n#### 2", method=method, answer_pattern="gsm8k")
    n = len(result.response_ids)
    assert len(result.tokens) == len(result.segments) == len(result.scores) == len(result.weights) == n
    assert result.answer_found and not result.degenerate
    reasoning = [k for k, s in enumerate(result.segments) if s == "reasoning"]
    assert len(reasoning) == len("one and one\n")
    assert all(result.scores[k] > 0 for k in reasoning)
    assert all(result.weights[k] == 1.0 and result.scores[k] == 0.0 for k in range(n) if k not in reasoning)
    assert abs(sum(result.weights[k] for k in reasoning) / len(reasoning) - 1.0) < 1e-5
    assert result.segments[-1] == "answer" and "".join(result.tokens) == "one and one\n#### 2"


def test_explain_matches_the_library_pipeline(model, tokenizer):
    """Text in, same numbers as attribute + bilevel_weights on ids (default settings passed on)."""
    from oar_verl.core import ResponseBatch, segment_responses

    prompt = tokenizer("Q?\n", add_special_tokens=False)["input_ids"]
    response = tokenizer("abc\n#### 7", add_special_tokens=False)["input_ids"]
    result = explain(model, tokenizer, prompt, response, method="oar_p", target="answer_logprob", quantile=0.5, beta=2.0)
    batch = ResponseBatch.from_token_lists([prompt], [response], pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask)
    config = perturbation.PerturbationConfig(target="answer_logprob", perturbation_id=tokenizer.pad_token_id)
    scores = attribute(model, batch, segments, config)
    weights = bilevel_weights(scores, segments.reasoning_mask(batch.response_length), quantile=0.5, beta=2.0)
    assert result.scores == scores[0].tolist() and result.weights == weights[0].tolist()
    assert result.target == "answer_logprob"


def test_explain_with_oar_p_taylor(model, tokenizer):
    from oar_verl.core import ResponseBatch, segment_responses

    prompt = tokenizer("Q?\n", add_special_tokens=False)["input_ids"]
    response = tokenizer("abc\n#### 7", add_special_tokens=False)["input_ids"]
    result = explain(model, tokenizer, prompt, response, method="oar_p", mode="taylor", taylor_top=2, taylor_samples=1)
    batch = ResponseBatch.from_token_lists([prompt], [response], pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask)
    config = perturbation.PerturbationConfig(perturbation_id=tokenizer.pad_token_id, mode="taylor", taylor_top=2, taylor_samples=1)
    assert result.scores == attribute(model, batch, segments, config)[0].tolist()
    assert any(score > 0 for score in result.scores)


def test_explain_chat_prompt_and_defaults(model, tokenizer):
    result = explain(model, tokenizer, [{"role": "user", "content": "hi"}], "ok \\boxed{1}")
    assert result.method == "oar_g" and result.target == gradient.GradientConfig().target
    assert tokenizer.decode(result.prompt_ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_explain_without_answer_gives_ones(model, tokenizer):
    result = explain(model, tokenizer, "Q", "I do not know", method="oar_p")
    assert not result.answer_found and result.degenerate
    assert set(result.weights) == {1.0} and set(result.scores) == {0.0}
    assert set(result.segments) == {"unsegmented"}


def test_format_table(model, tokenizer):
    result = explain(model, tokenizer, "Q", "a\n#### 1", method="oar_g")
    lines = result.format_table().splitlines()
    assert lines[0].startswith("oar_g (target answer_mean)") and len(lines) == 2 + len(result.response_ids)
    assert lines[-1].split()[1] == "answer"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"method": "shap"}, "method"),
        ({"method": "oar_g", "target": "last"}, "target"),
        ({"method": "oar_g", "perturbation_id": 3}, "perturbation_id"),
        ({"method": "oar_p", "noise_std": 0.1}, "noise_std"),
        ({"quantile": 2.0}, "quantile"),
        ({"answer_pattern": "("}, "answer_pattern"),
    ],
)
def test_bad_settings_name_the_setting(model, tokenizer, kwargs, name):
    with pytest.raises(ValueError, match=name):
        explain(model, tokenizer, "Q", "a\n#### 1", **kwargs)


def test_model_without_input_embeddings_is_refused(tokenizer):
    class NotAnLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="model"):
        explain(NotAnLM(), tokenizer, "Q", "a\n#### 1")
