"""oar_verl: Outcome-grounded Advantage Reshaping (OAR) for verl.

`oar_verl.core` holds the algorithm and never imports verl.
"""

import os

__version__ = "0.1.0"

CPU_PLATFORM = "cpu"


def cpu_platform_selected() -> bool:
    """True in a process of a run of the CPU backend: `VERL_PLATFORM=cpu`, set by the run
    (`oar_verl.main_ppo` on a CPU run) and inherited by verl's Ray workers and the vLLM
    processes they start. Both plugins (verl's and vLLM's) ask, and neither imports verl first."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == CPU_PLATFORM
