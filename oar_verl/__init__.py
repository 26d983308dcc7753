"""oar_verl: Outcome-grounded Advantage Reshaping (OAR) for verl.

`oar_verl.core` holds the algorithm and never imports verl.
"""

import logging
import os

__version__ = "0.1.0"

CPU_PLATFORM = "cpu"


def cpu_platform_selected() -> bool:
    """True in a process of a run of the CPU backend: `VERL_PLATFORM=cpu`, set by the run
    (`oar_verl.main_ppo` on a CPU run) and inherited by verl's Ray workers and the vLLM
    processes they start. Both plugins (verl's and vLLM's) ask, and neither imports verl first."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == CPU_PLATFORM


def plugin_logger() -> logging.Logger:
    """The `oar_verl` logger of the plugins' processes (verl's workers, vLLM's engine and
    workers, where no one else configures it): to stderr, one line a record with its pid, at
    `OAR_VERL_LOGGING_LEVEL` (default INFO)."""
    logger = logging.getLogger("oar_verl")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s (pid %(process)d): %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("OAR_VERL_LOGGING_LEVEL", "INFO"))
        logger.propagate = False
    return logger
