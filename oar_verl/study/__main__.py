"""GRPO vs OAR-G vs OAR-P vs a permuted-weights control, on CPU through verl.

    python -m oar_verl.study [--smoke] [--out DIR] [--workdir DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oar_verl.study.plan import FULL, SMOKE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The study's options."""
    parser = argparse.ArgumentParser(prog="python -m oar_verl.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps, one seed, small sets, GRPO and the control (minutes): checks the pipeline, "
                             "proves nothing (default: the full study)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                        help="results.md, results/*.png and results/results.json go here (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("outputs/study"), metavar="DIR",
                        help="models, data, checkpoints, logs (default: %(default)s)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.md and the plots from results.json, run nothing "
                             "(default: run what results.json lacks)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from oar_verl.study.report import write_report
    from oar_verl.study.runner import run_study

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
