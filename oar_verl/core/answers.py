"""Where the final answer is in a decoded response, as verl's math rewards read it.

An answer pattern maps a response's text to the character spans of its bridge (the marker
that introduces the answer) and its answer, or None when the response has no answer:

    reasoning | bridge | answer | tail
              ^        ^        ^
         bridge_start  answer_start  answer_end

Built-in patterns:
- `boxed`: the content of the last `\\boxed{...}` or `\\fbox{...}`, braces matched (like
  verl's `math_reward.last_boxed_only_string`, an unclosed last box is no answer).
- `gsm8k`: the number after the last `####` followed by a number (sign, thousands commas,
  decimals, an optional `$`), as verl's `gsm8k` reward's strict mode reads it.
- `answer_colon`: the rest of the line after the last `Answer:` (case-insensitive, as
  verl's `math_dapo` reads it), without surrounding spaces and a final period.
- `auto`: the first of `boxed`, `gsm8k`, `answer_colon` that finds an answer.
- any other string: a regular expression whose group `answer` (or else group 1) is the
  answer and whose match before that group is the bridge; its last match counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from oar_verl.core.names import did_you_mean


@dataclass(frozen=True)
class AnswerSpan:
    """Character spans in the decoded response: bridge [bridge_start, answer_start),
    answer [answer_start, answer_end)."""

    bridge_start: int
    answer_start: int
    answer_end: int


AnswerFinder = Callable[[str], "AnswerSpan | None"]

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_GSM8K = re.compile(r"####[ \t]*\$?[ \t]*(?P<answer>[-+]?\$?(?:\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+))")
_ANSWER_COLON = re.compile(r"(?i)answer\s*:[ \t]*(?P<answer>[^\n]*)")


def find_boxed(text: str) -> AnswerSpan | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}`, braces matched."""
    opener_start, opener = max((text.rfind(o), o) for o in _BOX_OPENERS)
    if opener_start < 0:
        return None
    content_start = opener_start + len(opener)
    depth = 1
    for index in range(content_start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return _stripped_span(text, opener_start, content_start, index)
    return None  # the last box is not closed: a truncated response


def find_gsm8k(text: str) -> AnswerSpan | None:
    """The number after the last `####` that is followed by a number."""
    return _last_match_span(_GSM8K, text, "answer")


def find_answer_colon(text: str) -> AnswerSpan | None:
    """Rest of the line after the last `Answer:`, without a final period."""
    span = _last_match_span(_ANSWER_COLON, text, "answer")
    if span is None:
        return None
    end = span.answer_end
    while end > span.answer_start and text[end - 1] in ". \t":
        end -= 1
    return AnswerSpan(span.bridge_start, span.answer_start, end) if end > span.answer_start else None


def find_auto(text: str) -> AnswerSpan | None:
    """The first built-in pattern that finds an answer: boxed, then gsm8k, then answer_colon."""
    for finder in (find_boxed, find_gsm8k, find_answer_colon):
        span = finder(text)
        if span is not None:
            return span
    return None


BUILTIN_PATTERNS: dict[str, AnswerFinder] = {
    "boxed": find_boxed,
    "gsm8k": find_gsm8k,
    "answer_colon": find_answer_colon,
    "auto": find_auto,
}


def patterns_finding_answers(texts: list[str], share: float = 0.0) -> list[str]:
    """The named built-in patterns (gsm8k, boxed, answer_colon, in that order) that find an
    answer in more than `share` of `texts`: what to suggest when the chosen pattern fails."""
    return [
        name for name in ("gsm8k", "boxed", "answer_colon") if sum(BUILTIN_PATTERNS[name](text) is not None for text in texts) > share * len(texts)
    ]


def answer_finder(pattern: str | re.Pattern) -> AnswerFinder:
    """The finder of a built-in pattern name, or of a custom regular expression."""
    if isinstance(pattern, str) and pattern in BUILTIN_PATTERNS:
        return BUILTIN_PATTERNS[pattern]
    try:
        regex = re.compile(pattern)
    except (re.error, TypeError) as error:
        raise ValueError(
            f"answer_pattern: {pattern!r} is neither one of {sorted(BUILTIN_PATTERNS)}{did_you_mean(pattern, BUILTIN_PATTERNS)} "
            f"nor a valid regular expression ({error})"
        ) from None
    if "answer" in regex.groupindex:
        group: str | int = "answer"
    elif regex.groups >= 1:
        group = 1
    else:
        raise ValueError(
            f"answer_pattern: {regex.pattern!r} is not one of {sorted(BUILTIN_PATTERNS)}{did_you_mean(regex.pattern, BUILTIN_PATTERNS)}, "
            "and as a regular expression it needs a group 'answer' or a group 1 that holds the answer"
        )
    return lambda text: _last_match_span(regex, text, group)


def _last_match_span(regex: re.Pattern, text: str, group: str | int) -> AnswerSpan | None:
    last = None
    for match in regex.finditer(text):
        if match.group(group):
            last = match
    if last is None:
        return None
    return _stripped_span(text, last.start(), last.start(group), last.end(group))


def _stripped_span(text: str, bridge_start: int, answer_start: int, answer_end: int) -> AnswerSpan | None:
    """The span with blanks at the answer's ends moved out of it; None if nothing is left."""
    while answer_start < answer_end and text[answer_start].isspace():
        answer_start += 1
    while answer_end > answer_start and text[answer_end - 1].isspace():
        answer_end -= 1
    if answer_start == answer_end:
        return None
    return AnswerSpan(bridge_start, answer_start, answer_end)
