"""Runs the study: prepares the model and data once, trains every (method, seed) through
verl's trainer on the CPU backend, and keeps what each run measured in the plan's results
file (written after every run, so an interrupted study resumes where it stopped; with the
plan's `save_freq`, an interrupted run resumes from its last verl checkpoint). A plan with
gate methods runs them first and the others only when the oracle beats GRPO."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.study.analysis import error_lines_by_step, error_token_shares, uniform_error_token_shares
from oar_verl.study.fidelity import rank_agreement
from oar_verl.study.plan import METHODS, SHARED_WARM_STARTS, StudyPlan
from oar_verl.study.statistics import gate_passed
from oar_verl.tiny.launch import HELD_OUT_METRIC, read_metrics, run_training, train_command
from oar_verl.tiny.launch import prepare as prepare_run

TRAIN_SCORE_METRIC = "critic/score/mean"
ENTROPY_METRIC = "actor/entropy"


STORED_WARM_STARTS = Path(__file__).parent / "warm_starts"
"""Plans whose warm-started model is shipped (`warm_starts/PLAN/`): a study resumed on another
machine trains from the same weights (a warm start rebuilt there is another model)."""


def prepare(plan: StudyPlan, workdir: Path) -> dict[str, Path]:
    """The warm-started model (the shipped one where the plan has one) and the train / fixed
    held-out parquet files (reused when present)."""
    stored, model = STORED_WARM_STARTS / SHARED_WARM_STARTS.get(plan.name, plan.name), workdir / "model"
    if stored.is_dir() and not (model / "config.json").exists():
        shutil.copytree(stored, model, dirs_exist_ok=True)
    return prepare_run(workdir, warm_start_steps=plan.warm_start_steps, train_size=plan.train_size, val_size=plan.test_size, seed=plan.warm_start_seed,
                       task=plan.task, slip_probability=plan.slip_probability, wrap_slip_probability=plan.wrap_slip_probability,
                       warm_start_learning_rate=plan.warm_start_learning_rate,
                       warm_start_target_accuracy=plan.warm_start_target_accuracy)  # fmt: skip


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of a saved model's weights (`model.safetensors`)."""
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def run_one(plan: StudyPlan, paths: dict[str, Path], method: str, seed: int, workdir: Path) -> dict:
    """Trains one (method, seed) and returns what it measured. Each run's sampled responses
    (verl's `rollout_data_dir`) and held-out responses (`validation_data_dir`) are kept
    under `workdir/generations/`, OAR runs' per-step records under `workdir/dumps/`."""
    name = f"{method}_seed{seed}"
    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    metrics_file, log_file = runs / f"{name}.jsonl", runs / f"{name}.log"
    checkpoints = workdir / "checkpoints" / name
    earlier = sorted(runs.glob(f"{name}.part*.jsonl"))  # metrics of the attempts a resumed run continues
    if plan.save_freq and (checkpoints / "latest_checkpointed_iteration.txt").exists():
        if metrics_file.exists():  # verl's file logger starts its file afresh
            earlier.append(metrics_file.rename(runs / f"{name}.part{len(earlier)}.jsonl"))
    else:
        for path in [metrics_file, *earlier]:
            path.unlink(missing_ok=True)
        earlier = []
    estimator = METHODS[method][0]
    overrides = plan.verl_overrides(method, seed)
    overrides += [
        f"trainer.rollout_data_dir={workdir / 'generations' / name / 'train'}",
        f"trainer.validation_data_dir={workdir / 'generations' / name / 'val'}",
    ]
    if estimator != "grpo":
        overrides.append(f"algorithm.oar.dump_dir={workdir / 'dumps' / name}")
    command = train_command(paths, checkpoints, estimator=estimator, steps=plan.rl_steps, overrides=overrides)
    start = time.perf_counter()
    with open(log_file, "a") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
    result = run_training(command, metrics_file, log_file, env={"VERL_PLATFORM": "cpu"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"study run {name} failed (exit code {result.returncode}); log: {log_file}")
    metrics: dict[int, dict] = {}
    for path in [*earlier, metrics_file]:  # later lines of a step update earlier ones
        for step, values in read_metrics(path).items():
            metrics.setdefault(step, {}).update(values)
    steps = sorted(step for step in metrics if step >= 1)

    def median(name: str) -> float | None:
        values = [metrics[step][name] for step in steps if name in metrics[step]]
        return float(np.median(values)) if values else None

    def mean(name: str) -> float | None:
        values = [metrics[step][name] for step in steps if name in metrics[step]]
        return sum(values) / len(values) if values else None

    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    generations = workdir / "generations" / name
    return {
        "method": method,
        "seed": seed,
        "accuracy": {str(step): metrics[step][HELD_OUT_METRIC] for step in sorted(metrics) if HELD_OUT_METRIC in metrics[step]},
        "train_score": {str(step): metrics[step][TRAIN_SCORE_METRIC] for step in steps if TRAIN_SCORE_METRIC in metrics[step]},
        "entropy_end": metrics[steps[-1]].get(ENTROPY_METRIC) if steps else None,
        "step_time_s": mean("timing_s/step"),
        "grad_norm_median": median("actor/grad_norm"),
        "attribution_time_s": mean("timing_s/oar_attribution"),
        "attributed_rows": mean("oar/rows/attributed"),
        "degenerate_rows": mean("oar/rows/degenerate"),
        "wall_s": wall,
        "error_lines": error_lines_by_step(generations / "val"),
        "error_token_share": uniform_error_token_shares(generations / "train", tokenizer)
        if estimator == "grpo"
        else error_token_shares(workdir / "dumps" / name, tokenizer),
    }


def fidelity(plan: StudyPlan, model_path: Path) -> dict:
    """OAR-G vs OAR-P rank agreement on the warm-started model's sampled responses."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return rank_agreement(
        model, tokenizer, responses=plan.fidelity_responses, targets=plan.fidelity_targets, task=plan.task, max_new_tokens=plan.max_response_length
    )


def run_study(plan: StudyPlan, workdir: Path, results_file: Path, log=print, past_gate: bool = False) -> dict:
    """Runs what `results_file` does not have yet (same plan) and returns all results.
    After the gate's runs, the others run only if the oracle beats GRPO (`results["gate"]`),
    or with `past_gate`."""
    plan_record = json.loads(json.dumps(dataclasses.asdict(plan)))
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results and results.get("plan") != plan_record:
        raise ValueError(f"{results_file} holds the results of another plan than {plan.name!r} as it is now: move it aside to start afresh")
    results = results or {"plan": plan_record, "machine": machine(), "runs": [], "prepare_s": None, "fidelity": None}
    start = time.perf_counter()
    paths = prepare(plan, workdir)
    digest = weights_digest(paths["model"])
    if results.setdefault("warm_start_sha256", digest) != digest:
        raise ValueError(
            f"{results_file} was measured from the warm start with weights {results['warm_start_sha256'][:12]}, "
            f"{paths['model']} holds {digest[:12]}: resuming would mix runs from two models (restore that model, or move the results aside)"
        )
    if results["prepare_s"] is None:
        results["prepare_s"] = time.perf_counter() - start
    if results["fidelity"] is None:
        log("attribution fidelity: OAR-G vs OAR-P on the warm-started model")
        started = time.perf_counter()
        results["fidelity"] = {**fidelity(plan, paths["model"]), "time_s": time.perf_counter() - started}
        _save(results, results_file)
    done = {(run["method"], run["seed"]) for run in results["runs"]}
    for method, seed in plan.run_order():
        if plan.gate_methods and method not in plan.gate_methods and not _gate(results, results_file, log) and not past_gate:
            break
        if (method, seed) in done:
            continue
        log(f"training {method} seed {seed} ({plan.rl_steps} steps)")
        run = run_one(plan, paths, method, seed, workdir)
        log(f"  held-out accuracy {run['accuracy']}  ({run['wall_s']:.0f} s)")
        results["runs"].append(run)
        _save(results, results_file)
    return results


def _gate(results: dict, results_file: Path, log) -> bool:
    """Records (in `results` and its file) and returns whether the oracle beat GRPO beyond its interval."""
    passed, contrast = gate_passed(results["runs"])
    if results.get("gate") is None:
        results["gate"] = {"passed": passed, "mean": contrast.mean, "low": contrast.low, "high": contrast.high, "seeds": list(contrast.seeds)}
        log(f"gate: oracle - GRPO {100 * contrast.mean:+.1f} points, 95% interval [{100 * contrast.low:+.1f}, {100 * contrast.high:+.1f}]: "
            + ("passed, the other methods run" if passed else "not passed, the other methods do not run"))  # fmt: skip
        _save(results, results_file)
    return passed


def _save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
