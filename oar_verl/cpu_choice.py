"""Whether this process belongs to a run of oar_verl's CPU backend: `VERL_PLATFORM=cpu`, set
by the run (`oar_verl.main_ppo` on a CPU run) and inherited by verl's Ray workers and the
vLLM processes they start. Imports nothing, so both plugins (verl's and vLLM's) can ask."""

from __future__ import annotations

import os

CPU_PLATFORM = "cpu"


def cpu_platform_selected() -> bool:
    """True where verl is told to run on the CPU (`VERL_PLATFORM=cpu`)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == CPU_PLATFORM
