"""The study's page for a plan: the powered study's (a plan with a gate: `results.md`,
`powered_report.py`, with its follow-up's runs as a section) or the first study's
(`results_PLAN.md`, `report.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from oar_verl.study.plan import FOLLOW_UPS
from oar_verl.study.powered_report import write_powered_report
from oar_verl.study.report import write_first_report


def write_report(results: dict, out_dir: Path, *, command: str) -> Path:
    """Writes the plan's page under `out_dir`, its images under `out_dir/results/`; a
    follow-up's results (`plan.FOLLOW_UPS`) rewrite the page of the study they follow."""
    name = results["plan"]["name"]
    study = next((study for study, follow_up in FOLLOW_UPS.items() if follow_up == name), None)
    if study is not None:
        return write_report(_results(out_dir, study), out_dir, command=f"python -m oar_verl.study --plan {study}")
    if results["plan"].get("gate_methods"):
        follow_up = FOLLOW_UPS.get(name)
        recorded = follow_up is not None and (out_dir / "results" / f"{follow_up}.json").exists()
        return write_powered_report(results, out_dir, command=command, follow_up=_results(out_dir, follow_up) if recorded else None)
    return write_first_report(results, out_dir, command=command)


def _results(out_dir: Path, plan_name: str) -> dict:
    return json.loads((out_dir / "results" / f"{plan_name}.json").read_text())
