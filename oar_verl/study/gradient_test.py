"""The paired gradient-level test pre-registered in docs/results.md: on each batch of
sampled groups, every arm's policy gradient on the *same* samples, measured against a
reference gradient from an independent pool (`policy_gradient`: the gradients; `masks`:
the oracle mask's token classes; `gradient_report`: the statistics and the page).

    python -m oar_verl.study --plan gradients

Resumable: the results file is written after every batch, and the models, reference
gradients and warmed optimizer states are kept in the work folder.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.core.attribution import GradientConfig, PerturbationConfig, attribute
from oar_verl.core.reshape import permute_within_rows, row_weights
from oar_verl.core.spans import segment_responses
from oar_verl.study.masks import oracle_mask_weights, token_classes
from oar_verl.study.oracle import oracle_scores
from oar_verl.study.plan import CHAINS, GradientPlan
from oar_verl.study.policy_gradient import (
    SampledGroups,
    flat_gradient,
    grpo_advantages,
    leave_one_out_advantages,
    sample_groups,
    token_log_probs,
    token_mean_coefficients,
    train_grpo,
)

ARMS = ("grpo", "oracle_mask", "oracle_beta1", "oracle_beta40", "oar_g", "oar_g_permuted", "oar_p_taylor", "oar_p_taylor_permuted")
CHECKPOINTS = ("warm_start", "grpo40")


def seed_of(*parts) -> int:
    """A stable seed from names and numbers (crc32 of their text)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def load(model_dir: Path):
    """(model in float32, eval mode; tokenizer) saved in `model_dir`."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


# ---------------------------------------------------------------------------- the models


def model_dirs(plan: GradientPlan, workdir: Path, log: Callable[[str], None]) -> dict[tuple[str, str], Path]:
    """(task, checkpoint) -> its model: the shipped one (`runner.STORED_WARM_STARTS`) when
    present, else built into `workdir/models` (the filler warm start, then the GRPO
    checkpoints), to be shipped with the results."""
    from oar_verl.study.runner import STORED_WARM_STARTS

    def located(name: str) -> Path | None:
        for folder in (STORED_WARM_STARTS / name, workdir / "models" / name):
            if (folder / "model.safetensors").exists():
                return folder
        return None

    dirs = {("chains", "warm_start"): STORED_WARM_STARTS / "chains"}
    filler = located("filler")
    if filler is None:
        log("building the filler warm start (fine-tuned from the chains model)")
        filler = build_filler_warm_start(plan, STORED_WARM_STARTS / "chains", workdir / "models" / "filler", log)
    dirs["filler", "warm_start"] = filler
    for task in plan.tasks:
        name = f"{task}_grpo{plan.grpo_steps}"
        built = located(name)
        if built is None:
            log(f"building {name}: {plan.grpo_steps} GRPO steps from the {task} warm start")
            built = build_grpo_checkpoint(plan, task, dirs[task, "warm_start"], workdir / "models" / name, log)
        dirs[task, "grpo40"] = built
    return dirs


def build_filler_warm_start(plan: GradientPlan, chains_dir: Path, output: Path, log: Callable[[str], None]) -> Path:
    """The chains model fine-tuned on filler-format traces (the chains' wrap slips) until
    its greedy accuracy reaches the plan's target."""
    from oar_verl.tiny.warmstart import warm_start

    return warm_start(output, initial_model=chains_dir, steps=plan.filler_max_steps, learning_rate=plan.filler_learning_rate,
                      max_steps=CHAINS.max_steps, max_operand=CHAINS.max_operand, min_steps=CHAINS.min_steps, modulus=CHAINS.modulus,
                      wrap_slip_probability=CHAINS.wrap_slip_probability, filler=plan.tasks["filler"],
                      target_accuracy=plan.filler_target_accuracy, evaluate_every=plan.filler_evaluate_every, log_every=100, log=log)  # fmt: skip


def build_grpo_checkpoint(plan: GradientPlan, task: str, warm_start: Path, output: Path, log: Callable[[str], None]) -> Path:
    """`plan.grpo_steps` GRPO steps from `warm_start` (`policy_gradient.train_grpo`), saved with its tokenizer."""
    model, tokenizer = load(warm_start)
    train_grpo(model, tokenizer, plan.problems(task), steps=plan.grpo_steps, prompts=plan.prompts, samples=plan.samples,
               max_new_tokens=plan.max_new_tokens[task], learning_rate=plan.learning_rate, clip_grad=plan.clip_grad, seed=seed_of(task, "grpo"),
               log=log)  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    for extra in ("chat_template.jinja", "generation_config.json"):
        if (warm_start / extra).exists():
            shutil.copy(warm_start / extra, output / extra)
    return output


# ---------------------------------------------------------------- reference and AdamW state


def reference_gradient(plan: GradientPlan, task: str, checkpoint: str, model, tokenizer) -> torch.Tensor:
    """[P] float64 the leave-one-out policy gradient of the expected reward on an independent
    pool: (1/N) sum_i A_i sum_t grad log pi(y_it), N = prompts x samples."""
    parameters = list(model.parameters())
    rng = random.Random(seed_of(task, checkpoint, "reference"))
    total = torch.zeros(sum(p.numel() for p in parameters), dtype=torch.float64)
    pool = plan.reference_prompts * plan.reference_samples
    for chunk in range(math.ceil(plan.reference_prompts / plan.reference_chunk_prompts)):
        sampled = sample_groups(model, tokenizer, plan.problems(task)(rng, plan.reference_chunk_prompts), plan.reference_samples,
                                plan.max_new_tokens[task], seed=seed_of(task, checkpoint, "reference", chunk))  # fmt: skip
        advantages = leave_one_out_advantages(sampled.rewards, sampled.groups)
        log_probs = token_log_probs(model, sampled.batch)
        coefficients = advantages[:, None] * sampled.batch.response_mask.float() / pool
        total += flat_gradient(log_probs, coefficients, parameters)
    return total


@dataclass
class AdamState:
    """AdamW's moments [P] float64 after `steps` clipped gradients."""

    first: torch.Tensor
    second: torch.Tensor
    steps: int


def clipped(gradient: torch.Tensor, max_norm: float) -> torch.Tensor:
    """`gradient` scaled as `torch.nn.utils.clip_grad_norm_` scales it (by max_norm / (norm + 1e-6), at most 1)."""
    return gradient * min(1.0, max_norm / (float(gradient.norm()) + 1e-6))


def warmed_adam_state(plan: GradientPlan, task: str, checkpoint: str, model, tokenizer) -> AdamState:
    """The moments AdamW would hold after `plan.warm_state_batches` GRPO steps had the
    parameters stayed at the checkpoint's: GRPO gradients of further independent batches."""
    parameters = list(model.parameters())
    rng = random.Random(seed_of(task, checkpoint, "warm_state"))
    state = AdamState(torch.zeros(0), torch.zeros(0), 0)
    for step in range(plan.warm_state_batches):
        sampled = sample_groups(model, tokenizer, plan.problems(task)(rng, plan.prompts), plan.samples, plan.max_new_tokens[task],
                                seed=seed_of(task, checkpoint, "warm_state", step))  # fmt: skip
        log_probs = token_log_probs(model, sampled.batch)
        advantages = grpo_advantages(sampled.rewards, sampled.groups)
        gradient = flat_gradient(log_probs, token_mean_coefficients(advantages, torch.ones_like(log_probs), sampled.batch.response_mask), parameters)
        state = adam_update(plan, state, gradient)
    return state


def adam_update(plan: GradientPlan, state: AdamState, gradient: torch.Tensor) -> AdamState:
    """AdamW's moments after one more gradient ([P], clipped to `plan.clip_grad` first)."""
    beta1, beta2 = plan.adam_betas
    g = clipped(gradient, plan.clip_grad)
    first, second = (state.first, state.second) if state.steps else (torch.zeros_like(g), torch.zeros_like(g))
    return AdamState(beta1 * first + (1 - beta1) * g, beta2 * second + (1 - beta2) * g.square(), state.steps + 1)


def adam_step(plan: GradientPlan, state: AdamState, gradient: torch.Tensor) -> torch.Tensor:
    """[P] the parameter change of one AdamW step (ascent, weight decay left out) taking the
    clipped `gradient` from `state`."""
    beta1, beta2 = plan.adam_betas
    moved = adam_update(plan, state, gradient)
    t = moved.steps
    return plan.learning_rate * (moved.first / (1 - beta1**t)) / ((moved.second / (1 - beta2**t)).sqrt() + plan.adam_eps)


# ------------------------------------------------------------------------- one batch


def arm_weights(plan: GradientPlan, task: str, model, tokenizer, sampled: SampledGroups, advantages: torch.Tensor, seed: int):
    """(arm -> [B, R] token weights, token classes, [B] rows each estimator arm reweighted)."""
    batch = sampled.batch
    R = batch.response_length
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "auto")
    filler = plan.tasks[task] > 0
    classes = token_classes(tokenizer, batch.responses, batch.response_mask, segments, sampled.questions, filler)
    rows = (advantages != 0) & segments.usable  # the trainer's attributed rows
    reasoning = segments.reasoning_mask(R)
    irrelevant = classes.filler if filler else reasoning & ~classes.results
    weights = {"grpo": torch.ones(batch.responses.shape), "oracle_mask": oracle_mask_weights(reasoning, irrelevant, plan.mask_floor)}
    oracle = oracle_scores(tokenizer, batch.responses, batch.response_mask, segments, sampled.questions, filler=filler)
    for beta in (1, 40):
        weights[f"oracle_beta{beta}"] = row_weights(oracle, reasoning, rows, beta=float(beta), min_signal=0.01).weights
    estimators = {
        "oar_g": GradientConfig(seed=seed),
        "oar_p_taylor": PerturbationConfig(mode="taylor", perturbation_id=tokenizer.pad_token_id, seed=seed),
    }
    reweighted = {}
    for arm, config in estimators.items():
        scores = attribute(model, batch, segments, config, rows=rows)
        reshaped = row_weights(scores, reasoning, rows, min_signal=0.01)
        kept = rows & ~reshaped.degenerate & ~reshaped.low_signal
        weights[arm] = reshaped.weights
        generator = torch.Generator().manual_seed(seed)
        weights[f"{arm}_permuted"] = permute_within_rows(reshaped.weights, reasoning & kept[:, None], generator)
        reweighted[arm] = int(kept.sum())
    return weights, classes, reweighted


