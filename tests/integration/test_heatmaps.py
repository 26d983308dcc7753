"""Training-time heatmaps: which rows are shown, what each shows, and what reaches the
trackers (wandb offline, tensorboard event files)."""

import pytest
import torch
import wandb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from oar_verl.integration import heatmaps
from oar_verl.integration.config import OARSettings
from oar_verl.tiny.models import byte_tokenizer


def step_record(tokenizer):
    """A step record as `trainer.attribution_weights` makes it: 4 rows, row 3 padding."""
    texts = ["ab\n#### 1", "cd\n#### 2", "no answer", ""]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    R = max(len(i) for i in ids)
    responses = torch.tensor([i + [0] * (R - len(i)) for i in ids])
    mask = torch.tensor([[k < len(i) for k in range(R)] for i in ids])
    segments = torch.tensor([[3, 8, 9, 1], [3, 8, 9, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    weights = torch.ones(4, R)
    weights[0, :3] = torch.tensor([0.2, 1.3, 1.5])
    weights[1, :3] = torch.tensor([1.8, 0.6, 0.6])
    return {"responses": responses, "response_mask": mask, "segments": segments, "found": torch.tensor([True, True, False, False]),
            "scores": weights * 0.01, "weights": weights, "row_advantage": torch.tensor([0.7, -0.7, 0.5, 0.0]),
            "degenerate": torch.tensor([False, False, True, False])}  # fmt: skip


def test_rows_shown_put_a_correct_and_an_incorrect_response_first():
    record = step_record(byte_tokenizer())
    for seed in range(5):
        rows = heatmaps.pick_rows(record, 3, seed)
        assert rows[:2] == [0, 1] and rows[2] == 2  # then the degenerate (not reweighted) real row; never padding
        assert heatmaps.pick_rows(record, 1, seed) == [0]
    record["row_advantage"][1] = 0.3  # no incorrect reweighted row: two correct ones
    assert sorted(heatmaps.pick_rows(record, 2, 0)) == [0, 1]


def test_heatmaps_of_a_step_record():
    tokenizer = byte_tokenizer()
    record = step_record(tokenizer)
    shown = heatmaps.build_heatmaps(tokenizer, record, [0, 2], [[97, 10], [98]], [1.0, 0.0], method="oar_g", step=7)
    assert "".join(shown[0].pieces) == "ab\n#### 1" and shown[0].weights[:3] == pytest.approx([0.2, 1.3, 1.5])
    assert shown[0].segments == ["reasoning"] * 3 + ["bridge"] * 5 + ["answer"]
    assert shown[1].segments == ["unsegmented"] * len("no answer") and "not reweighted (GRPO weights)" in shown[1].notes
    assert shown[0].prompt == "a\n" and shown[0].reward == 1.0 and shown[0].title == "step 7 · row 0 · oar_g"


def test_heatmap_steps():
    assert not heatmaps.is_heatmap_step(OARSettings(), 10)
    assert [s for s in range(1, 10) if heatmaps.is_heatmap_step(OARSettings(heatmap_freq=3), s)] == [3, 6, 9]


def test_trackers_receive_the_page_and_the_images(tmp_path, monkeypatch):
    tokenizer = byte_tokenizer()
    shown = heatmaps.build_heatmaps(tokenizer, step_record(tokenizer), [0, 1], [[97], [98]], [1.0, 0.0], method="oar_g", step=2)
    heatmaps._write_images(shown, tmp_path, 2, str(tmp_path / "tb"))
    assert (tmp_path / "step_2_0.png").exists() and (tmp_path / "step_2_1.png").exists()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"oar/heatmap/0", "oar/heatmap/1"}
    image = events.Images("oar/heatmap/0")[0]
    assert image.step == 2 and image.width > 100 and image.height > 20

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="oar-test")
    try:
        heatmaps._log_wandb("<p>page</p>", step=2)
    finally:
        run.finish()
    pages = list((tmp_path / "wandb").glob("offline-run-*/files/media/html/oar/heatmaps_*.html"))
    assert len(pages) == 1 and pages[0].read_text() == "<p>page</p>"
