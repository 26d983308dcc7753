"""Launching verl's trainer on a small model on the CPU: the model and data of a run
(`prepare`), its command line on the CPU presets (`train_command`, `TRAINER_MODES`), running
it with verl's file logger (`run_training`) and reading the metrics back (`read_metrics`).
The main job (`oar_verl.quickstart`), the studies and the end-to-end tests use them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from oar_verl.tiny.arithmetic import write_split
from oar_verl.tiny.warmstart import warm_start

HELD_OUT_METRIC = "val-core/openai/gsm8k/acc/mean@1"
TASK = {"max_steps": 1, "max_operand": 9}  # one-step single-digit sums: learnable in seconds
# The warm start of a model verl's vLLM rollout can serve on the CPU: hidden size 128 with 4
# heads and 2 key/value heads (head size 32, the smallest vLLM's CPU attention takes; grouped
# queries; Megatron tensor parallelism 2), trained until its greedy accuracy reaches 0.5.
VLLM_WARM_START = {"hidden_size": 128, "steps": 1500, "learning_rate": 2e-3, "target_accuracy": 0.5, "evaluate_every": 100}


def prepare(
    workdir: Path,
    *,
    warm_start_steps: int = 300,
    train_size: int = 512,
    val_size: int = 64,
    seed: int = 0,
    task: dict = TASK,
    slip_probability: float = 0.0,
    wrap_slip_probability: float = 0.0,
    warm_start_learning_rate: float = 3e-3,
    warm_start_target_accuracy: float | None = None,
) -> dict[str, Path]:
    """The model and the data of a run, built under `workdir` (reused when present).

    `task`: the arithmetic's shape (`max_steps`, `max_operand`, and optionally `min_steps`,
    `modulus`: `data.arithmetic.make_problem`); `slip_probability`,
    `wrap_slip_probability`: the warm-start traces' imperfections; `warm_start_target_accuracy`:
    warm-start until that greedy accuracy (at most `warm_start_steps` steps; `warmstart.warm_start`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"model": workdir / "model", "train": workdir / "train.parquet", "val": workdir / "val.parquet"}
    if not (paths["model"] / "config.json").exists():
        warm_start(paths["model"], steps=warm_start_steps, seed=seed, learning_rate=warm_start_learning_rate, slip_probability=slip_probability,
                   wrap_slip_probability=wrap_slip_probability, target_accuracy=warm_start_target_accuracy, **task)  # fmt: skip
    if not paths["train"].exists():
        write_split(paths["train"], train_size, seed=seed + 1, split="train", **task)
    if not paths["val"].exists():
        write_split(paths["val"], val_size, seed=seed + 2, split="test", **task)
    return paths


CONFIG_DIR = Path(__file__).parents[1] / "config"
PRESETS = {"fsdp2": "cpu", "megatron": "cpu_megatron"}  # actor strategy -> CPU preset (config/)
# verl's v1 trainer mode -> what it needs on the CPU beyond the preset: separate_async samples
# on a standalone rollout replica (a logical GPU of its own), synced through the gloo
# checkpoint engine (verl's need accelerators), and splits a step's 8 prompts into
# parameter_sync_step updates of one mini-batch each.
TRAINER_MODES = {
    "sync": (),
    "colocate_async": (),
    "separate_async": (
        "actor_rollout_ref.rollout.nnodes=1", "actor_rollout_ref.rollout.n_gpus_per_node=1", "ray_kwargs.ray_init.num_gpus=2",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=gloo", "trainer.v1.separate_async.parameter_sync_step=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    ),
}  # fmt: skip


def train_command(
    paths: dict[str, Path],
    checkpoint_dir: Path,
    *,
    estimator: str,
    steps: int,
    overrides: list[str] = (),
    stock_entry_point: bool = False,
    loggers: tuple[str, ...] = ("console", "file"),
    strategy: str = "fsdp2",
) -> list[str]:
    """The command line of a CPU run: `python -m oar_verl.main_ppo --config-name cpu` (or
    `cpu_megatron` for `strategy="megatron"`), or verl's own `python -m
    verl.trainer.main_ppo` on the same preset (then the environment must select the CPU
    platform: `VERL_PLATFORM=cpu`)."""
    entry = ["verl.trainer.main_ppo", "--config-path", str(CONFIG_DIR)] if stock_entry_point else ["oar_verl.main_ppo"]
    return [
        sys.executable, "-m", *entry, "--config-name", PRESETS[strategy],
        f"data.train_files={paths['train']}",
        f"data.val_files={paths['val']}",
        f"actor_rollout_ref.model.path={paths['model']}",
        f"algorithm.adv_estimator={estimator}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={checkpoint_dir}",
        f"trainer.logger=[{','.join(loggers)}]",
        *overrides,
    ]  # fmt: skip


def run_training(
    command: list[str], metrics_file: Path, log_file: Path | None = None, env: dict | None = None, on_record=None, poll_s: float = 1.0
) -> subprocess.CompletedProcess:
    """Runs a training command with verl's file logger writing to `metrics_file`, its output
    appended to `log_file` (or shown). `on_record(step, metrics)`: called for each logger line
    as it is written (polled every `poll_s` seconds while the command runs)."""
    env = {**os.environ, **(env or {}), "VERL_FILE_LOGGER_PATH": str(metrics_file)}
    if env.get("CUDA_VISIBLE_DEVICES") == "":  # an empty value makes Ray refuse logical GPUs
        del env["CUDA_VISIBLE_DEVICES"]
    with contextlib.ExitStack() as stack:
        output = {} if log_file is None else {"stdout": stack.enter_context(open(log_file, "a")), "stderr": subprocess.STDOUT}
        process = stack.enter_context(subprocess.Popen(command, env=env, **output))
        try:
            if on_record is None:
                return subprocess.CompletedProcess(command, process.wait())
            offset = 0
            while True:
                finished = process.poll() is not None  # read once more after the end: the last lines
                if metrics_file.exists():
                    records, offset = complete_records(metrics_file, offset)
                    for step, metrics in records:
                        on_record(step, metrics)
                if finished:
                    return subprocess.CompletedProcess(command, process.returncode)
                time.sleep(poll_s)
        except BaseException:  # Ctrl-C or a failing callback: the training stops too, as with subprocess.run
            process.kill()
            raise


def complete_records(metrics_file: Path, offset: int = 0) -> tuple[list[tuple[int, dict]], int]:
    """verl's file-logger lines written from byte `offset` on, (step, metrics) each, and the
    offset to read from next: a line still being written (no newline yet) is left for then."""
    with open(metrics_file, "rb") as file:
        file.seek(offset)
        text = file.read()
    end = text.rfind(b"\n") + 1
    return [(int(record["step"]), record["data"]) for record in map(json.loads, text[:end].splitlines())], offset + end


def read_metrics(metrics_file: Path) -> dict[int, dict]:
    """verl's file-logger lines, {step: metrics} (later lines of a step update earlier ones)."""
    steps: dict[int, dict] = {}
    for step, metrics in complete_records(metrics_file)[0]:
        steps.setdefault(step, {}).update(metrics)
    return steps


def mode_overrides(trainer_mode: str) -> list[str]:
    """The overrides a run in `trainer_mode` needs on the CPU (`TRAINER_MODES`), with the mode."""
    return [f"trainer.v1.trainer_mode={trainer_mode}", *TRAINER_MODES[trainer_mode]]
