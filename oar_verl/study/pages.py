"""The study's page for a plan: the powered study's (a plan with a gate: `results.md`,
`powered_report.py`) or the first study's (`results_PLAN.md`, `report.py`)."""

from __future__ import annotations

from pathlib import Path

from oar_verl.study.powered_report import write_powered_report
from oar_verl.study.report import write_first_report


def write_report(results: dict, out_dir: Path, *, command: str) -> Path:
    """Writes the plan's page under `out_dir`, its images under `out_dir/results/`."""
    if results["plan"].get("gate_methods"):
        return write_powered_report(results, out_dir, command=command)
    return write_first_report(results, out_dir, command=command)
