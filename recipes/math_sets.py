"""Math datasets in verl's parquet layout, for the recipes: GSM8K and MATH training sets,
and the evaluation sets MATH-500, GSM8K test, AIME 2024 and AMC 2023.

Each row: `data_source`, chat `prompt` (the problem, then an instruction asking for the
answer format that verl's reward function for that source and OAR's answer segmentation
both read: `####` for GSM8K, `\\boxed{}` for the others), `ability`,
`reward_model.ground_truth`, `extra_info` (split, index, the reference solution when the
dataset has one). Sources load from the Hugging Face hub by default, or from a local
copy: a directory (`datasets.load_dataset` reads its parquet / JSONL / CSV files, split
by file name) or one parquet / JSONL file. pandas and verl are imported on use: the command
line's `--help` (`recipes/prepare_data.py`) reads `SOURCES` alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
BOXED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
_GSM8K_ANSWER = re.compile(r"####\s*(-?[\d,.$]+)\s*$")


class DatasetError(ValueError):
    """A dataset that cannot be prepared, with the dataset and row at fault named."""


def gsm8k_ground_truth(solution) -> str | None:
    """The number after GSM8K's final `####`, commas removed (as verl's gsm8k reward reads it)."""
    if not isinstance(solution, str):
        return None
    match = _GSM8K_ANSWER.search(solution.strip())
    return match.group(1).replace(",", "").replace("$", "").rstrip(".") if match else None


def boxed_ground_truth(solution) -> str | None:
    """The content of the last `\\boxed{}` of a MATH solution (verl's math_reward helpers)."""
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    if not isinstance(solution, str):
        return None
    boxed = last_boxed_only_string(solution)
    return remove_boxed(boxed) if boxed is not None else None


def given_answer(value) -> str | None:
    """A dataset's own answer column, as text; integers as integers (33.0 -> "33", "047" -> "47")."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):  # AIME-style zero-padded integers: "047" -> "47"
        text = str(int(text))
    return text or None


@dataclass(frozen=True)
class MathSource:
    """One dataset split and how its rows become verl rows.

    Attributes:
        hub_path, hub_config, split: where `datasets.load_dataset` finds it on the hub.
        data_source: the rows' `data_source` (what verl's reward routing and validation
            metrics key on).
        question_key: the column with the problem.
        answer_key: the column the ground truth comes from.
        extract: (that column's value) -> the answer verl's reward compares with, or None.
        answer_format: what `extract` expects, for error messages.
        solution_key: the column with a reference solution, kept in `extra_info`.
        instruction: appended to the problem.
        answer_pattern: the OAR answer pattern that finds answers in this format.
    """

    hub_path: str
    hub_config: str | None
    split: str
    data_source: str
    question_key: str
    answer_key: str
    extract: Callable[[object], str | None]
    answer_format: str
    solution_key: str | None
    instruction: str
    answer_pattern: str


GSM8K_FORMAT = "a solution ending in '#### <number>'"
SOURCES: dict[str, MathSource] = {
    "gsm8k_train": MathSource("openai/gsm8k", "main", "train", "openai/gsm8k", "question", "answer", gsm8k_ground_truth, GSM8K_FORMAT, "answer", GSM8K_INSTRUCTION, "gsm8k"),
    "gsm8k_test": MathSource("openai/gsm8k", "main", "test", "openai/gsm8k", "question", "answer", gsm8k_ground_truth, GSM8K_FORMAT, "answer", GSM8K_INSTRUCTION, "gsm8k"),
    "math_train": MathSource("DigitalLearningGmbH/MATH-lighteval", None, "train", "DigitalLearningGmbH/MATH-lighteval", "problem", "solution", boxed_ground_truth, "a solution with a \\boxed{} answer", "solution", BOXED_INSTRUCTION, "boxed"),
    "math500": MathSource("HuggingFaceH4/MATH-500", None, "test", "HuggingFaceH4/MATH-500", "problem", "answer", given_answer, "an answer", "solution", BOXED_INSTRUCTION, "boxed"),
    "aime2024": MathSource("HuggingFaceH4/aime_2024", None, "train", "aime2024", "problem", "answer", given_answer, "an answer", "solution", BOXED_INSTRUCTION, "boxed"),
    "amc2023": MathSource("math-ai/amc23", None, "test", "amc2023", "question", "answer", given_answer, "an answer", None, BOXED_INSTRUCTION, "boxed"),
}  # fmt: skip

# where `recipes/prepare_data.py` writes each source, under the output directory
OUTPUT_FILES = {
    "gsm8k_train": "gsm8k/train.parquet",
    "gsm8k_test": "gsm8k/test.parquet",
    "math_train": "math/train.parquet",
    "math500": "math500/test.parquet",
    "aime2024": "aime2024/test.parquet",
    "amc2023": "amc2023/test.parquet",
}


def load_records(source: MathSource, local_path: str | Path | None = None) -> list[dict]:
    """The raw rows of `source`: from the hub, or from `local_path` (see module doc)."""
    import datasets

    if local_path is None:
        return list(datasets.load_dataset(source.hub_path, source.hub_config, split=source.split))
    path = Path(local_path).expanduser()
    if not path.exists():
        raise DatasetError(f"{source.hub_path} ({source.split}): local copy {path} does not exist")
    if path.is_file():
        builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise DatasetError(f"{path}: expected a parquet, JSONL or CSV file, or a dataset directory")
        return list(datasets.load_dataset(builder, data_files=str(path), split="train"))
    try:
        return list(datasets.load_dataset(str(path), source.hub_config, split=source.split))
    except ValueError as error:  # e.g. no file of that split in the directory
        raise DatasetError(f"{source.hub_path}: split {source.split!r} not found in {path}: {error}") from None


def to_verl_rows(name: str, records: Iterable[dict], split: str) -> list[dict]:
    """verl rows of `records` of source `name`; a row without a problem or ground truth is
    a DatasetError naming the dataset and the row."""
    source = SOURCES[name]
    rows = []
    for index, record in enumerate(records):
        question = record.get(source.question_key)
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(
                f"{name} ({source.hub_path}, {source.split}) row {index}: no problem in column {source.question_key!r} (columns: {sorted(record)})"
            )
        ground_truth = source.extract(record.get(source.answer_key))
        if ground_truth is None:
            raise DatasetError(
                f"{name} ({source.hub_path}, {source.split}) row {index}: no ground-truth answer: expected {source.answer_format} in column {source.answer_key!r}"
            )
        extra_info = {"split": split, "index": index}
        if source.solution_key and isinstance(record.get(source.solution_key), str):
            extra_info["solution"] = record[source.solution_key]
        rows.append({
            "data_source": source.data_source,
            "prompt": [{"role": "user", "content": f"{question.strip()} {source.instruction}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": ground_truth},
            "extra_info": extra_info,
        })  # fmt: skip
    if not rows:
        raise DatasetError(f"{name} ({source.hub_path}, {source.split}): no rows")
    return rows


def prepare(name: str, output_dir: str | Path, local_path: str | Path | None = None, limit: int | None = None) -> Path:
    """Writes source `name` as verl parquet under `output_dir` (`OUTPUT_FILES`); returns the file."""
    import pandas as pd

    source = SOURCES[name]
    records = load_records(source, local_path)
    if limit is not None:
        records = records[:limit]
    rows = to_verl_rows(name, records, "train" if name.endswith("_train") else "test")
    path = Path(output_dir).expanduser() / OUTPUT_FILES[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path
