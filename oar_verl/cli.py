"""The `oar-verl` command line.

    oar-verl explain --model PATH --prompt "What is 2+3?" --response "2+3=5\\n#### 5" --method oar_p --out explain.html
    oar-verl explain --model PATH --input rollouts.jsonl --method oar_g --out explain.html --png-dir pngs/

`explain` scores each (prompt, response) pair with `oar_verl.core.explain` and writes one
self-contained HTML page (a heatmap per pair) and, with `--png-dir`, one PNG per pair. An
input file is JSONL or parquet with a prompt column (text, or chat messages as in verl's
parquet files) and a response column (text, or the sampled token ids), optionally a reward.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oar-verl", description="Outcome-grounded Advantage Reshaping for verl.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="token heatmaps of OAR scores and weights (HTML, PNG)", description=__doc__.split("\n\n")[2])
    explain.add_argument("--model", required=True, help="a Hugging Face causal LM: local directory or hub name")
    explain.add_argument("--tokenizer", help="tokenizer path (default: --model)")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt (text, tokenized as is); needs --response")
    source.add_argument("--input", type=Path, help="a .jsonl or .parquet file of prompt/response pairs")
    explain.add_argument("--response", help="the response to --prompt (text)")
    explain.add_argument("--prompt-key", default="prompt", help="prompt column of --input (text or chat messages)")
    explain.add_argument("--response-key", default="response", help="response column of --input (text or token ids)")
    explain.add_argument("--reward-key", default="reward", help="reward column of --input, shown when present")
    explain.add_argument("--max-rows", type=int, default=None, help="explain only the first N rows of --input")
    explain.add_argument("--method", default="oar_g", choices=["oar_g", "oar_p"])
    explain.add_argument("--answer-pattern", default="auto", help="boxed, gsm8k, answer_colon, auto or a regex with a group 'answer'")
    explain.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                         help="a method or Bi-Level setting, e.g. target=answer_logprob, quantile=0.3 (repeatable)")  # fmt: skip
    explain.add_argument("--device", default="cpu")
    explain.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    explain.add_argument("--out", type=Path, required=True, help="the HTML page to write")
    explain.add_argument("--png-dir", type=Path, help="also write one PNG per response here")
    args = parser.parse_args(argv)
    try:
        return run_explain(args)
    except CommandError as error:
        parser.exit(2, f"oar-verl explain: error: {error}\n")


class CommandError(Exception):
    """A user error, reported as one line and exit status 2."""


def run_explain(args: argparse.Namespace) -> int:
    """Reads the pairs, loads the model, writes the page (and PNGs); returns 0."""
    from tqdm import tqdm

    from oar_verl.core import explain
    from oar_verl.viz import TokenHeatmap, render_html, render_png

    settings = parse_settings(args.settings)
    pairs = read_pairs(args)
    model, tokenizer = load_model(args.model, args.tokenizer or args.model, args.device, args.dtype)
    heatmaps = []
    for index, (prompt, response, reward) in enumerate(tqdm(pairs, desc="explain", unit="response", file=sys.stderr, disable=len(pairs) < 2)):
        try:
            result = explain(model, tokenizer, prompt, response, method=args.method, answer_pattern=args.answer_pattern, **settings)
        except ValueError as error:
            raise CommandError(f"row {index}: {error}") from None
        heatmaps.append(TokenHeatmap.from_explanation(result, tokenizer, reward=reward, title=f"response {index} · {args.method}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_html(heatmaps, title=f"OAR token credit: {args.model}"), encoding="utf-8")
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        for index, heatmap in enumerate(heatmaps):
            render_png(heatmap, args.png_dir / f"response_{index}.png")
    print(f"wrote {args.out} ({len(heatmaps)} responses)" + (f" and {len(heatmaps)} PNGs in {args.png_dir}" if args.png_dir else ""))
    return 0


def parse_settings(items: list[str]) -> dict:
    """`KEY=VALUE` strings to a dict, values parsed as YAML scalars (numbers, booleans)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--set {item!r}: expected KEY=VALUE")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def read_pairs(args: argparse.Namespace) -> list[tuple]:
    """[(prompt, response, reward or None)] from --prompt/--response or --input."""
    if args.prompt is not None:
        if args.response is None:
            raise CommandError("--prompt needs --response")
        return [(args.prompt, args.response, None)]
    rows = _read_rows(args.input)
    if args.max_rows is not None:
        rows = rows[: args.max_rows]
    pairs = []
    for index, row in enumerate(rows):
        for key in (args.prompt_key, args.response_key):
            if key not in row or row[key] is None:
                raise CommandError(f"{args.input} row {index}: no {key!r} (columns: {sorted(row)}); set --prompt-key / --response-key")
        reward = row.get(args.reward_key)
        pairs.append((_plain(row[args.prompt_key]), _plain(row[args.response_key]), None if reward is None else float(reward)))
    if not pairs:
        raise CommandError(f"{args.input}: no rows")
    return pairs


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise CommandError(f"--input {path}: no such file")
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as error:
            raise CommandError(f"--input {path}: line {error.lineno if len(lines) == 1 else '?'} is not JSON: {error.msg}") from None
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    raise CommandError(f"--input {path}: expected a .jsonl or .parquet file")


def _plain(value):
    """Parquet cells (numpy arrays of dicts or ids) as lists, text as is."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, list):
        return [dict(item) if isinstance(item, dict) else int(item) for item in value]
    return value


def load_model(model_path: str, tokenizer_path: str, device: str, dtype: str):
    """(model in eval mode, tokenizer); a path that is not a causal LM is a CommandError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise CommandError(f"--model {model_path}: cannot read a model config: {str(error).splitlines()[0]}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    except ValueError as error:
        raise CommandError(f"--model {model_path}: not a causal LM (model_type {config.model_type!r}): {str(error).splitlines()[0]}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as error:
        raise CommandError(f"--tokenizer {tokenizer_path}: cannot load a tokenizer: {str(error).splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer


if __name__ == "__main__":
    sys.exit(main())
