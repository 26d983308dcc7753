"""The `oar-verl` command: a subcommand per job, each also `python -m oar_verl.MODULE`.

    oar-verl explain --model PATH --prompt ... --response ... --out explain.html
    oar-verl demo
    oar-verl quickstart [--estimator grpo] [--trainer-mode separate_async]
    oar-verl dry-run --config-name ppo algorithm.adv_estimator=oar_g ...
    oar-verl study --plan chains

Training itself is verl's: `python -m oar_verl.main_ppo` (verl's entry point with the OAR
checks before Ray starts), or verl's own `python -m verl.trainer.main_ppo`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "explain": ("oar_verl.explain", "token heatmaps of OAR scores and weights of given responses (HTML, PNG)"),
    "demo": ("oar_verl.demo", "train a tiny model in seconds and show where OAR-P and OAR-G put the credit"),
    "quickstart": ("oar_verl.quickstart", "a real training run through verl's trainer on the CPU, from nothing"),
    "dry-run": ("oar_verl.dry_run", "check a training command's settings and data without starting Ray"),
    "study": ("oar_verl.study.__main__", "the controlled studies of OAR against GRPO (hours)"),
}


def parser() -> argparse.ArgumentParser:
    table = "; ".join(f"{name}: {text}" for name, (_, text) in SUBCOMMANDS.items())
    command_line = argparse.ArgumentParser(
        prog="oar-verl", description=__doc__.split("\n\n")[0].strip('"'), epilog="oar-verl COMMAND --help: a subcommand's options."
    )
    command_line.add_argument("command", choices=list(SUBCOMMANDS), metavar="COMMAND", help=f"{table} (required)")
    command_line.add_argument("arguments", nargs=argparse.REMAINDER, metavar="...", help="the subcommand's arguments (default: none)")
    return command_line


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.main(args.arguments) or 0


if __name__ == "__main__":
    sys.exit(main())
