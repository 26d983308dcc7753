"""python -m oar_verl.study [--smoke] [--out DIR] [--workdir DIR] [--report-only]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oar_verl.study.plan import FULL, SMOKE
from oar_verl.study.report import write_report
from oar_verl.study.runner import run_study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oar_verl.study", description="GRPO vs OAR-G vs OAR-P vs a permuted-weights control, on CPU through verl.")
    parser.add_argument("--smoke", action="store_true", help="a few steps, one seed, small sets, GRPO and the control (minutes): checks the pipeline, proves nothing")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where results.md, results/*.png and results/results.json go")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/study"), help="models, data, checkpoints, logs")
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md and the plots from results.json, run nothing")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    results_file = args.out / "results" / "results.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        results = run_study(plan, args.workdir, results_file, log=lambda m: print(m, flush=True))
    command = "python -m oar_verl.study" + (" --smoke" if args.smoke else "")
    path = write_report(results, args.out, command=command)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
