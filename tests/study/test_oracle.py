"""The study's oracle finds where a response first goes wrong, by the task's definition."""

import random

import pytest
import torch

from oar_verl.core import ResponseBatch, segment_responses
from oar_verl.data.arithmetic import make_problem
from oar_verl.study.oracle import STEP_LINE, FirstError, first_error, oracle_scores, question_steps


@pytest.mark.parametrize(
    "response, error",
    [
        ("12+30=42\n42-7=35\n#### 35", None),
        ("12+30=45\n45-7=38\n#### 38", FirstError(7, "result")),  # 42 written 45: the 5; the rest follows from it
        ("12+30=42\n41-7=34\n#### 34", FirstError(10, "copy")),  # 42 copied as 41
        ("12+30=42\n42+7=49\n#### 49", FirstError(11, "operator")),
        ("12+30=42\n42-8=34\n#### 34", FirstError(12, "operand")),
        ("12+30=42\n#### 42", FirstError(9, "missing_step")),
        ("12+30=42\n42-7=35\n35+1=36\n#### 36", FirstError(17, "extra_step")),
        ("12+30=42\n42-7=35\n#### 36", FirstError(23, "answer")),  # the 6 of 36
        ("12+30=42\n42-7=3\n#### 3", FirstError(15, "result")),  # 35 cut to 3: the character after the 3
        ("12+30=42\n42-7 is 35\n#### 35", FirstError(13, "format")),
        ("12+30=-42\n-42-7=-49\n#### -49", FirstError(6, "result")),  # the sign is the first wrong character
    ],
)
def test_first_error_by_the_definition(response, error):
    assert first_error("12+30-7", response) == error


def test_a_slipped_trace_errs_on_its_slip_and_a_clean_one_does_not():
    """The generator's imperfect traces: one step's result off by 1 to 3, later steps
    carrying it on correctly; the oracle points into that result."""
    rng = random.Random(0)
    for _ in range(200):
        clean = make_problem(rng, max_steps=4, max_operand=49, slip_probability=0.0)
        assert first_error(clean.question, clean.solution) is None
        slipped = make_problem(rng, max_steps=4, max_operand=49, slip_probability=1.0)
        error = first_error(slipped.question, slipped.solution)
        assert error is not None and error.kind == "result", (slipped, error)
        line = slipped.solution[: error.char].split("\n")[-1] + slipped.solution[error.char :].split("\n")[0]
        left, operator, operand, result = STEP_LINE.fullmatch(line).groups()
        assert 1 <= abs(int(result) - (int(left) + (int(operand) if operator == "+" else -int(operand)))) <= 3


def test_questions_must_be_the_tasks():
    assert question_steps("3+4-10") == (3, [("+", 4), ("-", 10)])
    with pytest.raises(ValueError, match="question 'what is 3\\+4'"):
        question_steps("what is 3+4")


def test_oracle_scores_mark_the_error_token_of_each_row(tokenizer):
    responses = ["12+30=45\n45-7=38\n#### 38", "12+30=42\n42-7=35\n#### 35", "12+30=42\n42-7=35\n#### 36"]
    prompt = tokenizer("q:", add_special_tokens=False)["input_ids"]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in responses]
    batch = ResponseBatch.from_token_lists([prompt] * 3, ids, pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    scores = oracle_scores(tokenizer, batch, segments, ["12+30-7"] * 3, epsilon=0.01)
    reasoning = segments.reasoning_mask(batch.responses.shape[1])
    assert scores.shape == batch.responses.shape and bool((scores[~reasoning] == 0).all())
    marked = (scores == 1.0).nonzero().tolist()
    assert marked == [[0, 6]]  # the tests' tokenizer merges "12": tokens 12 + 3 0 = 4 5, the '5' of 45
    assert torch.allclose(scores[1][reasoning[1]], torch.full((int(reasoning[1].sum()),), 0.01))  # correct: constant
    assert torch.allclose(scores[2][reasoning[2]], torch.full((int(reasoning[2].sum()),), 0.01))  # wrong only on the answer line
