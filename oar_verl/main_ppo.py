"""verl's PPO/GRPO trainer with oar_verl's checks and presets.

    # verl's stock config; any verl override works as with `python -m verl.trainer.main_ppo`
    python -m oar_verl.main_ppo data.train_files=... actor_rollout_ref.model.path=...
    # the CPU preset (oar_verl/config/cpu.yaml): a small model, FSDP2 on gloo, hf rollout
    python -m oar_verl.main_ppo --config-name cpu data.train_files=... data.val_files=... \\
        actor_rollout_ref.model.path=...

Settings are checked in this process, before Ray starts. With `trainer.device=cpu` the CPU
backend is selected (`VERL_PLATFORM=cpu`, inherited by every Ray worker) and GPU-only
settings are refused with the setting named.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from oar_verl.integration.command_line import CONFIG_OPTIONS, OAR_CONFIG_DIR, CommandLine, compose_config, hydra_entry_help
from oar_verl.integration.errors import SettingsError, exit_on_settings_error

PROGRAM = "python -m oar_verl.main_ppo"


def check_and_prepare(config: DictConfig) -> None:
    """Validates `config` (OAR settings; the CPU backend's limits) and selects the CPU
    backend when asked for."""
    from oar_verl.integration.validation import launch_errors

    errors = launch_errors(config)
    if errors:
        raise SettingsError(f"algorithm.adv_estimator={config.algorithm.adv_estimator}:\n  - " + "\n  - ".join(errors))
    if config.trainer.device != "cpu":
        return
    from oar_verl.verl_cpu.validation import cpu_settings_errors

    errors = cpu_settings_errors(config)
    if errors:
        raise SettingsError("cannot run on the CPU backend:\n  - " + "\n  - ".join(errors))
    os.environ["VERL_PLATFORM"] = "cpu"
    from oar_verl.verl_cpu import backend

    backend.install()


def verl_checks(config: DictConfig) -> None:
    """What `verl.trainer.main_ppo.main` checks before Ray (device, `validate_config`, with
    the plugin's OAR check), and that the v1 trainer is selected."""
    from hydra.errors import InstantiationException
    from verl.trainer import main_ppo as verl_main
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    verl_main.auto_set_device(config)
    try:
        verl_main.validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except SettingsError:
        raise
    except (AssertionError, ValueError, InstantiationException) as error:  # verl's own checks of its settings
        while isinstance(error, InstantiationException) and error.__cause__ is not None:  # a config dataclass's check
            error = error.__cause__
        raise SettingsError(f"verl's config check: {str(error).splitlines()[0]}") from None
    if not config.trainer.use_v1:
        raise SettingsError("trainer.use_v1=False: oar_verl runs on verl's v1 trainer; the legacy trainer is deprecated in verl 0.9")


def run(config: DictConfig) -> None:
    """Checks, then runs verl's trainer as `verl.trainer.main_ppo.main` does."""
    check_and_prepare(config)
    verl_checks(config)
    from verl.trainer import main_ppo as verl_main

    verl_main.run_ppo(config, task_runner_class=verl_main.TaskRunnerV1)


@hydra.main(config_path="config", config_name="ppo", version_base=None)
def hydra_main(config: DictConfig) -> None:
    with exit_on_settings_error(PROGRAM):
        run(config)


def main() -> None:
    """`--help` prints the OAR settings; the command line is composed and checked in this
    process first (a key the config lacks, a value of the wrong type: one message, exit
    status 2), then hydra runs the job as `verl.trainer.main_ppo` does."""
    argv = sys.argv[1:]
    if {"-h", "--help"} & set(argv):
        print(hydra_entry_help(PROGRAM, __doc__))
        return
    hydra_options = [arg for arg in argv if arg.startswith("hydra.") or (arg.startswith("-") and arg.split("=")[0] not in CONFIG_OPTIONS)]
    if not hydra_options:  # --multirun, --cfg, hydra.* ...: hydra's own business
        with exit_on_settings_error(PROGRAM):
            compose_config(CommandLine.parse(argv, OAR_CONFIG_DIR, "ppo"))
    hydra_main()


if __name__ == "__main__":
    main()
