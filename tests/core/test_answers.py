import pytest

from oar_verl.core.answers import answer_finder


def parts(pattern, text):
    span = answer_finder(pattern)(text)
    if span is None:
        return None
    return text[span.bridge_start : span.answer_start], text[span.answer_start : span.answer_end], text[span.answer_end :]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}.", ("\\boxed{", "42", "}.")),
        ("\\boxed{\\frac{1}{\\sqrt{2}}} done", ("\\boxed{", "\\frac{1}{\\sqrt{2}}", "} done")),
        ("first \\boxed{1} then \\boxed{ 2 }", ("\\boxed{ ", "2", " }")),
        ("\\fbox{x^{2}}", ("\\fbox{", "x^{2}", "}")),
        ("\\boxed{1} and a cut \\boxed{2", None),  # the last box is not closed
        ("\\boxed{}", None),
        ("no box", None),
    ],
)
def test_boxed(text, expected):
    assert parts("boxed", text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a\n#### 42", ("#### ", "42", "")),
        ("#### -3.5.", ("#### ", "-3.5", ".")),
        ("#### $1,234", ("#### $", "1,234", "")),
        ("####1,000,000 dollars", ("####", "1,000,000", " dollars")),
        ("#### +7, done", ("#### ", "+7", ", done")),
        ("#### 1\nmore text #### 2", ("#### ", "2", "")),
        ("#### 1\n#### none", ("#### ", "1", "\n#### none")),  # the last #### followed by a number
        ("#### .5", ("#### ", ".5", "")),
        ("no marker 42", None),
    ],
)
def test_gsm8k(text, expected):
    assert parts("gsm8k", text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: 12.", ("Answer: ", "12", ".")),
        ("answer: x\nANSWER:  y = 3  \nbye", ("ANSWER:  ", "y = 3", "  \nbye")),
        ("Answer:", None),
    ],
)
def test_answer_colon(text, expected):
    assert parts("answer_colon", text) == expected


def test_auto_prefers_boxed_then_gsm8k():
    assert parts("auto", "#### 3 and \\boxed{4}")[1] == "4"
    assert parts("auto", "#### 3 then Answer: 5")[1] == "3"
    assert parts("auto", "Answer: 5")[1] == "5"


def test_custom_regex_named_group_and_group_one():
    assert parts(r"The answer is (?P<answer>\w+)", "The answer is x, The answer is yes!") == ("The answer is ", "yes", "!")
    assert parts(r"=> (\d+)", "=> 1 => 22") == ("=> ", "22", "")


@pytest.mark.parametrize("pattern", ["(unclosed", "no groups here"])
def test_bad_pattern_names_the_setting(pattern):
    with pytest.raises(ValueError, match="answer_pattern"):
        answer_finder(pattern)
