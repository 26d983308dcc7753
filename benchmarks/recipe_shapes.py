"""Tokens an attribution pass computes at the recipes' length distributions: chunks padded
to the batch's full width (before the length-aware chunk driver) and chunks cut to their
own widths (`core/attribution/chunks.py::plan_chunks`), against the real tokens verl's
own log-prob pass computes with `use_remove_padding=True` (packed, no padding).

    python benchmarks/recipe_shapes.py [--seed 0]

Per rank, one step: the 7B MATH recipe's 512 prompts x 8 samples over 8 ranks (512
responses) and the 0.5B GSM8K recipe's 1024 x 5 over 4 ranks (1280 responses). Lengths:
prompts uniform in [100, 400] tokens; responses log-normal (sigma 0.8) scaled to the
stated mean and clipped to the recipe's `max_response_length` (a clipped row is a
truncated response): GSM8K-like mean 250 (max 1024), MATH-like mean 850 (max 3072). The
counts are tokens through the model (the linear layers' cost is proportional to them;
attention adds a term in the squared widths, larger still for padded rows). A count, not
a timing: the same on every machine.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # name: (responses per rank, mean response, max response)
    "GSM8K-like (0.5B recipe)": (1280, 250, 1024),
    "MATH-like (7B recipe)": (512, 850, 3072),
}
BUDGET = 16384  # algorithm.oar.max_tokens_per_pass, the default


def sample_lengths(rows: int, mean: float, maximum: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """([rows] prompt lengths, [rows] response lengths) as the module docstring states."""
    import torch

    prompts = torch.randint(100, 401, (rows,), generator=generator)
    sigma = 0.8
    mu = math.log(mean) - sigma**2 / 2  # the log-normal's mean before clipping
    responses = torch.exp(mu + sigma * torch.randn(rows, generator=generator)).round().clamp(1, maximum).long()
    return prompts, responses


def padded_tokens(prompts: torch.Tensor, responses: torch.Tensor) -> int:
    """Every row at the batch's full width P + R (the driver before)."""
    width = int(prompts.max() + responses.max())
    return len(prompts) * width


def length_aware_tokens(prompts: torch.Tensor, responses: torch.Tensor, budget: int) -> tuple[int, int]:
    """(tokens, chunks) of the length-aware plan."""
    import torch

    from oar_verl.core.attribution.chunks import plan_chunks

    planned = plan_chunks(prompts, responses, torch.arange(len(prompts)), budget)
    return sum(len(rows) * int(prompts[rows].max() + responses[rows].max()) for rows in planned), len(planned)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/recipe_shapes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the length draw (default: %(default)s)")
    args = parser.parse_args(argv)
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    print("| shape | responses / rank | mean response (drawn) | verl packed (real tokens) | padded chunks | length-aware chunks (count) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (rows, mean, maximum) in SHAPES.items():
        prompts, responses = sample_lengths(rows, mean, maximum, generator)
        real = int((prompts + responses).sum())
        padded = padded_tokens(prompts, responses)
        aware, chunks = length_aware_tokens(prompts, responses, BUDGET)
        print(
            f"| {name} | {rows} | {float(responses.float().mean()):.0f} | {real:,} | {padded:,} ({padded / real:.2f}x) | {aware:,} ({aware / real:.3f}x, {chunks}) |"
        )


if __name__ == "__main__":
    main()
