"""Attribution through verl's own FSDP2 engine (`integration/engine_attribution.py`) on the
CPU backend: pi_old bit-equal to verl's pass, scores equal to the definition, rows in a pack
independent, no parameter gradient or reduce-scatter; remove-padding on and off, fp32 and
bf16, fixed and dynamic micro-batches; 1 rank, and 3 ranks where one has nothing to
attribute and one a single row (the rank script: tests/ranks/engine_attribution.py); a LoRA
actor (tests/ranks/engine_lora.py)."""

import json

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world_size", [1, 3])
def test_attribution_through_verls_engine(tmp_path, world_size):
    run_ranks("tests.ranks.engine_attribution", tmp_path, world_size=world_size, env={"VERL_PLATFORM": "cpu"})
    reports = [json.loads((tmp_path / f"report{rank}.json").read_text()) for rank in range(world_size)]
    print(reports[0])
    assert sorted(report["rank"] for report in reports) == list(range(world_size))
    first = next(report for report in reports if report["rank"] == 0)
    assert any(key.startswith("fp32 packed") for key in first) and any(key.startswith("fp32 padded") for key in first)


def test_attribution_through_a_lora_adapter(tmp_path):
    """`lora_rank` > 0: the scores are the adapted model's (the brute-force definition on the
    model with the adapter merged), not the base model's (tests/ranks/engine_lora.py)."""
    run_ranks("tests.ranks.engine_lora", tmp_path, world_size=1, env={"VERL_PLATFORM": "cpu"})
    report = json.loads((tmp_path / "report0.json").read_text())
    print(report)
    assert report["vs adapted"] < 1e-4 < report["vs base"]
