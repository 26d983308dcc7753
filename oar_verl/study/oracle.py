"""The oracle of the study's arithmetic task: where a response first goes wrong.

A response to a question such as `12+30-7` or `4+7-9 (mod 10)` (`oar_verl.tiny.arithmetic`)
writes one line a step, `LEFT OP OPERAND=RESULT`, then `#### ANSWER`. Its first error is the first character
that is wrong given what the response wrote before it: a line whose LEFT is not the previous
line's RESULT (the question's first number on the first line: a copy error), whose OP or
OPERAND is not the question's, whose RESULT is not LEFT OP OPERAND as written (modulo the
question's modulus when it has one), a missing or
extra line, or an ANSWER that is not the last RESULT. Within a number, the first character
that differs from the right one (`42` for `45`: the `2`).

The oracle's scores give the token holding that character 1 and every other reasoning token
`epsilon`; through the same Bi-Level rule they are "OAR with perfect attribution", the
bound on what any estimator can give on the task. A study-only score source, not an
estimator users would pick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from oar_verl.core.offsets import batch_token_offsets
from oar_verl.core.spans import Segments

STEP_LINE = re.compile(r"(-?\d+)([+-])(\d+)=(-?\d+)")
ANSWER_LINE = re.compile(r"####\s*(-?\d+)")
QUESTION = re.compile(r"(\d+)((?:[+-]\d+)+)(?: \(mod (\d+)\))?")
FILLER = re.compile(r" [a-z]*$")  # a step line's filler (`tiny.arithmetic.make_problem(filler=...)`)
ERROR_KINDS = ("copy", "operator", "operand", "result", "missing_step", "extra_step", "format", "answer")


@dataclass(frozen=True)
class Question:
    """A generated question: its first number, its (operator, operand) steps, its modulus."""

    first: int
    steps: list[tuple[str, int]]
    modulus: int | None

    def apply(self, left: int, operator: str, operand: int) -> int:
        value = left + operand if operator == "+" else left - operand
        return value % self.modulus if self.modulus else value


@dataclass(frozen=True)
class FirstError:
    """The first wrong character of a response's text, and what kind of error it starts."""

    char: int
    kind: str


def parse_question(question: str) -> Question:
    """A generated question such as `12+30-7` or `4+7-9 (mod 10)`."""
    match = QUESTION.fullmatch(question.strip())
    if match is None:
        raise ValueError(f"question {question!r}: expected numbers joined by + and -, e.g. 12+30-7 or 4+7-9 (mod 10)")
    steps = [(operator, int(operand)) for operator, operand in re.findall(r"([+-])(\d+)", match.group(2))]
    return Question(int(match.group(1)), steps, int(match.group(3)) if match.group(3) else None)


def find_question(text: str) -> str | None:
    """The generated question inside a prompt's text, or None."""
    match = QUESTION.search(text)
    return match.group(0) if match else None


def first_error(question: str, text: str, filler: bool = False) -> FirstError | None:
    """The first error of response `text` to `question`, or None when it has none; with
    `filler`, a step line's trailing filler (a space and lowercase letters) is no error."""
    parsed = parse_question(question)
    value, steps = parsed.first, parsed.steps
    lines = text.split("\n")
    offset = 0
    for index, (operator, operand) in enumerate(steps):
        written = lines[index] if index < len(lines) else ""
        line = FILLER.sub("", written) if filler else written
        if line.startswith("####") or index >= len(lines):
            return FirstError(offset, "missing_step")
        match = STEP_LINE.fullmatch(line)
        if match is None:
            return FirstError(offset + _parsed_prefix(line), "format")
        left, written_operator, written_operand, result = match.groups()
        expected = {1: str(value), 2: operator, 3: str(operand)}
        for group, kind in ((1, "copy"), (2, "operator"), (3, "operand")):
            if match.group(group) != expected[group]:
                return FirstError(offset + match.start(group) + _first_difference(match.group(group), expected[group]), kind)
        true = parsed.apply(int(left), written_operator, int(written_operand))
        if int(result) != true:
            return FirstError(offset + match.start(4) + _first_difference(result, str(true)), "result")
        value = true
        offset += len(written) + 1
    answer_line = lines[len(steps)] if len(steps) < len(lines) else ""
    match = ANSWER_LINE.match(answer_line)
    if match is None:
        return FirstError(offset, "extra_step" if STEP_LINE.fullmatch(answer_line) else "format")
    if int(match.group(1)) != value:
        return FirstError(offset + match.start(1) + _first_difference(match.group(1), str(value)), "answer")
    return None


def _first_difference(written: str, right: str) -> int:
    """Index of the first character where `written` departs from `right` (the length of
    the shorter when one is a prefix of the other)."""
    for index, (a, b) in enumerate(zip(written, right)):
        if a != b:
            return index
    return min(len(written), len(right))


def _parsed_prefix(line: str) -> int:
    """Characters of `line` that still fit a step line (`LEFT OP OPERAND=RESULT`)."""
    for end in range(len(line), 0, -1):
        if re.fullmatch(r"-?\d*([+-]\d*(=-?\d*)?)?", line[:end]):
            return end
    return 0


def oracle_scores(
    tokenizer,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    segments: Segments,
    questions: list[str],
    epsilon: float = 1e-3,
    filler: bool = False,
) -> torch.Tensor:
    """[B, R] scores of the responses ([B, R] ids and mask, right-padded) to `questions`: 1 on the token of each row's first error, `epsilon` on its other
    reasoning tokens, 0 elsewhere. A row without an error in its reasoning (correct, or
    wrong only on its answer line) has `epsilon` on every reasoning token: constant scores,
    which the Bi-Level rule leaves at weight 1. `filler`: responses in the filler format
    (`first_error`)."""
    R = responses.shape[1]
    scores = segments.reasoning_mask(R).float() * epsilon
    lengths = response_mask.bool().sum(dim=1).tolist()
    rows = [ids[:length] for ids, length in zip(responses.tolist(), lengths)]
    for row, (offsets, question) in enumerate(zip(batch_token_offsets(tokenizer, rows), questions)):
        token = first_error_token(offsets, question, filler)
        if token is not None and token < int(segments.reasoning_end[row]):
            scores[row, token] = 1.0
    return scores


def first_error_token(offsets, question: str, filler: bool = False) -> int | None:
    """The token (index in the response) holding the first wrong character of the response
    whose `core.offsets` token offsets are `offsets`, or None when it has no error (or the
    error is past its last token, a missing line at the end)."""
    error = first_error(question, offsets.text, filler)
    if error is None:
        return None
    tokens = offsets.tokens_overlapping(error.char, error.char + 1)
    return int(tokens[0]) if len(tokens) else None
