"""A small chat model for CPU training runs, built and warm-started locally.

    python -m oar_verl.tiny.warmstart OUTPUT_DIR [--steps 300]

A byte-level Qwen2 (`models.py`) trained with teacher forcing on generated arithmetic
solutions (`arithmetic.py`) in the ChatML format verl's agent loop builds, each
answer closed by `<|im_end|>` (the end-of-sequence id of its generation config). A short
warm-start leaves it right on some problems and wrong on others: what GRPO needs to have
groups with different rewards.
"""

from __future__ import annotations

import argparse
import random
import re
from collections.abc import Callable
from pathlib import Path

ANSWER = re.compile(r"####\s*(-?\d+)")


def warm_start(
    output_dir: str | Path,
    *,
    steps: int = 300,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    max_steps: int = 2,
    max_operand: int = 49,
    slip_probability: float = 0.0,
    min_steps: int = 1,
    modulus: int | None = None,
    wrap_slip_probability: float = 0.0,
    target_accuracy: float | None = None,
    evaluate_every: int = 50,
    evaluation_size: int = 128,
    log_every: int = 0,
    filler: int = 0,
    initial_model: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Trains and saves the model and tokenizer to `output_dir` (a Hugging Face model dir).

    The task's shape (`min_steps`, `max_steps`, `max_operand`, `modulus`) and its imperfect
    training traces (`slip_probability`, `wrap_slip_probability`) are those of
    `data.arithmetic.make_problem`.

    With `target_accuracy`, training stops at the first evaluation (every `evaluate_every`
    steps, greedy accuracy on `evaluation_size` problems of its own) at or above it, and a
    run that has not reached it after `steps` steps raises: how long a small model sits on
    a loss plateau before it learns the arithmetic depends on the last bits of the CPU's
    kernels, so a fixed step count can leave another machine's model far from the accuracy
    a plan was designed for.
    """
    import torch

    from oar_verl.tiny.arithmetic import make_problem, prompt_ids
    from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
    from oar_verl.tiny.sft import lm_batch, train_step

    if initial_model is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(initial_model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(initial_model)
    else:
        tokenizer = byte_tokenizer()
        model = tiny_qwen2(len(tokenizer), hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    for step in range(steps):
        problems = [
            make_problem(
                rng,
                max_steps,
                max_operand,
                slip_probability,
                min_steps=min_steps,
                modulus=modulus,
                wrap_slip_probability=wrap_slip_probability,
                filler=filler,
            )
            for _ in range(batch_size)
        ]
        prompts = [prompt_ids(tokenizer, p.question) for p in problems]
        responses = [tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [end_id] for p in problems]
        loss = train_step(model, optimizer, *lm_batch(prompts, responses, tokenizer.pad_token_id))
        if log_every and (step + 1) % log_every == 0:
            log(f"warm-start step {step + 1:4d}  loss {loss:.3f}")
        if target_accuracy is not None and (step + 1) % evaluate_every == 0:
            task = {"max_steps": max_steps, "max_operand": max_operand, "min_steps": min_steps, "modulus": modulus}
            accuracy = greedy_accuracy(
                model, tokenizer, task, evaluation_size, seed=seed + 1000, max_new_tokens=64 + (filler + 1) * max_steps if filler else 64
            )
            model.train()
            if log_every:
                log(f"warm-start step {step + 1:4d}  greedy accuracy {accuracy:.3f}")
            if accuracy >= target_accuracy:
                break
    else:
        if target_accuracy is not None:
            raise ValueError(
                f"warm start: greedy accuracy {accuracy:.3f} after {steps} steps, below the target {target_accuracy}; "
                "raise the steps or change the learning rate or seed"
            )
    model.eval()
    model.generation_config.eos_token_id = [end_id, tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def greedy_accuracy(model, tokenizer, task: dict, size: int, seed: int, max_new_tokens: int = 64, batch_size: int = 64) -> float:
    """Share of `size` generated problems (`make_problem(**task)`, exact traces) whose greedy
    answer (the number after `####`) is right."""
    import torch

    from oar_verl.tiny.arithmetic import make_problem, prompt_ids

    rng = random.Random(seed)
    problems = [
        make_problem(rng, task["max_steps"], task["max_operand"], 0.0, min_steps=task["min_steps"], modulus=task["modulus"]) for _ in range(size)
    ]
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.eval()
    right = 0
    for start in range(0, size, batch_size):
        chunk = problems[start : start + batch_size]
        prompts = [prompt_ids(tokenizer, p.question) for p in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=[end_id], pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        for problem, row in zip(chunk, out[:, width:]):
            found = ANSWER.search(tokenizer.decode(row, skip_special_tokens=True))
            right += found is not None and int(found.group(1)) == problem.answer
    return right / size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oar_verl.tiny.warmstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="where the model and tokenizer are saved, a Hugging Face model directory (required)")
    parser.add_argument("--steps", type=int, default=300, help="warm-start training steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the generated problems (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=2, help="most arithmetic steps per problem (default: %(default)s)")
    parser.add_argument("--max-operand", type=int, default=49, help="largest operand of the problems (default: %(default)s)")
    args = parser.parse_args(argv)
    path = warm_start(args.output_dir, steps=args.steps, seed=args.seed, max_steps=args.max_steps, max_operand=args.max_operand, log_every=50)
    print(path)


if __name__ == "__main__":
    main()
