"""The study's oracle finds where a response first goes wrong, by the task's definition."""

import random

import pytest
import torch

from oar_verl.core import ResponseBatch, segment_responses
from oar_verl.study.oracle import STEP_LINE, FirstError, Question, find_question, first_error, oracle_scores, parse_question
from oar_verl.tiny.arithmetic import make_problem


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
    assert parse_question("3+4-10") == Question(3, [("+", 4), ("-", 10)], None)
    assert parse_question("3+4-9 (mod 10)") == Question(3, [("+", 4), ("-", 9)], 10)
    with pytest.raises(ValueError, match="question 'what is 3\\+4'"):
        parse_question("what is 3+4")


def test_the_question_is_found_in_a_prompt():
    assert find_question("<|im_start|>user\n4+7-9 (mod 10) Solve, then write the answer after ####.") == "4+7-9 (mod 10)"
    assert find_question("user\n12+30-7 Solve") == "12+30-7"
    assert find_question("no arithmetic here") is None


@pytest.mark.parametrize(
    "response, error",
    [
        ("4+7=1\n1-9=2\n#### 2", None),  # 4+7 = 11 = 1, 1-9 = -8 = 2 (mod 10)
        ("4+7=2\n2-9=3\n#### 3", FirstError(4, "result")),  # the carry slipped; the next line follows from it
        ("4+7=11\n11-9=2\n#### 2", FirstError(5, "result")),  # not reduced: the second 1 is the wrong character
        ("4+7=1\n1-9=2\n#### 8", FirstError(17, "answer")),
    ],
)
def test_first_error_modulo(response, error):
    assert first_error("4+7-9 (mod 10)", response) == error


def test_a_wrap_slipped_trace_errs_on_a_wrapping_step():
    """The modular task's imperfect traces slip only where a result wraps around the modulus."""
    rng = random.Random(0)
    slipped = 0
    for _ in range(300):
        problem = make_problem(rng, max_steps=6, max_operand=9, min_steps=5, modulus=10, wrap_slip_probability=0.5)
        error = first_error(problem.question, problem.solution)
        if error is None:
            assert problem.solution.endswith(f"#### {problem.answer}")
            continue
        slipped += 1
        line = problem.solution[: error.char].split("\n")[-1] + problem.solution[error.char :].split("\n")[0]
        left, operator, operand, result = STEP_LINE.fullmatch(line).groups()
        true = int(left) + (int(operand) if operator == "+" else -int(operand))
        assert error.kind == "result" and not 0 <= true < 10 and (int(result) - true) % 10 in (1, 9), (problem, error)
    assert 100 < slipped < 300


def test_oracle_scores_mark_the_error_token_of_each_row(tokenizer):
    responses = ["12+30=45\n45-7=38\n#### 38", "12+30=42\n42-7=35\n#### 35", "12+30=42\n42-7=35\n#### 36"]
    prompt = tokenizer("q:", add_special_tokens=False)["input_ids"]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in responses]
    batch = ResponseBatch.from_token_lists([prompt] * 3, ids, pad_token_id=tokenizer.pad_token_id)
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    scores = oracle_scores(tokenizer, batch.responses, batch.response_mask, segments, ["12+30-7"] * 3, epsilon=0.01)
    reasoning = segments.reasoning_mask(batch.responses.shape[1])
    assert scores.shape == batch.responses.shape and bool((scores[~reasoning] == 0).all())
    marked = (scores == 1.0).nonzero().tolist()
    assert marked == [[0, 6]]  # the tests' tokenizer merges "12": tokens 12 + 3 0 = 4 5, the '5' of 45
    assert torch.allclose(scores[1][reasoning[1]], torch.full((int(reasoning[1].sum()),), 0.01))  # correct: constant
    assert torch.allclose(scores[2][reasoning[2]], torch.full((int(reasoning[2].sum()),), 0.01))  # wrong only on the answer line
