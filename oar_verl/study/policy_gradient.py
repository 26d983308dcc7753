"""Policy gradients of a small causal LM on the study's arithmetic task, without verl's
trainer: sampled groups in verl's layout, the gsm8k rule's rewards, GRPO's (verl's function)
and leave-one-out advantages,
token-weighted policy gradients as flat vectors, and a GRPO loop with verl's actor
objective at the study's settings (the gradient test's checkpoints).

At ratio 1 (on-policy) the gradient of verl's token-mean policy loss with advantages
A [B] and token weights w [B, R] is

    g = sum_{i,t} A_i w_it grad log pi(y_it) / (number of response tokens)

(the ascent direction of the expected reward's surrogate; `token_mean_coefficients`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from oar_verl.core.layout import ResponseBatch
from oar_verl.tiny.arithmetic import Problem, prompt_ids

GSM8K_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")  # verl's gsm8k reward, strict format


@dataclass(frozen=True)
class SampledGroups:
    """`samples` responses to each of a batch's problems, in verl's layout.

    Attributes:
        batch: B = problems x samples rows, group by group.
        problems: the problems, one per group.
        rewards: [B] float, 1.0 where the last `#### N` is the right answer.
        groups: [B] long, each row's problem index.
    """

    batch: ResponseBatch
    problems: list[Problem]
    rewards: torch.Tensor
    groups: torch.Tensor

    @property
    def questions(self) -> list[str]:
        """The question of every row."""
        return [self.problems[group].question for group in self.groups.tolist()]


def reward(text: str, answer: int) -> float:
    """verl's gsm8k rule: 1.0 when the last `#### N` of `text` is `answer`, else 0.0."""
    found = GSM8K_ANSWER.findall(text)
    return float(bool(found) and found[-1].replace(",", "").replace("$", "") == str(answer))


def sample_groups(model, tokenizer, problems: list[Problem], samples: int, max_new_tokens: int, seed: int) -> SampledGroups:
    """Samples `samples` responses to each problem at temperature 1 over the full vocabulary
    (torch's global generator seeded with `seed`); a response ends with its `<|im_end|>`."""
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = [prompt_ids(tokenizer, problem.question) for problem in problems for _ in range(samples)]
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, eos_token_id=[end_id], pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    responses = []
    for row in out[:, width:].tolist():
        length = row.index(end_id) + 1 if end_id in row else len(row)
        responses.append(row[:length])
    groups = torch.arange(len(problems)).repeat_interleave(samples)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    rewards = torch.tensor([reward(text, problems[group].answer) for text, group in zip(texts, groups.tolist())])
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=tokenizer.pad_token_id)
    return SampledGroups(batch, problems, rewards, groups)


def grpo_advantages(rewards: torch.Tensor, groups: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """[B] GRPO's advantages by verl's own `compute_grpo_outcome_advantage`: (r - group mean)
    / (group std + epsilon); rewards, groups: [B]."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    outcome = torch.zeros((len(rewards), 1), dtype=rewards.dtype)  # one token a row carrying its reward
    advantages, _ = compute_grpo_outcome_advantage(outcome + rewards[:, None], torch.ones_like(outcome), groups.numpy(), epsilon=epsilon)
    return advantages[:, 0]


def leave_one_out_advantages(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """[B] r_i minus the mean reward of the other samples of its group (an unbiased
    baseline); rewards, groups: [B], groups of at least 2."""
    advantages = torch.zeros_like(rewards)
    for group in groups.unique():
        members = groups == group
        scores = rewards[members]
        if len(scores) < 2:
            raise ValueError(f"leave-one-out: group {int(group)} has {len(scores)} sample; needs at least 2")
        advantages[members] = scores - (scores.sum() - scores) / (len(scores) - 1)
    return advantages


def token_log_probs(model, batch: ResponseBatch) -> torch.Tensor:
    """[B, R] log pi(y_t) of every response token (0 on padding), with autograd."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False).logits
    predicting = logits[:, batch.prompt_length - 1 : -1]
    predicting = predicting.to(torch.promote_types(predicting.dtype, torch.float32)).log_softmax(dim=-1)  # [B, R, V], float32 at least
    picked = predicting.gather(-1, batch.responses[..., None]).squeeze(-1)
    return torch.where(batch.response_mask, picked, 0.0)


def token_mean_coefficients(advantages: torch.Tensor, weights: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B, R] the coefficient of each token's grad log pi in verl's token-mean policy
    gradient: A_i w_it / (response tokens in the batch); advantages [B], weights and
    response_mask [B, R]."""
    mask = response_mask.float()
    return advantages[:, None] * weights * mask / mask.sum().clamp(min=1.0)


def flat_gradient(log_probs: torch.Tensor, coefficients: torch.Tensor, parameters: list[torch.Tensor]) -> torch.Tensor:
    """[P] float64 the gradient of sum(coefficients * log_probs) ([B, R] each) over the
    `parameters`, flattened in their order; keeps the graph for the next arm."""
    grads = torch.autograd.grad((coefficients * log_probs).sum(), parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, parameters)])


def train_grpo(
    model,
    tokenizer,
    make_problems: Callable[[random.Random, int], list[Problem]],
    *,
    steps: int,
    prompts: int = 8,
    samples: int = 8,
    max_new_tokens: int = 64,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.01,
    clip_grad: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> list[float]:
    """`steps` GRPO steps on `model` in place, with verl's actor objective at the study's
    settings (one optimizer step a batch, token-mean loss, gradient clipped to `clip_grad`,
    AdamW); `make_problems(rng, prompts)` draws each step's problems. Returns each step's
    mean reward."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=weight_decay)
    mean_rewards = []
    for step in range(steps):
        sampled = sample_groups(model, tokenizer, make_problems(rng, prompts), samples, max_new_tokens, seed=seed * 100_003 + step)
        batch = sampled.batch
        advantages = grpo_advantages(sampled.rewards, sampled.groups)
        model.train()
        log_probs = token_log_probs(model, batch)
        loss = -(token_mean_coefficients(advantages, torch.ones_like(log_probs), batch.response_mask) * log_probs).sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        mean_rewards.append(float(sampled.rewards.mean()))
        log(f"GRPO step {step + 1:3d}  reward {mean_rewards[-1]:.3f}")
    model.eval()
    return mean_rewards
