"""`oar-verl explain` (also `python -m oar_verl.explain`): token heatmaps of OAR scores and weights.

    oar-verl explain --model PATH --prompt "What is 2+3?" --response "2+3=5\\n#### 5" --method oar_p --out explain.html
    oar-verl explain --model PATH --input rollouts.jsonl --method oar_g --out explain.html --png-dir pngs/

`explain` scores each (prompt, response) pair with `oar_verl.core.explain` and writes one
self-contained HTML page (a heatmap per pair) and, with `--png-dir`, one PNG per pair. An
input file is JSONL or parquet with a prompt column (text, or chat messages as in verl's
parquet files) and a response column (text, or the sampled token ids), optionally a reward.
`--set` takes the settings under the names training reads them (`algorithm.oar.*`).

The settings and the input are checked before the model loads. A response that is not
reweighted (no answer found, empty reasoning, constant scores) or longer than the model's
context is explained all the same, with a warning on stderr; the exit status is 1 when no
response was reweighted, 2 on a usage or input error.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import reprlib
import sys
from pathlib import Path
from typing import NamedTuple

from oar_verl.integration.errors import SettingsError, exit_on_settings_error

EXPLAIN_KEYWORDS = {"perturbation_mode": "mode"}  # training's name -> `core.explain`'s keyword, where they differ
TRAINING_NAMES = {keyword: name for name, keyword in EXPLAIN_KEYWORDS.items()}
OPTION_SETTINGS = {"answer_pattern": "--answer-pattern"}  # training settings that explain takes as an option
PROG = "oar-verl explain"


class Pair(NamedTuple):
    """One response to explain; `where` names it in messages (row index, file and line)."""

    where: str
    prompt: object
    response: object
    reward: float | None


def main(argv: list[str] | None = None) -> int:
    paragraphs = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog=PROG, description=paragraphs[2], epilog=paragraphs[3])
    add_explain_options(parser)
    args = parser.parse_args(argv)
    with exit_on_settings_error(PROG):
        return run_explain(args)


def add_explain_options(explain: argparse.ArgumentParser) -> None:
    """The options of `explain`, each with its help and default."""
    explain.add_argument("--model", required=True, help="a Hugging Face causal LM: local directory or hub name (required)")
    explain.add_argument("--tokenizer", help="tokenizer path (default: --model)")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt (text, tokenized as is); needs --response (this or --input is required)")
    source.add_argument("--input", type=Path, help="a .jsonl or .parquet file of prompt/response pairs (this or --prompt is required)")
    explain.add_argument("--response", help="the response to --prompt (text) (required with --prompt)")
    explain.add_argument("--prompt-key", default="prompt", help="prompt column of --input (text or chat messages) (default: %(default)s)")
    explain.add_argument("--response-key", default="response", help="response column of --input (text or token ids) (default: %(default)s)")
    explain.add_argument("--reward-key", default="reward", help="reward column of --input, shown when present (default: %(default)s)")
    explain.add_argument("--max-rows", type=int, default=None, help="explain only the first N rows of --input (default: all rows)")
    explain.add_argument("--method", default="oar_g", choices=["oar_g", "oar_p"],
                         help="attribution method: oar_g (input gradient) or oar_p (perturbation) (default: %(default)s)")  # fmt: skip
    explain.add_argument("--answer-pattern", default="auto",
                         help="boxed, gsm8k, answer_colon, auto or a regex with a group 'answer' (default: %(default)s)")  # fmt: skip
    explain.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                         help="a setting as training names it (algorithm.oar.KEY), e.g. target=answer_logprob, quantile=0.3, "
                              "perturbation_mode=taylor; repeatable (default: training's defaults)")  # fmt: skip
    explain.add_argument("--device", default="cpu", help="torch device the model runs on, e.g. cpu, cuda, cuda:1 (default: %(default)s)")
    explain.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                         help="dtype the model is loaded in (default: %(default)s)")  # fmt: skip
    explain.add_argument("--out", type=Path, required=True, help="the HTML page to write (required)")
    explain.add_argument("--png-dir", type=Path, help="also write one PNG per response here (default: no PNGs)")


def run_explain(args: argparse.Namespace) -> int:
    """Checks the settings and reads the pairs, then loads the model and writes the page
    (and PNGs); returns 0, or 1 when no response was reweighted."""
    from oar_verl.core.answers import answer_finder
    from oar_verl.viz import render_html, render_png

    settings = parse_settings(args.settings, args.method)
    try:
        answer_finder(args.answer_pattern)
    except ValueError as error:
        raise SettingsError(f"--answer-pattern: {str(error).removeprefix('answer_pattern: ')}") from None
    pairs = read_pairs(args)
    model, tokenizer = load_model(args.model, args.tokenizer or args.model, args.device, args.dtype)
    heatmaps = explain_pairs(args, pairs, model, tokenizer, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_html(heatmaps, title=f"OAR token credit: {args.model}"), encoding="utf-8")
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        for index, heatmap in enumerate(heatmaps):
            render_png(heatmap, args.png_dir / f"response_{index}.png")
    print(f"wrote {args.out} ({len(heatmaps)} responses)" + (f" and {len(heatmaps)} PNGs in {args.png_dir}" if args.png_dir else ""))
    if all(heatmap.fallback for heatmap in heatmaps):
        warn("no response was reweighted: every weight on the page is 1 (plain GRPO); see the warnings above")
        return 1
    return 0


def explain_pairs(args: argparse.Namespace, pairs: list[Pair], model, tokenizer, settings: dict) -> list:
    """A heatmap per pair; warns (stderr) about each pair OAR could not reweight or that
    exceeds the model's context."""
    from tqdm import tqdm

    from oar_verl.core import explain
    from oar_verl.viz import TokenHeatmap

    vocabulary = model.get_input_embeddings().num_embeddings
    context = getattr(model.config, "max_position_embeddings", None)
    pattern, heatmaps = args.answer_pattern, []
    for index, pair in enumerate(tqdm(pairs, desc="explain", unit="response", file=sys.stderr, disable=len(pairs) < 2)):
        check_token_ids(pair, vocabulary)
        try:
            result = explain(model, tokenizer, pair.prompt, pair.response, method=args.method, answer_pattern=pattern, **settings)
        except ValueError as error:
            raise SettingsError(f"{pair.where}: {error}") from None
        for message in row_warnings(pair.where, result, tokenizer, pattern, context):
            warn(message)
        heatmaps.append(TokenHeatmap.from_explanation(result, tokenizer, reward=pair.reward, title=f"response {index} · {args.method}"))
    return heatmaps


