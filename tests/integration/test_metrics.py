import pytest
import torch

from oar_verl.integration.metrics import oar_metrics


def test_metrics_on_a_known_batch():
    weights = torch.tensor([[0.5, 1.5, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    reasoning = torch.tensor([[True, True, False, False], [False] * 4, [False] * 4])
    metrics = oar_metrics(
        weights=weights,
        reasoning=reasoning,
        real=torch.tensor([True, True, False]),
        answer_found=torch.tensor([True, False, False]),
        nonzero=torch.tensor([True, True, False]),
        degenerate=torch.tensor([False, True, False]),
        low_signal=torch.tensor([False, False, False]),
        attributed=torch.tensor([True, False, False]),
        dp_rank=torch.tensor([0, 1, 1]),
    )
    assert metrics["oar/weight/mean"] == 1.0 and metrics["oar/weight/min"] == 0.5 and metrics["oar/weight/max"] == 1.5
    assert metrics["oar/weight/std"] == pytest.approx(0.5)
    assert metrics["oar/weight/frac_suppressed"] == 0.5 and metrics["oar/weight/frac_boosted"] == 0.5
    assert metrics["oar/answer_found_rate"] == 0.5  # of the real rows
    assert metrics["oar/rows/attributed"] == 1 and metrics["oar/rows/degenerate"] == 1 and metrics["oar/rows/zero_advantage"] == 0
    assert metrics["oar/rows/low_signal"] == 0
    assert metrics["oar/ranks/without_attributed_rows"] == 1  # rank 1 held rows, attributed none
