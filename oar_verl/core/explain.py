"""`explain`: OAR scores and weights of one (prompt, response) pair, for offline inspection.

Example::

    from oar_verl.core import explain
    result = explain(model, tokenizer, "What is 2+3?", "2+3 is 5.\\n#### 5", method="oar_p")
    print(result.format_table())
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from oar_verl.core.attribution import attribute, config_class
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.reshape import bilevel_weights, degenerate_rows
from oar_verl.core.spans import segment_responses

_BILEVEL_SETTINGS = ("quantile", "beta", "min_weight", "preserve_mass")

Text = str | Sequence[int] | Sequence[dict]


@dataclass(frozen=True)
class Explanation:
    """OAR's view of one response, one entry per response token.

    Attributes:
        method, target: the attribution method and target mode used.
        prompt_ids, response_ids: the token ids explained.
        tokens: each response token decoded on its own.
        segments: each token's segment: reasoning, bridge, answer, tail, or unsegmented
            (no answer found).
        scores: raw attribution scores (0 outside the reasoning).
        weights: Bi-Level weights (1 outside the reasoning and on degenerate rows).
        answer_found: whether the answer pattern found an answer.
        degenerate: whether the weights fell back to all ones (no answer, empty reasoning,
            constant or non-finite scores).
    """

    method: str
    target: str
    prompt_ids: list[int]
    response_ids: list[int]
    tokens: list[str]
    segments: list[str]
    scores: list[float]
    weights: list[float]
    answer_found: bool
    degenerate: bool

    def format_table(self) -> str:
        """A plain-text table: index, segment, token, score, weight."""
        lines = [f"{self.method} (target {self.target}); answer found: {self.answer_found}; degenerate: {self.degenerate}"]
        lines.append(f"{'#':>4}  {'segment':<11} {'token':<14} {'score':>11} {'weight':>7}")
        for k, (token, segment, score, weight) in enumerate(zip(self.tokens, self.segments, self.scores, self.weights)):
            lines.append(f"{k:>4}  {segment:<11} {token!r:<14} {score:>11.4g} {weight:>7.3f}")
        return "\n".join(lines)


def explain(
    model: torch.nn.Module,
    tokenizer,
    prompt: Text,
    response: str | Sequence[int],
    *,
    method: str = "oar_g",
    answer_pattern: str | re.Pattern = "auto",
    **settings,
) -> Explanation:
    """Scores and weights of every response token of one (prompt, response) pair.

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        prompt: text (tokenized as is, no special tokens added), chat messages (the
            tokenizer's chat template with the generation prompt), or token ids.
        response: text (tokenized without special tokens) or the sampled token ids; pass
            the ids when you have them: the text of a response may tokenize differently
            from how it was sampled.
        method: "oar_p" or "oar_g".
        answer_pattern: a name of `answers.BUILTIN_PATTERNS` or a regular expression.
        **settings: fields of the method's config (`PerturbationConfig` /
            `GradientConfig`; `perturbation_id` defaults to the tokenizer's pad id) and of
            `bilevel_weights` (quantile, beta, min_weight, preserve_mass).
    """
    method_config = config_class(method)
    config_fields = {f.name for f in dataclasses.fields(method_config)}
    unknown = set(settings) - config_fields - set(_BILEVEL_SETTINGS)
    if unknown:
        raise ValueError(
            f"settings: unknown {sorted(unknown)} for method {method!r}; expected some of {sorted(config_fields | set(_BILEVEL_SETTINGS))}"
        )
    config_settings = {k: v for k, v in settings.items() if k in config_fields}
    if "perturbation_id" in config_fields:
        config_settings.setdefault("perturbation_id", tokenizer.pad_token_id)
    config = method_config(**config_settings)
    bilevel_settings = {k: v for k, v in settings.items() if k in _BILEVEL_SETTINGS}

    prompt_ids = _prompt_ids(tokenizer, prompt)
    response_ids = _response_ids(tokenizer, response)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = ResponseBatch.from_token_lists([prompt_ids], [response_ids], pad_token_id=pad_id, device=device)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, answer_pattern)
    scores = attribute(model, batch, segments, config)  # [1, R]
    reasoning = segments.reasoning_mask(batch.response_length)  # [1, R]
    weights = bilevel_weights(scores, reasoning, **bilevel_settings)
    return Explanation(
        method=method,
        target=config.target,
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        tokens=[tokenizer.decode([token]) for token in response_ids],
        segments=segments.labels(0, len(response_ids)),
        scores=scores[0].tolist(),
        weights=weights[0].tolist(),
        answer_found=bool(segments.found[0]),
        degenerate=bool(degenerate_rows(scores, reasoning)[0]),
    )


def _prompt_ids(tokenizer, prompt: Text) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if prompt and isinstance(prompt[0], dict):
        ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return [int(token) for token in prompt]


def _response_ids(tokenizer, response: str | Sequence[int]) -> list[int]:
    if isinstance(response, str):
        return tokenizer(response, add_special_tokens=False)["input_ids"]
    return [int(token) for token in response]
