"""A verl run up to the moment Ray would start: compose, resolve, check, stop.

    python -m oar_verl.dry_run OVERRIDES...                      # as python -m verl.trainer.main_ppo
    python -m oar_verl.dry_run --config-name cpu OVERRIDES...    # as python -m oar_verl.main_ppo --config-name cpu
    VERL_MAIN="python -m oar_verl.dry_run" bash recipes/gsm8k_qwen2.5-0.5b.sh

Composes the configuration with the overrides exactly as the entry point would (verl's
`ppo_trainer` by default; `--config-name` also takes oar_verl.main_ppo's presets: ppo,
ppo_megatron, cpu, cpu_megatron), resolves every interpolation and runs every check a
launch runs before Ray: the CPU backend's limits, verl's own `validate_config` (to which the
plugin adds the estimator name, the model paths and the OAR settings), verl's algorithm and
rollout dataclasses, and the data files (present, with ground truths the answer pattern
finds). Nothing is loaded (no model, GPU or Ray) and nothing is written. A mistake is one
message on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from oar_verl.integration.command_line import VERL_CONFIG_DIR, CommandLine, compose_config, hydra_entry_help
from oar_verl.integration.errors import SettingsError, exit_on_settings_error


def check(config: DictConfig) -> None:
    """Every check `oar_verl.main_ppo` runs before Ray (those of `verl.trainer.main_ppo`
    and the plugin's among them), and the data files."""
    from verl.utils.config import omega_conf_to_dataclass

    from oar_verl.integration.data_check import data_errors
    from oar_verl.main_ppo import check_and_prepare, verl_checks

    OmegaConf.resolve(config)
    check_and_prepare(config)
    verl_checks(config)
    # verl's own algorithm fields; `algorithm.oar` is the plugin's, checked by `verl_checks`
    omega_conf_to_dataclass(OmegaConf.masked_copy(config.algorithm, [key for key in config.algorithm if key != "oar"]))
    omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    errors = data_errors(config, answer_pattern=None)
    if errors:
        raise SettingsError("data:\n  - " + "\n  - ".join(errors))


def dry_run(argv: list[str]) -> DictConfig:
    """Composes the configuration of `argv` (overrides, optionally `--config-name NAME` and
    `--config-path DIR`), checks it and returns it resolved."""
    config = compose_config(CommandLine.parse(argv, VERL_CONFIG_DIR, "ppo_trainer"))
    check(config)
    return config


def summary(config: DictConfig) -> str:
    return (f"dry run passed: algorithm.adv_estimator={config.algorithm.adv_estimator}, model {config.actor_rollout_ref.model.path}, "
            f"{config.trainer.nnodes} x {config.trainer.n_gpus_per_node} GPUs")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(hydra_entry_help("python -m oar_verl.dry_run", __doc__))
        return
    with exit_on_settings_error("python -m oar_verl.dry_run"):
        config = dry_run(argv)
    print(summary(config))


if __name__ == "__main__":
    main()
