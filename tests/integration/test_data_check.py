"""Training data checked before Ray: files, ground truths, and the answer format OAR reads."""

from oar_verl.integration.data_check import answer_format_errors, expected_answer_text, ground_truth_errors


def row(prompt: str, truth="12", **extra):
    return {"prompt": [{"role": "user", "content": prompt}], "reward_model": {"ground_truth": truth}, "extra_info": extra}


def test_the_format_comes_from_reference_solutions_or_the_prompt():
    assert expected_answer_text(row("q", solution="so \\boxed{12}")) == "so \\boxed{12}"
    assert expected_answer_text(row('q. Output the final answer after "####".')) == "... #### 12"
    assert expected_answer_text(row("q. Put it within \\boxed{}.")) == "... \\boxed{12}"
    assert expected_answer_text(row("q. End with Answer: <n>")) == "... Answer: 12"
    assert expected_answer_text(row("q, no instruction")) is None


def test_a_pattern_that_misses_is_named_with_the_one_that_finds():
    rows = [row("q within \\boxed{}", truth=str(k)) for k in range(10)]
    assert answer_format_errors("data.train_files[0] (x)", rows, "boxed") == []
    assert answer_format_errors("data.train_files[0] (x)", rows, "auto") == []
    (error,) = answer_format_errors("data.train_files[0] (x)", rows, "gsm8k")
    assert "answer_pattern='gsm8k' finds no answer in 10 of 10 sampled rows; set algorithm.oar.answer_pattern=boxed" in error
    (error,) = answer_format_errors("data.train_files[0] (x)", [row("no instruction")] * 3, "auto")
    assert "ask for no answer format" in error
    (error,) = answer_format_errors("f", [row("q", solution="the result is 12.")] * 4, "auto")
    assert "regex with a group 'answer'" in error


def test_rows_without_ground_truth_are_named():
    assert ground_truth_errors("f", [row("q")]) == []
    assert ground_truth_errors("f", [row("q"), row("q", truth=None)]) == [
        "f row 1: no reward_model.ground_truth (verl's rule rewards compare the answer with it)"
    ]
    assert ground_truth_errors("f", []) == ["f: no rows"]