def warn(message: str) -> None:
    """`message` on stderr as a warning (clear of a progress bar)."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- settings


def parse_settings(items: list[str], method: str) -> dict:
    """`KEY=VALUE` strings to `core.explain`'s keyword arguments for `method`: keys as
    training names them (`algorithm.oar.*`; `mode` is also taken for `perturbation_mode`),
    values parsed as the setting's type and checked as training checks them; null keeps
    the default, as in training."""
    known = method_settings(method)
    aliases = {keyword: name for keyword, name in TRAINING_NAMES.items() if name in known}
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"--set {item!r}: expected KEY=VALUE")
        name = aliases.get(key, key)
        if name not in known:
            raise SettingsError(unknown_setting(key, method, sorted([*known, *aliases])))
        values[name] = parse_value(key, text, name)
    check_values(values, method)
    return {EXPLAIN_KEYWORDS.get(name, name): value for name, value in values.items() if value is not None}


def method_settings(method: str) -> set[str]:
    """Training's names of the settings `method` reads: its config's fields and the
    Bi-Level settings."""
    import inspect

    from oar_verl.core.attribution import config_class
    from oar_verl.core.reshape import bilevel_weights
    from oar_verl.integration.config import OARSettings

    fields = [TRAINING_NAMES.get(f.name, f.name) for f in dataclasses.fields(config_class(method))]
    bilevel = [p.name for p in inspect.signature(bilevel_weights).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    known = {f.name for f in dataclasses.fields(OARSettings)}
    return {name for name in fields + bilevel if name in known}


def unknown_setting(key: str, method: str, valid: list[str]) -> str:
    """Why `--set key=...` is refused: another method's or a training-only setting, or a
    misspelling (with the closest valid names)."""
    from oar_verl.integration.config import OARSettings

    other = "oar_p" if method == "oar_g" else "oar_g"
    if TRAINING_NAMES.get(key, key) in method_settings(other):
        return f"--set {key}: a setting of --method {other}, not read by --method {method}"
    if key in OPTION_SETTINGS:
        return f"--set {key}: use the option {OPTION_SETTINGS[key]}"
    if key in {f.name for f in dataclasses.fields(OARSettings)}:
        return f"--set {key}: a training setting that explain does not use"
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"--set {key}: unknown setting for --method {method}; {hint}valid: {', '.join(valid)}"


def parse_value(key: str, text: str, name: str) -> object:
    """`text` parsed as hydra parses training's override `algorithm.oar.NAME=TEXT`, of the
    type training's setting `name` takes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from oar_verl.integration.config import OARSettings

    try:
        value = OverridesParser.create().parse_override(f"{name}={text.strip()}").value()
    except OverrideParseException:
        value = text.strip()
    expected = OARSettings.expected_type(name)
    if not expected.accepts(value):
        raise SettingsError(f"--set {key}={text.strip()}: expected {expected.description}")
    return value


