"""The main job: a real OAR-G (or GRPO, OAR-P) training run through verl's trainer on the
CPU, from nothing.

    python -m oar_verl.quickstart                      # defaults: oar_g, 12 steps
    python -m oar_verl.quickstart --estimator grpo --steps 20 --workdir outputs/quickstart
    python -m oar_verl.quickstart --strategy megatron   # the actor on verl's Megatron engine

1. builds a byte-level Qwen2 and warm-starts it on generated arithmetic (`warmstart.py`);
2. writes generated GSM8K-format train / held-out parquet files (`data/arithmetic.py`);
3. trains with `python -m oar_verl.main_ppo --config-name cpu` (verl's v1 trainer, FSDP2
   on gloo, the hf rollout), validating on the held-out set before training and every
   `--test-freq` steps;
4. prints the held-out accuracy at each validation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from oar_verl.data.arithmetic import write_split
from oar_verl.integration.errors import SettingsError, exit_on_settings_error
from oar_verl.warmstart import warm_start

HELD_OUT_METRIC = "val-core/openai/gsm8k/acc/mean@1"
TASK = {"max_steps": 1, "max_operand": 9}  # one-step single-digit sums: learnable in seconds


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


CONFIG_DIR = Path(__file__).parent / "config"
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


def run_training(command: list[str], metrics_file: Path, log_file: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a training command with verl's file logger writing to `metrics_file`, its output
    appended to `log_file` (or shown)."""
    env = {**os.environ, **(env or {}), "VERL_FILE_LOGGER_PATH": str(metrics_file)}
    if env.get("CUDA_VISIBLE_DEVICES") == "":  # an empty value makes Ray refuse logical GPUs
        del env["CUDA_VISIBLE_DEVICES"]
    if log_file is None:
        return subprocess.run(command, env=env, check=False)
    with open(log_file, "a") as log:
        return subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)


def read_metrics(metrics_file: Path) -> dict[int, dict]:
    """verl's file-logger lines, {step: metrics} (later lines of a step update earlier ones)."""
    steps: dict[int, dict] = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        steps.setdefault(int(record["step"]), {}).update(record["data"])
    return steps


def mode_overrides(trainer_mode: str) -> list[str]:
    """The overrides a run in `trainer_mode` needs on the CPU (`TRAINER_MODES`), with the mode."""
    return [f"trainer.v1.trainer_mode={trainer_mode}", *TRAINER_MODES[trainer_mode]]


def check_command(estimator: str, strategy: str, overrides: list[str]) -> None:
    """The run's configuration composed and its names checked before the model is built
    (the estimator, every override's key and type, the OAR settings): `SettingsError`."""
    from oar_verl.integration import ESTIMATORS
    from oar_verl.integration.command_line import CommandLine, compose_config
    from oar_verl.integration.config import OARSettings
    from oar_verl.integration.launch_checks import estimator_errors

    config = compose_config(
        CommandLine.parse(["--config-name", PRESETS[strategy], f"algorithm.adv_estimator={estimator}", *overrides], CONFIG_DIR, "cpu")
    )
    errors = estimator_errors(config)
    if errors:
        raise SettingsError(f"--estimator {errors[0].removeprefix('algorithm.adv_estimator=')}")
    if estimator in ESTIMATORS:
        try:
            OARSettings.from_algorithm_config(config.algorithm).method_config(estimator, pad_token_id=0)
        except ValueError as error:
            raise SettingsError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m oar_verl.quickstart", description="Train a small model with verl on the CPU: OAR-G, OAR-P or GRPO."
    )
    parser.add_argument("--estimator", default="oar_g", help="algorithm.adv_estimator: oar_g, oar_p, grpo, ... (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=12, help="training steps (default: %(default)s)")
    parser.add_argument("--test-freq", type=int, default=4, help="held-out evaluation every N steps, and before training (default: %(default)s)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("outputs/quickstart"), help="model, data, checkpoints and metrics (default: %(default)s)"
    )
    parser.add_argument(
        "--strategy", choices=sorted(PRESETS), default="fsdp2", help="the actor's engine; megatron needs the megatron extra (default: %(default)s)"
    )
    parser.add_argument(
        "--trainer-mode", choices=sorted(TRAINER_MODES), default="sync", help="verl's v1 trainer mode, set up for the CPU (default: %(default)s)"
    )
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for verl, e.g. algorithm.oar.quantile=0.3")
    args = parser.parse_args(argv)
    overrides = [*mode_overrides(args.trainer_mode), *args.overrides]
    with exit_on_settings_error(parser.prog):
        check_command(args.estimator, args.strategy, overrides)

    paths = prepare(args.workdir)
    run = "_".join([args.estimator] + [args.strategy] * (args.strategy != "fsdp2") + [args.trainer_mode] * (args.trainer_mode != "sync"))
    metrics_file = args.workdir / f"metrics_{run}.jsonl"
    metrics_file.unlink(missing_ok=True)
    command = train_command(
        paths,
        args.workdir / f"checkpoints_{run}",
        estimator=args.estimator,
        steps=args.steps,
        overrides=["trainer.val_before_train=true", f"trainer.test_freq={args.test_freq}", *overrides],
        strategy=args.strategy,
    )
    print("running:", " ".join(command), flush=True)
    result = run_training(command, metrics_file)
    if result.returncode != 0:
        sys.exit(f"training failed (exit code {result.returncode})")
    print(f"\nheld-out accuracy ({HELD_OUT_METRIC}), estimator {args.estimator}:")
    for step, metrics in sorted(read_metrics(metrics_file).items()):
        if HELD_OUT_METRIC in metrics:
            print(f"  step {step:3d}: {metrics[HELD_OUT_METRIC]:.3f}")
    print(f"per-step metrics (oar/*, timing_s/*, ...): {metrics_file}")


if __name__ == "__main__":
    main()
