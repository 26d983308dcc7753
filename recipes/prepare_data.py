"""Writes the recipes' datasets in verl's parquet layout (`recipes.math_sets`).

    python recipes/prepare_data.py                                   # all, from the hub, to ~/data
    python recipes/prepare_data.py --sets gsm8k_train gsm8k_test --out ~/data
    python recipes/prepare_data.py --sets math500 --local math500=/mnt/datasets/MATH-500

Files: ~/data/gsm8k/{train,test}.parquet, ~/data/math/train.parquet,
~/data/math500/test.parquet, ~/data/aime2024/test.parquet, ~/data/amc2023/test.parquet.
"""

from __future__ import annotations

import argparse
import sys

from math_sets import SOURCES, DatasetError, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python recipes/prepare_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SOURCES), choices=list(SOURCES), help="datasets to write (default: all)")
    parser.add_argument("--out", default="~/data", help="output directory (default: %(default)s)")
    parser.add_argument("--local", nargs="*", default=[], metavar="SET=PATH",
                        help="read SET from a local copy (directory or file) instead of the hub (default: all from the hub)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each set (default: every row)")
    args = parser.parse_args(argv)
    local = {}
    for item in args.local:
        name, sep, path = item.partition("=")
        if not sep or name not in SOURCES:
            parser.error(f"--local {item!r}: expected SET=PATH with SET one of {sorted(SOURCES)}")
        local[name] = path
    for name in args.sets:
        try:
            path = prepare(name, args.out, local.get(name), limit=args.limit)
        except DatasetError as error:
            print(f"prepare_data: error: {error}", file=sys.stderr)
            return 1
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