def check_values(values: dict, method: str) -> None:
    """The ranges and combinations training accepts (`OARSettings`), checked on `values`."""
    from oar_verl.integration.config import PREFIX, OARSettings

    try:
        OARSettings(**values).method_config(method, pad_token_id=0)
    except ValueError as error:
        raise SettingsError(str(error).replace(f"{PREFIX}.", "--set ")) from None


# ----------------------------------------------------------------------------- input


def read_pairs(args: argparse.Namespace) -> list[Pair]:
    """The pairs of --prompt/--response or of --input (its first --max-rows rows)."""
    if args.prompt is not None:
        if args.response is None:
            raise SettingsError("--prompt needs --response")
        return [make_pair("row 0", {"prompt": args.prompt, "response": args.response}, "prompt", "response", "reward")]
    if args.max_rows is not None and args.max_rows < 1:
        raise SettingsError(f"--max-rows {args.max_rows}: expected at least 1")
    pairs = [make_pair(f"{source}: row {index}", row, args.prompt_key, args.response_key, args.reward_key)
             for index, (source, row) in enumerate(read_rows(args.input, args.max_rows))]  # fmt: skip
    if not pairs:
        raise SettingsError(f"{args.input}: no rows")
    return pairs


def read_rows(path: Path, limit: int | None) -> list[tuple[str, object]]:
    """(where it is: `file:line` or the file, row) of the first `limit` rows of a file."""
    if not path.exists():
        raise SettingsError(f"--input {path}: no such file")
    if path.suffix == ".jsonl":
        return read_jsonl(path, limit)
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            rows = pd.read_parquet(path).to_dict(orient="records")
        except (OSError, ValueError) as error:
            raise SettingsError(f"--input {path}: cannot read parquet: {str(error).splitlines()[0]}") from None
        return [(str(path), row) for row in rows[:limit]]
    raise SettingsError(f"--input {path}: expected a .jsonl or .parquet file")


def read_jsonl(path: Path, limit: int | None) -> list[tuple[str, object]]:
    """(`file:line`, row) of the first `limit` non-blank lines, parsed line by line."""
    rows = []
    try:
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if limit is not None and len(rows) >= limit:
                    break
                if line.strip():
                    rows.append((f"{path}:{number}", parse_json_line(path, number, line)))
    except UnicodeDecodeError as error:
        raise SettingsError(f"--input {path}: not UTF-8 text ({error.reason} at byte {error.start} of a line)") from None
    except OSError as error:
        raise SettingsError(f"--input {path}: cannot read: {error.strerror}") from None
    return rows


def parse_json_line(path: Path, number: int, line: str) -> object:
    """Line `number` of `path` parsed, or a SettingsError naming `file:line`."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise SettingsError(f"{path}:{number}: not JSON: {error.msg} (column {error.colno})") from None


def make_pair(where: str, row, prompt_key: str, response_key: str, reward_key: str) -> Pair:
    """The pair of one row, or a SettingsError naming the row and what is wrong with it."""
    if not isinstance(row, dict):
        raise SettingsError(f"{where}: expected an object with {prompt_key!r} and {response_key!r}, got {describe(row)}")
    for key in (prompt_key, response_key):
        if key not in row or row[key] is None:
            raise SettingsError(f"{where}: no {key!r} (columns: {sorted(row)}); set --prompt-key / --response-key")
    prompt, response, reward = (plain(row.get(key)) for key in (prompt_key, response_key, reward_key))
    problem = prompt_problem(prompt, prompt_key) or response_problem(response, response_key) or reward_problem(reward, reward_key)
    if problem:
        raise SettingsError(f"{where}: {problem}")
    return Pair(where, prompt, response, None if reward is None or math.isnan(reward) else float(reward))  # NaN: a missing parquet cell


def plain(value):
    """A parquet cell (numpy array or scalar) as Python values; other values as they are."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


