"""Where responses go wrong and where the negative advantage lands, from verl's generation
dumps and the OAR step's records, against hand-made cases."""

import json

import pytest
import torch

from oar_verl.study.analysis import error_lines_by_step, error_token_shares, first_error_line, uniform_error_token_shares

PROMPT = "<|im_start|>user\n4+7-9 (mod 10) Solve, then write the answer after ####.<|im_end|>"


@pytest.mark.parametrize(
    "response, where",
    [
        ("4+7=1\n1-9=2\n#### 2", None),
        ("4+7=2\n2-9=3\n#### 3", "step 1 (wraps)"),  # 4+7 = 11 wraps around 10
        ("4+7=1\n1-9=3\n#### 3", "step 2 (wraps)"),  # 1-9 = -8 wraps too
        ("4+7=1\n1-9=2\n#### 5", "answer"),
        ("4+7=1\n#### 1", "missing step"),
        ("4+7 is 1", "format"),
    ],
)
def test_first_error_line(response, where):
    assert first_error_line(PROMPT, response) == where


def test_a_step_that_does_not_wrap_is_named_so():
    assert first_error_line("user\n4+3-1 (mod 10) Solve", "4+3=8\n8-1=7\n#### 7") == "step 1"
    with pytest.raises(ValueError, match="no generated arithmetic question"):
        first_error_line("hello", "4")


def test_error_lines_by_step_reads_verls_dumps(tmp_path):
    rows = {0: ["4+7=2\n2-9=3\n#### 3", "4+7=1\n1-9=2\n#### 2"], 10: ["4+7=1\n1-9=2\n#### 2"] * 2}
    for step, outputs in rows.items():
        (tmp_path / f"{step}.jsonl").write_text("\n".join(json.dumps({"input": PROMPT, "output": o, "score": 0.0, "step": step}) for o in outputs))
    assert error_lines_by_step(tmp_path) == {"0": {"step 1 (wraps)": 1, "correct": 1}, "10": {"correct": 2}}


def test_error_token_shares_from_the_oar_records(tmp_path, tokenizer):
    """Row 0 is wrong at step 1's result (its share: the advantage there over the row's
    total), row 1 is right (positive advantage: not counted)."""
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    wrong = tokenizer("4+7=2\n2-9=3\n#### 3", add_special_tokens=False)["input_ids"]
    right = tokenizer("4+7=1\n1-9=2\n#### 2", add_special_tokens=False)["input_ids"]
    R = max(len(wrong), len(right))
    responses = torch.tensor([wrong + [0] * (R - len(wrong)), right + [0] * (R - len(right))])
    mask = torch.tensor([[1] * len(wrong) + [0] * (R - len(wrong)), [1] * len(right) + [0] * (R - len(right))])
    error = tokenizer.decode(wrong).index("=2")  # the characters '4+7=' then the wrong '2'
    error_token = next(k for k in range(len(wrong)) if len(tokenizer.decode(wrong[: k + 1])) > error + 1)
    advantages = -torch.ones(2, R) * mask
    advantages[0, error_token] = -5.0
    advantages[1] = 0.5 * mask[1]
    reasoning_end = len(tokenizer("4+7=2\n2-9=3\n", add_special_tokens=False)["input_ids"])
    record = {"row_advantage": torch.tensor([-1.0, 0.5]), "segments": torch.tensor([[reasoning_end, reasoning_end + 1, len(wrong), 1], [reasoning_end, reasoning_end + 1, len(right), 1]]),
              "prompts": torch.tensor([prompt, prompt]), "prompt_lengths": torch.tensor([len(prompt)] * 2), "responses": responses, "response_mask": mask, "advantages": advantages}  # fmt: skip
    torch.save(record, tmp_path / "step_3.pt")
    assert error_token_shares(tmp_path, tokenizer) == {"3": pytest.approx(5.0 / (len(wrong) - 1 + 5.0))}


def test_uniform_shares_are_one_over_the_response_tokens(tmp_path, tokenizer):
    outputs = [("4+7=2\n2-9=3\n#### 3", 0.0), ("4+7=1\n1-9=2\n#### 2", 1.0), ("4+7=1\n1-9=2\n#### 5", 0.0)]  # wrong, right, wrong on the answer only
    (tmp_path / "1.jsonl").write_text("\n".join(json.dumps({"input": PROMPT, "output": o, "score": s, "step": 1}) for o, s in outputs))
    tokens = len(tokenizer(outputs[0][0], add_special_tokens=False)["input_ids"]) + 1  # and <|im_end|>
    assert uniform_error_token_shares(tmp_path, tokenizer) == {"1": pytest.approx(1.0 / tokens)}
