import pytest
import torch

from oar_verl.core import ResponseBatch


def test_verl_layout():
    batch = ResponseBatch.from_token_lists([[1, 2], [3]], [[4], [5, 6, 7]], pad_token_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 4, 0, 0], [0, 3, 5, 6, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 2], [0, 0, 1, 2, 3]]
    assert batch.prompt_length == 2 and batch.responses.tolist() == [[4, 0, 0], [5, 6, 7]]
    assert batch.response_mask.tolist() == [[True, False, False], [True, True, True]]


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda ids, m, p: (ids.float(), m, p), "input_ids"),
        (lambda ids, m, p: (ids, m[:, :-1], p), "attention_mask"),
        (lambda ids, m, p: (ids, m, p.float()), "position_ids"),
        (lambda ids, m, p: (ids[0], m, p), "input_ids"),
    ],
)
def test_bad_tensors_name_the_argument(change, name):
    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=name):
        ResponseBatch(*change(ids, mask, mask.cumsum(1) - 1), response_length=2)


def test_bad_lengths_name_the_argument():
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="response_length"):
        ResponseBatch(ids, ids, ids, response_length=5)
    with pytest.raises(ValueError, match="prompts"):
        ResponseBatch.from_token_lists([[]], [[1]], pad_token_id=0)
    with pytest.raises(ValueError, match="responses"):
        ResponseBatch.from_token_lists([[1]], [[]], pad_token_id=0)
