"""Stage 0's statistics, against their definitions on hand-made scores."""

import torch

from oar_verl.core import Segments
from oar_verl.study.stage0 import error_statistics, markdown_table


def test_hits_count_ties_as_shared_and_weights_follow_the_scores():
    scores = torch.tensor([
        [0.9, 0.1, 0.2, 0.3, 0.0, 5.0],  # error token 0 ranks first (the last column is the answer, not reasoning)
        [0.5, 0.9, 0.1, 0.2, 0.0, 5.0],  # error token 0 ranks second
        [0.7, 0.7, 0.1, 0.2, 0.0, 5.0],  # error token 1 ties token 0 for first
        [0.1, 0.2, 0.3, 0.4, 0.9, 5.0],  # error token 0 ranks last of five
    ])  # fmt: skip
    segments = Segments(torch.full((4,), 5), torch.full((4,), 5), torch.full((4,), 6), torch.ones(4, dtype=torch.bool))
    statistics = error_statistics(scores, segments, torch.tensor([0, 0, 1, 0]))
    assert statistics["hit@1"] == (1 + 0 + 0.5 + 0) / 4
    assert statistics["hit@3"] == (1 + 1 + 1 + 0) / 4
    assert abs(statistics["hit@1_se"] - torch.tensor([1.0, 0.0, 0.5, 0.0]).std().item() / 2) < 1e-4
    assert statistics["chance_hit@1"] == 0.2
    assert statistics["weight_on_error"] > 1.0 > statistics["weight_on_others"]
    # row maxima 0.9, 0.9, 0.7, 0.9 over the median row's 0.9: row 2 in [0.1, 1), the others in [1, inf)
    assert statistics["by_relative_signal"] == {
        "[0.1, 1)": {"rows": 1, "hit@1": 0.5, "chance_hit@1": 0.2},
        "[1, inf)": {"rows": 3, "hit@1": 0.3333, "chance_hit@1": 0.2},
    }


def test_the_table_has_a_row_per_estimator():
    row = {"hit@1": 0.5, "hit@1_se": 0.1, "hit@3": 0.75, "chance_hit@1": 0.2, "weight_on_error": 1.5, "weight_on_others": 0.9, "time_s": 2.0}
    table = markdown_table({"estimators": {"oracle": row, "random": {**row, "hit@1": 0.25}}}).splitlines()
    assert len(table) == 4 and table[2].startswith("| oracle | 0.500 (0.100) | 0.750 | 1.50 | 0.90 | 2 |") and "| random | 0.250" in table[3]


def test_hits_by_group_and_per_row():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.9, 0.1, 0.0]])
    segments = Segments(torch.full((3,), 2), torch.full((3,), 2), torch.full((3,), 3), torch.ones(3, dtype=torch.bool))
    statistics = error_statistics(scores, segments, torch.tensor([0, 0, 1]), groups=[0, 2, 2])
    assert statistics["hits@1"] == [1.0, 0.0, 0.0]
    assert statistics["by_lines_after_error"] == {
        "0": {"rows": 1, "hit@1": 1.0, "chance_hit@1": 0.5},
        "2": {"rows": 2, "hit@1": 0.0, "chance_hit@1": 0.5},
    }