def reward_problem(reward, key: str) -> str | None:
    """What is wrong with a reward (a number, or absent); None if nothing."""
    return None if reward is None or isinstance(reward, numbers.Real) else f"{key!r} must be a number, got {describe(reward)}"


def prompt_problem(prompt, key: str) -> str | None:
    """What is wrong with a prompt (text, chat messages or token ids); None if nothing."""
    if isinstance(prompt, list) and prompt and all(isinstance(message, dict) for message in prompt):
        return None if all("role" in message for message in prompt) else f"{key!r}: chat messages need a 'role' each"
    if prompt == "" or prompt == []:
        return f"{key!r} is empty (the first response token needs a position that predicts it)"
    if isinstance(prompt, str):
        return None
    return token_ids_problem(prompt, key, "text, chat messages or token ids")


def response_problem(response, key: str) -> str | None:
    """What is wrong with a response (text or token ids); None if nothing."""
    if response == "" or response == []:
        return f"{key!r} is empty"
    return None if isinstance(response, str) else token_ids_problem(response, key, "text or token ids")


def token_ids_problem(value, key: str, expected: str) -> str | None:
    """What keeps `value` from being a list of token ids; None if nothing."""
    if not isinstance(value, list):
        return f"{key!r} must be {expected}, got {describe(value)}"
    for position, token in enumerate(value):
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            return f"{key!r}: token ids must be integers >= 0, got {describe(token)} at position {position}"
    return None


def describe(value) -> str:
    """A value's type and a short repr, for messages."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def check_token_ids(pair: Pair, vocabulary: int) -> None:
    """A SettingsError when the pair's token ids do not fit the model's vocabulary."""
    for key, value in (("prompt", pair.prompt), ("response", pair.response)):
        if isinstance(value, list) and value and isinstance(value[0], int) and max(value) >= vocabulary:
            raise SettingsError(f"{pair.where}: {key} token id {max(value)} is outside the model's vocabulary of {vocabulary}")


# ----------------------------------------------------------------------------- warnings


def row_warnings(where: str, result, tokenizer, answer_pattern: str, context: int | None) -> list[str]:
    """Warnings about one `core.explain` result: no answer found, weights fallen back to 1,
    longer than the model's context."""
    from oar_verl.viz import fallback_reason

    warnings = []
    if not result.answer_found:
        warnings.append(no_answer_warning(where, result.response_ids, tokenizer, answer_pattern))
    elif result.degenerate:
        warnings.append(f"{where}: not reweighted, all weights 1 (plain GRPO): {fallback_reason(result)}")
    prompt, response = len(result.prompt_ids), len(result.response_ids)
    if context is not None and prompt + response > context:
        reasoning = result.segments.count("reasoning")
        warnings.append(f"{where}: prompt + response are {prompt} + {response} = {prompt + response} tokens (reasoning {reasoning}), "
                        f"longer than the model's context (max_position_embeddings {context}); its scores are unreliable")  # fmt: skip
    return warnings


def no_answer_warning(where: str, response_ids: list[int], tokenizer, answer_pattern: str) -> str:
    """The warning for a response without an answer, naming the built-in patterns that find one."""
    from oar_verl.core.answers import patterns_finding_answers
    from oar_verl.core.offsets import token_offsets

    text = token_offsets(tokenizer, response_ids).text  # the text segmentation searches
    others = [name for name in patterns_finding_answers([text]) if name != answer_pattern]
    hint = f"; --answer-pattern {' or '.join(others)} would find one" if others else ""
    return f"{where}: --answer-pattern {answer_pattern!r} finds no answer in the response, so all its weights are 1 (plain GRPO){hint}"


def load_model(model_path: str, tokenizer_path: str, device: str, dtype: str):
    """(model in eval mode, tokenizer); a path that is not a causal LM is a SettingsError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise SettingsError(f"--model {model_path}: cannot read a model config: {str(error).splitlines()[0]}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    except ValueError as error:
        reason = str(error).splitlines()[0]
        raise SettingsError(f"--model {model_path}: not a causal LM (model_type {config.model_type!r}): {reason}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as error:
        raise SettingsError(f"--tokenizer {tokenizer_path}: cannot load a tokenizer: {str(error).splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer


if __name__ == "__main__":
    sys.exit(main())