def measure_batch(plan: GradientPlan, task: str, checkpoint: str, index: int, model, tokenizer, reference: torch.Tensor, state: AdamState) -> dict:
    """Every arm's cosine with the reference, first-order gain of one AdamW step and norm on
    batch `index`'s samples; the error and filler tokens' shares of GRPO's (and beta 40's) gradient."""
    seed = seed_of(task, checkpoint, "batch", index)
    sampled = sample_groups(
        model, tokenizer, plan.problems(task)(random.Random(seed), plan.prompts), plan.samples, plan.max_new_tokens[task], seed=seed
    )
    advantages = grpo_advantages(sampled.rewards, sampled.groups)
    weights, classes, reweighted = arm_weights(plan, task, model, tokenizer, sampled, advantages, seed)
    parameters = list(model.parameters())
    mask = sampled.batch.response_mask
    log_probs = token_log_probs(model, sampled.batch)
    coefficients = {arm: token_mean_coefficients(advantages, weights[arm], mask) for arm in ARMS}
    gradients = {arm: flat_gradient(log_probs, coefficients[arm], parameters) for arm in ARMS}
    wrong_first_error = classes.first_error & (sampled.rewards == 0)[:, None]
    parts = {
        "grpo_error": ("grpo", wrong_first_error),
        "grpo_filler": ("grpo", classes.filler),
        "oracle_beta40_error": ("oracle_beta40", wrong_first_error),
    }
    shares = {}
    for name, (arm, tokens) in parts.items():
        part = flat_gradient(log_probs, coefficients[arm] * tokens, parameters)
        whole = gradients[arm]
        shares[name] = float(part @ whole / (whole @ whole)) if float(whole @ whole) > 0 else float("nan")
    reference_norm = float(reference.norm())
    arms = {}
    for arm, gradient in gradients.items():
        norm = float(gradient.norm())
        arms[arm] = {
            "cosine": float(gradient @ reference) / (norm * reference_norm) if norm > 0 else float("nan"),
            "gain": float(reference @ adam_step(plan, state, gradient)),
            "norm": norm,
        }
    return {"batch": index, "reward": float(sampled.rewards.mean()), "tokens": int(mask.sum()), "zero_advantage_rows": int((advantages == 0).sum()),
            "filler_tokens": int(classes.filler.sum()), "reasoning_tokens": int(classes.reasoning.sum()), "reweighted_rows": reweighted,
            "arms": arms, "shares": shares}  # fmt: skip


