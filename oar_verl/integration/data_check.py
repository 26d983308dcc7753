"""Training data checked before Ray starts: the files exist, their rows carry a ground
truth, and OAR's `answer_pattern` finds the answers in the format the rows ask for.

The format is read from a sample of rows (the first `SAMPLE_ROWS` of each file): a row's
reference solution when it has one (`extra_info.solution` / `extra_info.answer`), else a
stand-in "<instruction's marker> <ground truth>" for the format its prompt asks for
(`####`, `\\boxed{}` or `Answer:`). Remote paths (hdfs://, s3://, ...) are not read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from oar_verl.core.answers import answer_finder, patterns_finding_answers

SAMPLE_ROWS = 64
FORMAT_MARKERS = {"gsm8k": ("####", "#### {}"), "boxed": ("\\boxed", "\\boxed{{{}}}"), "answer_colon": ("Answer:", "Answer: {}")}


def data_files(config, key: str) -> list[str]:
    """`data.<key>` as a list of paths."""
    value = config.data.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def data_errors(config, answer_pattern: str | None) -> list[str]:
    """Problems with `data.train_files` / `data.val_files` (missing files, rows without a
    ground truth) and, when `answer_pattern` is given, with the answers it must find."""
    errors = []
    for key in ("train_files", "val_files"):
        for index, path in enumerate(data_files(config, key)):
            if "://" in path:
                continue
            name = f"data.{key}[{index}] ({path})"
            if not os.path.exists(os.path.expanduser(path)):
                errors.append(f"{name}: no such file (recipes/prepare_data.py writes the recipes' data)")
                continue
            try:
                rows = sample_rows(os.path.expanduser(path))
            except (OSError, ValueError) as error:  # not parquet, not JSON lines, unreadable
                errors.append(f"{name}: cannot read rows from it ({type(error).__name__}: {str(error).splitlines()[0]}); verl reads parquet files")
                continue
            errors += ground_truth_errors(name, rows)
            if answer_pattern is not None and key == "train_files":
                errors += answer_format_errors(name, rows, answer_pattern)
    return errors


def sample_rows(path: str, count: int = SAMPLE_ROWS) -> list[dict]:
    """The first `count` rows of a parquet file (or of a JSON-lines file) as dicts."""
    if path.endswith((".jsonl", ".json")):
        import json

        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for _, line in zip(range(count), file) if line.strip()]
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(path).iter_batches(batch_size=count)
    batch = next(batches, None)
    return batch.to_pylist() if batch is not None else []


def ground_truth_errors(name: str, rows: Sequence[dict]) -> list[str]:
    if not rows:
        return [f"{name}: no rows"]
    for index, row in enumerate(rows):
        truth = (row.get("reward_model") or {}).get("ground_truth")
        if truth is None or (isinstance(truth, str) and not truth.strip()):
            return [f"{name} row {index}: no reward_model.ground_truth (verl's rule rewards compare the answer with it)"]
    return []


def answer_format_errors(name: str, rows: Sequence[dict], answer_pattern: str) -> list[str]:
    """An error when `answer_pattern` finds no answer in most sampled rows' answer texts,
    naming the built-in pattern that would."""
    texts = [text for text in (expected_answer_text(row) for row in rows) if text is not None]
    if not texts:
        return [f"{name}: the prompts ask for no answer format OAR can find (no '####', '\\boxed{{}}' or 'Answer:' in the sampled prompts "
                "and no reference solutions); add an instruction for one to the prompts or set algorithm.oar.answer_pattern to a regex "
                "with a group 'answer' and check it on a sample"]  # fmt: skip
    find = answer_finder(answer_pattern)
    missed = sum(find(text) is None for text in texts)
    if missed * 2 <= len(texts):
        return []
    suggestions = patterns_finding_answers(texts, share=0.5)
    hint = (
        f"set algorithm.oar.answer_pattern={suggestions[0]}"
        if suggestions
        else "set algorithm.oar.answer_pattern to a regex with a group 'answer' that matches them"
    )
    return [f"{name}: algorithm.oar.answer_pattern={answer_pattern!r} finds no answer in {missed} of {len(texts)} sampled rows; {hint}"]


def expected_answer_text(row: dict) -> str | None:
    """A row's reference solution, or a stand-in answer in the format its prompt asks for."""
    extra = row.get("extra_info") or {}
    for key in ("solution", "answer"):
        if isinstance(extra.get(key), str) and extra[key].strip():
            return extra[key]
    prompt = row.get("prompt")
    text = prompt if isinstance(prompt, str) else " ".join(str(m.get("content", "")) for m in (prompt or []) if isinstance(m, dict))
    truth = (row.get("reward_model") or {}).get("ground_truth")
    for marker, template in FORMAT_MARKERS.values():
        if marker in text:
            return "... " + template.format(truth)
    return None
