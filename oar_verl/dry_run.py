"""A verl run up to the moment Ray would start: compose, resolve, check, stop.

    python -m oar_verl.dry_run OVERRIDES...                 # same arguments as verl.trainer.main_ppo
    VERL_MAIN="python -m oar_verl.dry_run" bash recipes/gsm8k_qwen2.5-0.5b.sh

Composes verl's `ppo_trainer` configuration with the overrides exactly as
`python -m verl.trainer.main_ppo` does (an override verl 0.9.1's schema lacks fails here),
resolves every interpolation, builds verl's algorithm and rollout config dataclasses, runs
verl's own `validate_config` (to which the oar_verl plugin adds the OAR settings and data
checks), and checks that the data files exist and carry ground truths. Nothing is loaded:
no model, no GPU, no Ray.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import verl
from omegaconf import DictConfig, OmegaConf

VERL_CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def check(config: DictConfig) -> None:
    """Every check `verl.trainer.main_ppo` and oar_verl run before Ray, and the data files."""
    from verl.utils.config import omega_conf_to_dataclass

    from oar_verl.integration.data_check import data_errors
    from oar_verl.main_ppo import SettingsError, verl_checks

    OmegaConf.resolve(config)
    verl_checks(config)
    # verl's own algorithm fields; `algorithm.oar` is the plugin's, checked by `verl_checks`
    omega_conf_to_dataclass(OmegaConf.masked_copy(config.algorithm, [key for key in config.algorithm if key != "oar"]))
    omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    errors = data_errors(config, answer_pattern=None)
    if errors:
        raise SettingsError("data:\n  - " + "\n  - ".join(errors))


def dry_run(overrides: list[str]) -> DictConfig:
    """`main` in this process: composes verl's configuration (`ppo_trainer`, or the one a
    `--config-name NAME` among `overrides` names, e.g. `ppo_megatron_trainer`) with the
    overrides (hydra's compose API, as `hydra.main` does), checks it and returns it
    resolved."""
    from hydra import compose, initialize_config_dir

    overrides, name = list(overrides), "ppo_trainer"
    if "--config-name" in overrides:
        at = overrides.index("--config-name")
        name = overrides[at + 1]
        del overrides[at : at + 2]
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        config = compose(config_name=name, overrides=overrides)
    check(config)
    return config


def summary(config: DictConfig) -> str:
    return (f"dry run passed: algorithm.adv_estimator={config.algorithm.adv_estimator}, model {config.actor_rollout_ref.model.path}, "
            f"{config.trainer.nnodes} x {config.trainer.n_gpus_per_node} GPUs")  # fmt: skip


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    check(config)
    print(summary(config))


if __name__ == "__main__":
    main()
