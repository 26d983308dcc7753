"""The gradient-level test's parts, each against its definition: the filler task, the token
classes and the oracle mask, the advantages, the policy gradient (a finite
difference), the AdamW step (torch's AdamW), and one batch of the test on the shipped model."""

import dataclasses
import random
import re
import statistics

import pytest
import torch

from oar_verl.core import ResponseBatch, segment_responses
from oar_verl.study.gradient_test import ARMS, AdamState, adam_step, adam_update, clipped, load, measure_batch
from oar_verl.study.masks import oracle_mask_weights, result_spans, token_classes
from oar_verl.study.oracle import FirstError, first_error
from oar_verl.study.plan import GRADIENTS
from oar_verl.study.policy_gradient import (
    flat_gradient,
    grpo_advantages,
    leave_one_out_advantages,
    reward,
    token_log_probs,
    token_mean_coefficients,
)
from oar_verl.study.runner import STORED_WARM_STARTS
from oar_verl.tiny.arithmetic import make_problem, prompt_ids
from oar_verl.tiny.models import byte_tokenizer

QUESTION = "4+7-9 (mod 10)"


def test_filler_follows_each_step_line_and_leaves_the_task_alone():
    problem = make_problem(random.Random(3), 6, 9, min_steps=5, modulus=10, filler=8)
    *steps, answer = problem.solution.split("\n")
    assert all(re.fullmatch(r"\d[+-]\d=\d [a-z]{8}", line) for line in steps) and re.fullmatch(r"#### \d", answer)
    plain = make_problem(random.Random(3), 6, 9, min_steps=5, modulus=10)
    assert plain == make_problem(random.Random(3), 6, 9, min_steps=5, modulus=10, filler=0)
    assert first_error(problem.question, problem.solution, filler=True) is None
    with pytest.raises(ValueError, match="filler"):
        make_problem(random.Random(0), filler=-1)


def test_first_error_ignores_filler_only_when_told():
    assert first_error(QUESTION, "4+7=1 abc\n1-9=2 xyz\n#### 2", filler=True) is None
    assert first_error(QUESTION, "4+7=1 abc\n1-9=3 xyz\n#### 3", filler=True) == FirstError(14, "result")  # "4+7=1 abc\n1-9=" is 14
    assert first_error(QUESTION, "4+7=1 abc\n1-9=2\n#### 2") == FirstError(5, "format")


