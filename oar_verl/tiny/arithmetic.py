"""Generated arithmetic in GSM8K's format, as verl rows.

Each problem adds or subtracts numbers in a few steps (by default two-digit numbers in one
or two steps; with a `modulus`, digits modulo it, e.g. `4+7-9 (mod 10)`, so that with
a byte-level tokenizer every value and the answer is one token); the reference solution
works it out step by step and ends with GSM8K's `#### <answer>`, which verl's
`gsm8k` reward reads (rows carry `data_source="openai/gsm8k"`). Rows follow verl's
parquet layout: `data_source`, chat `prompt`, `ability`, `reward_model.ground_truth`,
`extra_info` (with the reference `answer`, used for supervised warm-starts).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = "Solve, then write the answer after ####."


@dataclass(frozen=True)
class Problem:
    question: str  # e.g. "12+30-7", or "4+7-9 (mod 10)"
    solution: str  # e.g. "12+30=42\n42-7=35\n#### 35"
    answer: int  # the correct answer (a slipped solution ends with another number)


def make_problem(
    rng: random.Random,
    max_steps: int = 2,
    max_operand: int = 49,
    slip_probability: float = 0.0,
    *,
    min_steps: int = 1,
    modulus: int | None = None,
    wrap_slip_probability: float = 0.0,
    filler: int = 0,
) -> Problem:
    """One problem of `min_steps` to `max_steps` additions/subtractions of numbers in
    [1, max_operand], starting from a number in [1, max_operand]; with `modulus`, every
    result is taken modulo it (the question says so: `4+7-9 (mod 10)`).

    Imperfect traces (the problem's `answer` stays the correct one; later steps carry the
    error on, so the final line is wrong):
    - `slip_probability`: the trace's share with one step, drawn at random, off by 1 to 3;
    - `wrap_slip_probability` (with `modulus`): each step whose true result wraps around
      the modulus (a carry or a borrow) is off by 1, up or down, with this probability, so
      that errors concentrate in that one kind of step.
    Supervised warm-starts on such traces leave the model making the kind of step errors
    that decide the answer.

    `filler`: letters of reward-irrelevant filler after each step line's result, a space
    and that many lowercase letters drawn uniformly (`4+7=1 qkzvmbta`); 0: none.
    """
    for name, probability in (("slip_probability", slip_probability), ("wrap_slip_probability", wrap_slip_probability)):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{name}: expected a value in [0, 1], got {probability}")
    if wrap_slip_probability > 0 and modulus is None:
        raise ValueError("wrap_slip_probability: needs a modulus (steps wrap around it)")
    if filler < 0:
        raise ValueError(f"filler: expected a number of letters >= 0, got {filler}")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"min_steps: expected 1 <= min_steps <= max_steps, got {min_steps} and {max_steps}")
    value = written = rng.randint(1, max_operand)
    question = str(value)
    lines = []
    steps = rng.randint(min_steps, max_steps)
    slip_step = rng.randrange(steps) if slip_probability > 0 and rng.random() < slip_probability else -1
    for step in range(steps):
        operand = rng.randint(1, max_operand)
        operator = rng.choice("+-")
        sign = 1 if operator == "+" else -1
        value += sign * operand
        result = written + sign * operand + (rng.choice((-3, -2, -1, 1, 2, 3)) if step == slip_step else 0)
        if modulus is not None:
            wraps = not 0 <= written + sign * operand < modulus
            value %= modulus
            if wraps and wrap_slip_probability > 0 and rng.random() < wrap_slip_probability:
                result += rng.choice((-1, 1))
            result %= modulus
        question += f"{operator}{operand}"
        padding = " " + "".join(rng.choice(string.ascii_lowercase) for _ in range(filler)) if filler else ""
        lines.append(f"{written}{operator}{operand}={result}{padding}")
        written = result
    if modulus is not None:
        question += f" (mod {modulus})"
    return Problem(question, "\n".join(lines) + f"\n#### {written}", value)


def chat_prompt(question: str) -> list[dict]:
    """A question as the chat messages the model is prompted with (the question, then `INSTRUCTION`)."""
    return [{"role": "user", "content": f"{question} {INSTRUCTION}"}]


def prompt_ids(tokenizer, question: str) -> list[int]:
    """The token ids the model is prompted with for `question`: `chat_prompt` through the tokenizer's chat template."""
    return tokenizer.apply_chat_template(chat_prompt(question), add_generation_prompt=True, tokenize=True, return_dict=False)


def verl_row(problem: Problem, split: str, index: int) -> dict:
    return {
        "data_source": DATA_SOURCE,
        "prompt": chat_prompt(problem.question),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {"split": split, "index": index, "question": problem.question, "answer": problem.solution},
    }


def write_split(path: str | Path, size: int, seed: int, split: str, max_steps: int = 2, max_operand: int = 49, **task) -> Path:
    """Writes `size` generated rows to a parquet file; the same seed gives the same rows.
    `task`: `make_problem`'s other shape settings (`min_steps`, `modulus`)."""
    rng = random.Random(seed)
    rows = [verl_row(make_problem(rng, max_steps, max_operand, **task), split, index) for index in range(size)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path
