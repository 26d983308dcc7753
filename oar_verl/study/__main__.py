"""The controlled studies of OAR against GRPO on CPU, through verl's trainer.

python -m oar_verl.study --plan chains [--out DIR] [--workdir DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oar_verl.study.plan import GRADIENTS, PLANS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The study's options."""
    parser = argparse.ArgumentParser(prog="python -m oar_verl.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=sorted([*PLANS, GRADIENTS.name]), default="chains",
                        help="chains: the powered study (5-6 step chains mod 10, an oracle arm, 6 seeds; hours); first: the "
                             "first study (1-3 steps, 3 seeds); smoke: a few steps, one seed, GRPO and the control (minutes): "
                             "checks the pipeline, proves nothing; gradients: the paired gradient-level test (chains and filler tasks, "
                             "every arm's policy gradient on shared samples; about an hour) (default: %(default)s)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="the same as --plan smoke (default: off)")
    parser.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                        help="the plan's page (results.md for chains, results_PLAN.md for the others), its plots under "
                             "results/ and its results file results/PLAN.json go here (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help="models, data, checkpoints, logs, generations (default: outputs/study/PLAN)")  # fmt: skip
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the page and the plots from the results file, run nothing (default: run what it lacks)"
    )
    parser.add_argument(
        "--past-gate", action="store_true", help="run every method even when the oracle does not beat GRPO (default: stop after the gate's runs)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plan == GRADIENTS.name:
        return gradient_test(args)
    from oar_verl.study.pages import write_report
    from oar_verl.study.runner import run_study

    plan = PLANS["smoke" if args.smoke else args.plan]
    results_file = args.out / "results" / f"{plan.name}.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        workdir = args.workdir or Path("outputs/study") / plan.name
        results = run_study(plan, workdir, results_file, log=lambda m: print(m, flush=True), past_gate=args.past_gate)
    path = write_report(results, args.out, command=f"python -m oar_verl.study --plan {plan.name}")
    print(f"wrote {path}")


def gradient_test(args: argparse.Namespace) -> None:
    """The gradient-level test: runs what its results file lacks, then writes its page."""
    from oar_verl.study.gradient_report import write_gradient_report
    from oar_verl.study.gradient_test import run_gradient_test

    results_file = args.out / "results" / f"{GRADIENTS.name}.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        workdir = args.workdir or Path("outputs/study") / GRADIENTS.name
        results = run_gradient_test(GRADIENTS, workdir, results_file, log=lambda m: print(m, flush=True))
    print(f"wrote {write_gradient_report(results, args.out)}")


if __name__ == "__main__":
    main()