def _classes(response: str, filler: bool):
    tokenizer = byte_tokenizer()
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    batch = ResponseBatch.from_token_lists([prompt_ids(tokenizer, QUESTION)], [ids], pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    return token_classes(tokenizer, batch.responses, batch.response_mask, segments, [QUESTION], filler)


def test_token_classes_by_the_generator():
    response = "4+7=1 ab\n1-9=3 cd\n#### 3"  # byte tokens: one character each
    classes = _classes(response, filler=True)
    reasoning_end = response.index("#")
    assert classes.reasoning[0].nonzero().flatten().tolist() == list(range(reasoning_end))
    expected_filler = [k for k, char in enumerate(response[:reasoning_end]) if char in " abcd"]
    assert classes.filler[0].nonzero().flatten().tolist() == expected_filler
    assert classes.results[0].nonzero().flatten().tolist() == [4, 13]  # the results 1 and 3
    assert classes.first_error[0].nonzero().flatten().tolist() == [13]  # 1-9 is 2 mod 10
    assert result_spans("12+30=42 xy\n42-7=35\n#### 35") == [(6, 8), (17, 19)]


def test_oracle_mask_damps_to_the_floor_and_keeps_the_mass():
    reasoning = torch.tensor([[True, True, True, True, False], [False] * 5])
    irrelevant = torch.tensor([[True, False, True, True, True], [True] * 5])
    weights = oracle_mask_weights(reasoning, irrelevant, floor=0.1)
    assert torch.allclose(weights[0, :4].mean(), torch.tensor(1.0))
    assert torch.allclose(weights[0, 0] / weights[0, 1], torch.tensor(0.1))
    assert weights[0, 4] == 1 and bool((weights[1] == 1).all())
    assert torch.equal(oracle_mask_weights(reasoning, irrelevant, floor=1.0), torch.ones(2, 5))


def test_grpo_advantages_by_the_definition():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = []
    for group in range(3):
        scores = [float(r) for r, g in zip(rewards, groups) if g == group]
        mean, spread = statistics.fmean(scores), statistics.stdev(scores)  # the unbiased std, as verl takes it
        expected += [(score - mean) / (spread + 1e-6) for score in scores]
    assert torch.allclose(grpo_advantages(rewards, groups), torch.tensor(expected), atol=1e-6)
    assert bool((grpo_advantages(rewards, groups)[3:6] == 0).all())  # a group with one reward has no advantage


def test_leave_one_out_advantages_by_the_definition():
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.allclose(leave_one_out_advantages(rewards, groups), torch.tensor([1.0, -0.5, -0.5, 0.5, 0.5, -1.0]))
    with pytest.raises(ValueError, match="group 2"):
        leave_one_out_advantages(torch.tensor([1.0]), torch.tensor([2]))


def test_reward_is_verls_gsm8k_rule():
    assert reward("1+1=2\n#### 2", 2) == 1.0 and reward("#### 3\n#### 2", 2) == 1.0
    assert reward("#### 2\n#### 3", 2) == 0.0 and reward("the answer is 2", 2) == 0.0


def test_policy_gradient_is_the_derivative_of_the_weighted_log_probs():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)  # GPT-2 computes in its dtype throughout (Qwen2's RMSNorm rounds to float32)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)).double().eval()
    batch = ResponseBatch.from_token_lists([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14, 15]], pad_token_id=0)
    coefficients = token_mean_coefficients(torch.tensor([1.5, -0.5], dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64), batch.response_mask)
    parameters = list(model.parameters())
    gradient = flat_gradient(token_log_probs(model, batch), coefficients, parameters)
    direction = torch.randn(gradient.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def objective(step: float) -> float:
        with torch.no_grad():
            offset = 0
            for parameter in parameters:
                parameter += step * direction[offset : offset + parameter.numel()].view_as(parameter)
                offset += parameter.numel()
            value = float((coefficients * token_log_probs(model, batch)).sum())
            offset = 0
            for parameter in parameters:
                parameter -= step * direction[offset : offset + parameter.numel()].view_as(parameter)
                offset += parameter.numel()
        return value

    finite_difference = (objective(1e-6) - objective(-1e-6)) / 2e-6
    assert abs(float(gradient @ direction) - finite_difference) < 1e-6 * abs(finite_difference)


def test_adam_step_is_torchs_adamw_after_clipping():
    plan = dataclasses.replace(GRADIENTS, learning_rate=1e-3)
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(7, dtype=torch.float64, generator=generator) * scale for scale in (0.3, 3.0, 0.5, 2.0)]
    parameter = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    optimizer = torch.optim.AdamW([parameter], lr=plan.learning_rate, betas=plan.adam_betas, eps=plan.adam_eps, weight_decay=0.0)
    state = AdamState(torch.zeros(0), torch.zeros(0), 0)
    for gradient in gradients[:-1]:
        parameter.grad = -gradient.clone()  # ascent on the objective = descent on its negative
        torch.nn.utils.clip_grad_norm_([parameter], plan.clip_grad)
        optimizer.step()
        state = adam_update(plan, state, gradient)
    before = parameter.detach().clone()
    parameter.grad = -gradients[-1].clone()
    torch.nn.utils.clip_grad_norm_([parameter], plan.clip_grad)
    optimizer.step()
    assert torch.allclose(adam_step(plan, state, gradients[-1]), parameter.detach() - before, rtol=1e-10, atol=1e-15)
    assert torch.allclose(clipped(gradients[1], 1.0).norm(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)


def test_one_batch_on_the_shipped_model():
    """Every arm measured on the same samples: the oracle mask at floor 1 is GRPO exactly."""
    model, tokenizer = load(STORED_WARM_STARTS / "chains")
    parameters = sum(p.numel() for p in model.parameters())
    reference = torch.randn(parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plan = dataclasses.replace(GRADIENTS, prompts=4, samples=4, mask_floor=1.0)
    record = measure_batch(plan, "chains", "warm_start", 0, model, tokenizer, reference, AdamState(torch.zeros(0), torch.zeros(0), 0))
    assert set(record["arms"]) == set(ARMS) and record["tokens"] > 0
    assert record["arms"]["oracle_mask"] == record["arms"]["grpo"]
    assert record["arms"]["grpo"]["norm"] > 0, "the shipped model's groups should have mixed rewards on this batch"
    assert all(-1 <= arm["cosine"] <= 1 for arm in record["arms"].values())
    rows_with_advantage = plan.prompts * plan.samples - record["zero_advantage_rows"]
    assert all(0 <= rows <= rows_with_advantage for rows in record["reweighted_rows"].values())
