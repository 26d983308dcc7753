"""The offline demo: train a tiny model on a planted-pivot task, then explain a response.

    python -m oar_verl.demo                 # defaults: 400 steps, seed 0, both methods
    python -m oar_verl.demo --steps 200 --methods oar_p
    python -m oar_verl.demo --html demo.html       # also a token heatmap page

Task: the prompt asks to copy the digit; the response is filler letters with one digit
planted at a random place, then `\\n#### <digit>`. The answer is decided by that one
reasoning token, so a faithful attribution ranks it first. The demo prints the pivot's
rank and each token's score and weight under OAR-P and OAR-G.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from pathlib import Path

PROMPT = "copy the digit:\n"
PROG = "python -m oar_verl.demo"


def pivot_example(rng: random.Random) -> tuple[str, int]:
    """(response text, index of the planted digit's character in it)."""
    filler = [rng.choice(string.ascii_lowercase) for _ in range(rng.randint(6, 10))]
    pivot = rng.randint(0, len(filler))
    digit = rng.choice(string.digits)
    filler.insert(pivot, digit)
    return "".join(filler) + f"\n#### {digit}", pivot


def train_pivot_model(steps: int = 400, seed: int = 0, batch_size: int = 64, log_every: int = 0):
    """A tiny Qwen2 trained with teacher forcing on pivot responses; (model, tokenizer).

    With the byte tokenizer every character is one token, so the digit's character index
    is its token index in the response. In half of the training responses one reasoning
    token is replaced by the pad id (and not predicted): the model learns that a padded
    filler token changes nothing and that a padded digit leaves the answer uniform over
    the digits, so the digit is the one reasoning token whose replacement moves the
    answer: the pivot is planted for OAR-P's perturbation, not only in the data.
    """
    import torch

    from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
    from oar_verl.tiny.sft import lm_batch, train_step

    tokenizer = byte_tokenizer()
    model = tiny_qwen2(len(tokenizer), seed=seed)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    model.train()
    for step in range(steps):
        examples = [pivot_example(rng) for _ in range(batch_size)]
        responses = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for text, _ in examples]
        ids, mask, labels = lm_batch([prompt_ids] * batch_size, responses, tokenizer.pad_token_id)
        for row, (text, _) in enumerate(examples):
            if rng.random() < 0.5:
                dropped = len(prompt_ids) + rng.randrange(text.index("#"))
                ids[row, dropped] = tokenizer.pad_token_id
                labels[row, dropped] = -100
        loss = train_step(model, optimizer, ids, mask, labels)
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:4d}  loss {loss:.3f}", flush=True)
    model.eval()
    return model, tokenizer


def pivot_rank(scores: list[float], reasoning_length: int, pivot: int) -> int:
    """1-based rank of the pivot token's score among the reasoning tokens (ties count against it)."""
    pivot_score = scores[pivot]
    return 1 + sum(1 for k in range(reasoning_length) if k != pivot and scores[k] >= pivot_score)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The demo's options."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps of the tiny model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training and of the explained response (default: %(default)s)")
    parser.add_argument("--methods", nargs="+", default=["oar_p", "oar_g"], choices=["oar_p", "oar_g"],
                        help="attribution methods explained (default: %(default)s)")  # fmt: skip
    parser.add_argument("--html", type=Path, help="also write the explanations as a heatmap page here (default: no page)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from oar_verl.core import explain
    from oar_verl.viz import TokenHeatmap, render_html

    start = time.perf_counter()
    print(f"training a tiny Qwen2 on the planted-pivot task ({args.steps} steps)")
    model, tokenizer = train_pivot_model(args.steps, args.seed, log_every=100)
    print(f"trained in {time.perf_counter() - start:.1f}s")
    response, pivot = pivot_example(random.Random(args.seed + 1))
    print(f"\nprompt: {PROMPT!r}\nresponse: {response!r} (pivot token {pivot})\n")
    heatmaps = []
    for method in args.methods:
        explanation = explain(model, tokenizer, PROMPT, response, method=method, answer_pattern="gsm8k")
        reasoning_length = explanation.segments.count("reasoning")
        rank = pivot_rank(explanation.scores, reasoning_length, pivot)
        print(explanation.format_table())
        print(f"pivot rank under {method}: {rank} of {reasoning_length}\n")
        heatmaps.append(
            TokenHeatmap.from_explanation(
                explanation, tokenizer, title=f"{method}: the planted digit (token {pivot}) ranks {rank} of {reasoning_length}"
            )
        )
    if args.html:
        args.html.write_text(render_html(heatmaps, title="OAR on the planted-pivot task"), encoding="utf-8")
        print(f"wrote {args.html}")


if __name__ == "__main__":
    main()
