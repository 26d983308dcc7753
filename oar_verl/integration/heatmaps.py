"""Token heatmaps during training: every `algorithm.oar.heatmap_freq` steps, a few of the
step's responses (a correct and an incorrect one when the batch has both) as one HTML page
and a PNG each, written to `trainer.default_local_dir`/oar_heatmaps/ and logged to the
trackers verl has on: wandb as HTML (`oar/heatmaps`), tensorboard as images
(`oar/heatmap/<k>`, in verl's tensorboard directory).

Off the hot path: the page is built on the driver (string work, milliseconds); PNG
rendering and tensorboard writes run on a background thread, which the next heatmap step,
or the last training step, waits for.
"""

from __future__ import annotations

import logging
import os
import random
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import transfer_queue as tq

from oar_verl.core.spans import Segments
from oar_verl.integration.config import OARSettings
from oar_verl.viz import TokenHeatmap, render_html, render_png

logger = logging.getLogger("oar_verl")
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oar-heatmaps")
_pending: list[Future] = []
_writers: dict[str, object] = {}


def is_heatmap_step(settings: OARSettings, step: int) -> bool:
    return settings.heatmap_freq > 0 and step % settings.heatmap_freq == 0


def pick_rows(record: dict[str, torch.Tensor], count: int, seed: int) -> list[int]:
    """Up to `count` row indices, drawn at random (seeded): a reweighted row with positive
    advantage (a correct answer) and one with negative advantage when there are such rows,
    then other reweighted rows, then any real row."""
    rng = random.Random(seed)
    advantage = record["row_advantage"]
    real = record["response_mask"].any(dim=1)
    reweighted = (record["segments"][:, 3] > 0) & ~record["degenerate"] & real

    def shuffled(pool: torch.Tensor) -> list[int]:
        rows = pool.nonzero().flatten().tolist()
        rng.shuffle(rows)
        return rows

    chosen = [rows[0] for rows in (shuffled(reweighted & (advantage > 0)), shuffled(reweighted & (advantage < 0))) if rows]
    for row in shuffled(reweighted) + shuffled(real & ~reweighted):
        if row not in chosen:
            chosen.append(row)
    return chosen[:count]


def build_heatmaps(
    tokenizer, record: dict[str, torch.Tensor], rows: list[int], prompts: list[list[int]], rewards: list[float], *, method: str, step: int
) -> list[TokenHeatmap]:
    """Heatmaps of `rows` of a step record (`trainer.attribution_weights`)."""
    segment_field = record["segments"]  # [B, 4]: reasoning_end, answer_start, answer_end, attributed
    segments = Segments(segment_field[:, 0], segment_field[:, 1], segment_field[:, 2], record["found"])
    heatmaps = []
    for row, prompt_ids, reward in zip(rows, prompts, rewards):
        length = int(record["response_mask"][row].sum())
        attributed = bool(record["segments"][row, 3]) and not bool(record["degenerate"][row])
        notes = (f"advantage {float(record['row_advantage'][row]):+.3f}", f"answer found: {bool(record['found'][row])}",
                 "reweighted" if attributed else "not reweighted (GRPO weights)")  # fmt: skip
        heatmaps.append(
            TokenHeatmap.build(
                tokenizer,
                record["responses"][row, :length].tolist(),
                segments.labels(row, length),
                record["scores"][row, :length].tolist(),
                record["weights"][row, :length].tolist(),
                prompt=tokenizer.decode(prompt_ids, skip_special_tokens=False),
                reward=reward,
                title=f"step {step} · row {row} · {method}",
                notes=notes,
            )
        )
    return heatmaps


def publish_heatmaps(trainer, batch, record: dict[str, torch.Tensor]) -> None:
    """On heatmap steps: picks rows, writes the page, logs it, and queues PNGs and
    tensorboard images on the background thread. A step with several updates
    (`parameter_sync_step` > 1) shows its first update's responses."""
    settings = OARSettings.from_algorithm_config(trainer.config.algorithm)
    step = int(trainer.global_steps)
    if not is_heatmap_step(settings, step) or trainer.local_trigger_step != 0:
        return
    _wait_pending()
    rows = pick_rows(record, settings.heatmap_responses, seed=settings.seed + step)
    if not rows:
        return
    data = tq.kv_batch_get(keys=[batch.keys[row] for row in rows], partition_id=batch.partition_id, select_fields=["prompts", "rm_scores"])
    prompts = [row.tolist() for row in data["prompts"].unbind(0)]
    rewards = [float(row.float().sum()) for row in data["rm_scores"].unbind(0)]
    method = trainer.config.algorithm.adv_estimator
    heatmaps = build_heatmaps(trainer.tokenizer, record, rows, prompts, rewards, method=method, step=step)

    directory = Path(trainer.config.trainer.default_local_dir) / "oar_heatmaps"
    directory.mkdir(parents=True, exist_ok=True)
    page = render_html(heatmaps, title=f"OAR token credit · step {step} · {method}")
    (directory / f"step_{step}.html").write_text(page, encoding="utf-8")
    loggers = list(trainer.config.trainer.get("logger") or [])
    if "wandb" in loggers:
        _log_wandb(page, step)
    tensorboard_dir = _tensorboard_dir(trainer.config.trainer) if "tensorboard" in loggers else None
    _pending.append(_executor.submit(_write_images, heatmaps, directory, step, tensorboard_dir))
    if step >= int(getattr(trainer, "total_training_steps", step)):
        _wait_pending()


def _write_images(heatmaps: list[TokenHeatmap], directory: Path, step: int, tensorboard_dir: str | None) -> None:
    for k, heatmap in enumerate(heatmaps):
        path = render_png(heatmap, directory / f"step_{step}_{k}.png")
        if tensorboard_dir is not None:
            from PIL import Image

            image = np.asarray(Image.open(path).convert("RGB"))  # [H, W, 3] uint8
            writer = _tensorboard_writer(tensorboard_dir)
            writer.add_image(f"oar/heatmap/{k}", image, global_step=step, dataformats="HWC")
            writer.flush()


def _log_wandb(page: str, step: int) -> None:
    import wandb

    if wandb.run is None:
        logger.warning("oar_verl: heatmaps not logged to wandb: no wandb run in this process")
        return
    wandb.log({"oar/heatmaps": wandb.Html(page, inject=False)}, step=step)


def _tensorboard_dir(trainer_config) -> str:
    """The directory verl's tensorboard logger writes to (`verl.utils.tracking`)."""
    return os.environ.get("TENSORBOARD_DIR", f"tensorboard_log/{trainer_config.project_name}/{trainer_config.experiment_name}")


def _tensorboard_writer(directory: str):
    if directory not in _writers:
        from torch.utils.tensorboard import SummaryWriter

        _writers[directory] = SummaryWriter(log_dir=directory, filename_suffix=".oar_heatmaps")
    return _writers[directory]


def _wait_pending() -> None:
    """Waits for queued image work; a failure is logged, never raised into training."""
    while _pending:
        try:
            _pending.pop(0).result()
        except Exception:  # heatmaps must not stop training
            logger.exception("oar_verl: writing heatmap images failed")
