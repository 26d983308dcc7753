import pytest
import torch

from oar_verl.core import segment_responses


def segment_texts(tokenizer, texts, pattern="auto", eos=True):
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else []) for t in texts]
    R = max(len(r) for r in rows) + 2  # extra right padding
    responses = torch.full((len(rows), R), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), R), dtype=torch.long)
    for i, r in enumerate(rows):
        responses[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return rows, segment_responses(tokenizer, responses, mask, pattern)


def pieces(tokenizer, ids, segments, row):
    """(reasoning, bridge, answer, tail) decoded from the token boundaries."""
    bounds = [0, int(segments.reasoning_end[row]), int(segments.answer_start[row]), int(segments.answer_end[row]), len(ids)]
    return tuple(tokenizer.decode(ids[a:b], skip_special_tokens=True) for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize(
    "text, pattern, expected",
    [
        ("x=1/2 so \\boxed{\\frac{1}{2}}.", "boxed", ("x=1/2 so ", "\\boxed{", "\\frac{1}{2}", "}.")),
        ("try \\boxed{3}, no: \\boxed{4}", "boxed", ("try \\boxed{3}, no: ", "\\boxed{", "4", "}")),
        ("3 apples\n#### 12", "gsm8k", ("3 apples\n", "####", " 12", "")),  # token " 1" holds the bridge's space
        ("total\n#### $1,250.50.", "gsm8k", ("total\n", "#### $", "1,250.50", ".")),
        ("so Answer: -7", "answer_colon", ("so ", "Answer: ", "-7", "")),
        ("prix 5€, réponse \\boxed{5€}", "boxed", ("prix 5€, réponse ", "\\boxed{", "5€", "}")),
        ("Final => 99!", r"=> (\d+)", ("Final ", "=> ", "99", "!")),
    ],
)
def test_segments(tokenizer, text, pattern, expected):
    rows, segments = segment_texts(tokenizer, [text], pattern)
    assert bool(segments.found[0])
    assert pieces(tokenizer, rows[0], segments, 0) == expected


def test_answer_split_across_tokens_and_merged_with_bridge(tokenizer):
    # "12" is one merged token, " 1" another: "#### 123" tokenizes as '####', ' 1', '2', '3'
    rows, segments = segment_texts(tokenizer, ["r\n#### 123"], "gsm8k")
    tokens = [tokenizer.decode([i]) for i in rows[0]]
    assert tokens[:5] == ["r", "\n", "####", " 1", "2"]
    # ' 1' straddles bridge (the space) and answer (1): it belongs to the answer
    assert (int(segments.reasoning_end[0]), int(segments.answer_start[0]), int(segments.answer_end[0])) == (2, 3, 6)


def test_multibyte_answer_covers_all_its_byte_tokens(tokenizer):
    rows, segments = segment_texts(tokenizer, ["x \\boxed{é}"], "boxed")
    start, end = int(segments.answer_start[0]), int(segments.answer_end[0])
    assert end - start == 2 and tokenizer.decode(rows[0][start:end]) == "é"


def test_rows_without_answer_and_truncated(tokenizer):
    texts = ["no answer here", "cut off \\boxed{12", "ok \\boxed{1}", "\\boxed{1}"]
    rows, segments = segment_texts(tokenizer, texts, "boxed")
    assert segments.found.tolist() == [False, False, True, True]
    assert segments.usable.tolist() == [False, False, True, False], "empty reasoning is not usable"
    assert torch.all(segments.reasoning_end[:2] == 0)
    mask = segments.reasoning_mask(rows and max(len(r) for r in rows))
    assert mask.sum(dim=1).tolist() == [0, 0, 3, 0]
    assert segments.labels(0, 3) == ["unsegmented"] * 3


def test_truncated_response_without_eos_and_padding_ignored(tokenizer):
    rows, segments = segment_texts(tokenizer, ["abc\n#### 5"], "gsm8k", eos=False)
    assert (int(segments.reasoning_end[0]), int(segments.answer_end[0])) == (4, len(rows[0]))


def test_labels(tokenizer):
    rows, segments = segment_texts(tokenizer, ["ab Answer: 3."], "answer_colon")
    labels = segments.labels(0, len(rows[0]))
    assert labels == ["reasoning"] * 3 + ["bridge"] * 8 + ["answer"] + ["tail"] * 2


def test_shape_mismatch_is_refused(tokenizer):
    with pytest.raises(ValueError, match="response_mask"):
        segment_responses(tokenizer, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))
