"""The `verl.plugins` entry point: runs in every process that imports verl.

Installs the OAR hooks (`integration.verl_hooks.install_oar`: the `oar_p` / `oar_g`
estimators, the OAR settings check in verl's config validation, the OAR step in verl's v1
trainers, the worker computation), each when verl imports the module concerned, so
processes that never do pay nothing; and, only with `VERL_PLATFORM=cpu`, the CPU backend
(`oar_verl.verl_cpu`, imported nowhere else).

verl swallows entry-point errors at DEBUG level, so a failure is logged here at ERROR
level, with its cause, before it propagates.
"""

from __future__ import annotations

from oar_verl import cpu_platform_selected, plugin_logger

logger = plugin_logger()


def _load() -> None:
    from oar_verl.integration import verl_hooks

    verl_hooks.install_oar()
    installed = "oar_p/oar_g estimators"
    if cpu_platform_selected():
        from oar_verl.verl_cpu import backend

        backend.install()
        installed += "; CPU backend (platform cpu, engines on gloo, hf and vllm rollouts)"
    logger.info("oar_verl plugin loaded: %s", installed)


try:
    _load()
except Exception as error:
    logger.error("oar_verl: verl plugin failed to load: %r", error, exc_info=True)
    raise
