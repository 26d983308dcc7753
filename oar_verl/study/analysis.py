"""Where responses go wrong over training, and where the negative advantage lands: per run,
from verl's generation dumps (`trainer.validation_data_dir`, `trainer.rollout_data_dir`:
one `STEP.jsonl` a step, with the decoded `input` and `output`) and the OAR step's records
(`algorithm.oar.dump_dir`: `step_N.pt`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from oar_verl.study.oracle import find_question, first_error, first_error_token, parse_question


def first_error_line(prompt: str, response: str) -> str | None:
    """Where a response first goes wrong: "step K" (1-based) with " (wraps)" when that
    step's true result wraps around the question's modulus, "answer", "format" or
    "missing/extra step"; None when it is right."""
    question = find_question(prompt)
    if question is None:
        raise ValueError(f"prompt {prompt[:80]!r}: no generated arithmetic question")
    error = first_error(question, response)
    if error is None:
        return None
    if error.kind == "answer":
        return "answer"
    if error.kind in ("missing_step", "extra_step", "format"):
        return error.kind.replace("_", " ")
    line = response[: error.char].count("\n")
    parsed = parse_question(question)
    value = parsed.first
    for operator, operand in parsed.steps[:line]:
        value = parsed.apply(value, operator, operand)
    operator, operand = parsed.steps[line]
    raw = value + operand if operator == "+" else value - operand
    wraps = parsed.modulus is not None and not 0 <= raw < parsed.modulus
    return f"step {line + 1}" + (" (wraps)" if wraps else "")


def error_lines_by_step(generations: Path) -> dict[str, dict[str, int]]:
    """{step: {first error line: responses}} of the held-out responses dumped at each
    evaluation (`correct` counts the right ones)."""
    table: dict[str, dict[str, int]] = {}
    for path in sorted(generations.glob("*.jsonl"), key=lambda p: int(p.stem)):
        counts: dict[str, int] = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            where = first_error_line(record["input"], record["output"]) or "correct"
            counts[where] = counts.get(where, 0) + 1
        table[path.stem] = counts
    return table


def error_token_shares(dumps: Path, tokenizer) -> dict[str, float]:
    """{step: mean over rows} of the share of a row's negative advantage on its first-error
    token, |A[error]| / sum_t |A[t]|, over the rows with a negative advantage whose first
    error (by the study's oracle) lies in their reasoning, among the rows the OAR step
    attributes (answer found, reasoning not empty): from the OAR step's records."""
    shares = {}
    for path in sorted(dumps.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        record = torch.load(path)
        values = []
        for row in ((record["row_advantage"] < 0) & (record["segments"][:, 3] > 0)).nonzero().flatten().tolist():  # attributed rows
            prompt = tokenizer.decode(record["prompts"][row, : int(record["prompt_lengths"][row])].tolist(), skip_special_tokens=True)
            length = int(record["response_mask"][row].sum())
            token = error_token(tokenizer, prompt, record["responses"][row, :length].tolist(), int(record["segments"][row, 0]))
            if token is not None:
                advantage = record["advantages"][row, :length].abs()
                values.append(float(advantage[token] / advantage.sum()))
        if values:
            shares[path.stem.split("_")[1]] = statistics.fmean(values)
    return shares


def uniform_error_token_shares(generations: Path, tokenizer, end_token: str = "<|im_end|>") -> dict[str, float]:
    """The same share under GRPO's uniform advantage, 1 / the response's tokens, over the
    sampled responses with reward 0 (a negative advantage unless the whole group failed)
    whose first error lies in their reasoning: from verl's rollout dumps (the text
    re-tokenized, the end-of-sequence token `end_token` appended), {step: mean}."""
    from oar_verl.core import segment_responses

    end_id = tokenizer.convert_tokens_to_ids(end_token)
    shares = {}
    for path in sorted(generations.glob("*.jsonl"), key=lambda p: int(p.stem)):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        records = [record for record in records if record["score"] <= 0]
        if not records:
            continue
        rows = [tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [end_id] for record in records]
        width = max(len(row) for row in rows)
        responses = torch.tensor([row + [end_id] * (width - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        segments = segment_responses(tokenizer, responses, mask, "gsm8k")
        values = [
            1.0 / len(row)
            for index, (record, row) in enumerate(zip(records, rows))
            if bool(segments.usable[index]) and error_token(tokenizer, record["input"], row, int(segments.reasoning_end[index])) is not None
        ]
        if values:
            shares[path.stem] = statistics.fmean(values)
    return shares


def error_token(tokenizer, prompt: str, response_ids: list[int], reasoning_end: int) -> int | None:
    """The response's first-error token if it lies in its reasoning (< reasoning_end), else None."""
    from oar_verl.core.offsets import batch_token_offsets

    question = find_question(prompt)
    token = first_error_token(batch_token_offsets(tokenizer, [response_ids])[0], question) if question else None
    return token if token is not None and token < reasoning_end else None
