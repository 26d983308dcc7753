"""The recipes' reward function: verl's rule-based math rewards, routed by `data_source`.

verl's `default_compute_score` covers GSM8K (`openai/gsm8k`: `####`), MATH and MATH-500
(`\\boxed{}`, 1 / 0) but routes `aime*` to its DAPO scorer (1 / -1, `Answer:` first) and
has no AMC entry. The recipes' evaluation sets AIME 2024 and AMC 2023 ask for `\\boxed{}`,
so they are scored here by verl's MATH scorer (1 / 0), and every other source goes to
verl's default. Recipes set:

    reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

from verl.utils.reward_score import default_compute_score, math_reward

BOXED_EVALUATION_SOURCES = ("aime2024", "amc2023")


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs) -> float:
    """1.0 when the response's final answer equals `ground_truth`, else 0.0 (verl's scorers)."""
    if data_source in BOXED_EVALUATION_SOURCES:
        return float(math_reward.compute_score(solution_str, ground_truth))
    return default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
