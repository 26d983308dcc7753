"""The `verl.plugins` entry point: runs in every process that imports verl.

With `VERL_PLATFORM=cpu` it installs the CPU backend (`oar_verl.verl_cpu`); otherwise it
touches nothing. verl swallows entry-point errors at DEBUG level, so a failure is logged
here at ERROR level, with its cause, before it propagates.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("oar_verl")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s (pid %(process)d): %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(os.environ.get("OAR_VERL_LOGGING_LEVEL", "INFO"))
    logger.propagate = False


def _load() -> None:
    from oar_verl.verl_cpu import backend

    if backend.cpu_platform_selected():
        backend.install()
        logger.info("oar_verl: CPU backend installed (platform cpu, FSDP engines on gloo, hf rollout)")


try:
    _load()
except Exception as error:
    logger.error("oar_verl: verl plugin failed to load: %r", error, exc_info=True)
    raise
