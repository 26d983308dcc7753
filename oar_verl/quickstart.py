"""The main job: a real OAR-G (or GRPO, OAR-P) training run through verl's trainer on the
CPU, from nothing.

    python -m oar_verl.quickstart                      # defaults: oar_g, 12 steps
    python -m oar_verl.quickstart --estimator grpo --steps 20 --workdir outputs/quickstart
    python -m oar_verl.quickstart --strategy megatron   # the actor on verl's Megatron engine

1. builds a byte-level Qwen2 and warm-starts it on generated arithmetic (`tiny/warmstart.py`);
2. writes generated GSM8K-format train / held-out parquet files (`tiny/arithmetic.py`);
3. trains with `python -m oar_verl.main_ppo --config-name cpu` (verl's v1 trainer, FSDP2
   on gloo, the hf rollout), validating on the held-out set before training and every
   `--test-freq` steps;
4. prints the held-out accuracy at each validation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from oar_verl.integration.errors import SettingsError, exit_on_settings_error
from oar_verl.tiny.launch import (
    CONFIG_DIR,
    HELD_OUT_METRIC,
    PRESETS,
    TRAINER_MODES,
    mode_overrides,
    prepare,
    read_metrics,
    run_training,
    train_command,
)


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