# ------------------------------------------------------------------------------ driver


def run_gradient_test(plan: GradientPlan, workdir: Path, results_file: Path, log: Callable[[str], None] = print) -> dict:
    """Runs what the results file lacks, writing it after every batch; returns the results."""
    from oar_verl.study.runner import machine, weights_digest

    workdir.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    settings = asdict(plan)
    if results and results.get("plan") != json.loads(json.dumps(settings)):
        raise ValueError(f"{results_file}: recorded for other settings; move it away to start over")
    results.setdefault("plan", settings)
    results.setdefault("machine", machine())
    results.setdefault("cells", {})
    dirs = model_dirs(plan, workdir, log)
    for (task, checkpoint), model_dir in dirs.items():
        key = f"{task}/{checkpoint}"
        digest = weights_digest(model_dir)
        cell = results["cells"].setdefault(key, {"model": str(model_dir.name), "weights_sha256": digest, "batches": []})
        if cell["weights_sha256"] != digest:
            raise ValueError(f"{key}: the results were measured on another model ({cell['weights_sha256'][:12]}); move {results_file} away")
        if len(cell["batches"]) >= plan.batches:
            continue
        model, tokenizer = load(model_dir)
        reference = cached(workdir / f"reference_{task}_{checkpoint}.pt", reference_gradient, plan, task, checkpoint, model, tokenizer)
        state = cached(workdir / f"adam_{task}_{checkpoint}.pt", warmed_adam_state, plan, task, checkpoint, model, tokenizer)
        for index in range(len(cell["batches"]), plan.batches):
            record = measure_batch(plan, task, checkpoint, index, model, tokenizer, reference, state)
            cell["batches"].append(record)
            results_file.parent.mkdir(parents=True, exist_ok=True)
            results_file.write_text(json.dumps(results, indent=1))
            cosines = " ".join(f"{arm} {record['arms'][arm]['cosine']:+.3f}" for arm in ARMS)
            log(f"{key} batch {index + 1}/{plan.batches}: {cosines}")
    return results


def cached(path: Path, compute: Callable[..., object], *args):
    """`compute(*args)`, saved to `path` the first time and read from it after."""
    if path.exists():
        return torch.load(path, weights_only=False)
    value = compute(*args)
    torch.save(value, path)
    return value
