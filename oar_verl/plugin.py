"""The `verl.plugins` entry point: runs in every process that imports verl.

- OAR: registers `oar_p` / `oar_g` in verl's estimator registry, makes verl's synchronous
  v1 trainer run the OAR attribution step for those estimators (`integration.trainer`:
  through verl's pre-advantage steps and worker computations where verl has them, the
  upstream patches in `patches/`, else by installing its trainer and worker classes),
  and adds the OAR settings check to verl's config validation (`verl.utils.config.
  validate_config`, which `verl.trainer.main_ppo` runs in the launching process before Ray
  starts). Each happens when verl imports the module concerned, so processes that never
  do pay nothing.
- With `VERL_PLATFORM=cpu`: installs the CPU backend (`oar_verl.verl_cpu`).

verl swallows entry-point errors at DEBUG level, so a failure is logged here at ERROR
level, with its cause, before it propagates.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

logger = logging.getLogger("oar_verl")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s (pid %(process)d): %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(os.environ.get("OAR_VERL_LOGGING_LEVEL", "INFO"))
    logger.propagate = False


def _register_estimators(core_algos) -> None:
    from oar_verl.integration import estimators

    estimators.register(core_algos)


def _install_trainer(trainer_sync) -> None:
    # The module installs the OAR step when it is first imported; importing it from here
    # while it is itself being imported (it imports trainer_sync) is a no-op.
    importlib.import_module("oar_verl.integration.trainer")


def _register_worker_computation(engine_workers) -> None:
    importlib.import_module("oar_verl.integration.worker")  # registers on first import


def _add_oar_validation(config_module) -> None:
    from oar_verl.integration import validation

    verl_validate = config_module.validate_config
    if getattr(verl_validate, "_oar_checks", False):
        return

    @functools.wraps(verl_validate)
    def validate_config(config, *args, **kwargs):
        validation.check(config)
        return verl_validate(config, *args, **kwargs)

    validate_config._oar_checks = True
    config_module.validate_config = validate_config


def _load() -> None:
    from oar_verl import import_hooks
    from oar_verl.verl_cpu import backend

    import_hooks.after_import("verl.trainer.ppo.core_algos", _register_estimators)
    import_hooks.after_import("verl.trainer.ppo.v1.trainer_sync", _install_trainer)
    import_hooks.after_import("verl.workers.engine_workers", _register_worker_computation)
    import_hooks.after_import("verl.utils.config", _add_oar_validation)
    installed = "oar_p/oar_g estimators"
    if backend.cpu_platform_selected():
        backend.install()
        installed += "; CPU backend (platform cpu, FSDP engines on gloo, hf rollout)"
    logger.info("oar_verl plugin loaded: %s", installed)


try:
    _load()
except Exception as error:
    logger.error("oar_verl: verl plugin failed to load: %r", error, exc_info=True)
    raise
