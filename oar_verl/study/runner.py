"""Runs the study: prepares the model and data once, trains every (method, seed) through
verl's trainer on the CPU backend, and keeps what each run measured in `results.json`
(written after every run, so an interrupted study resumes where it stopped)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.quickstart import HELD_OUT_METRIC, read_metrics, run_training, train_command
from oar_verl.quickstart import prepare as prepare_run
from oar_verl.study.fidelity import rank_agreement
from oar_verl.study.plan import METHODS, StudyPlan

TRAIN_SCORE_METRIC = "critic/score/mean"
ENTROPY_METRIC = "actor/entropy"


def prepare(plan: StudyPlan, workdir: Path) -> dict[str, Path]:
    """The warm-started model and the train / fixed held-out parquet files (reused when present)."""
    return prepare_run(workdir, warm_start_steps=plan.warm_start_steps, train_size=plan.train_size, val_size=plan.test_size, seed=plan.warm_start_seed,
                       task={"max_steps": plan.max_steps, "max_operand": plan.max_operand}, slip_probability=plan.slip_probability)  # fmt: skip


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def run_one(plan: StudyPlan, paths: dict[str, Path], method: str, seed: int, workdir: Path) -> dict:
    """Trains one (method, seed) and returns what it measured."""
    name = f"{method}_seed{seed}"
    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    metrics_file, log_file = runs / f"{name}.jsonl", runs / f"{name}.log"
    metrics_file.unlink(missing_ok=True)
    estimator = METHODS[method][0]
    overrides = plan.verl_overrides(method, seed)
    if estimator != "grpo":
        overrides.append(f"algorithm.oar.dump_dir={workdir / 'dumps' / name}")
    command = train_command(paths, workdir / "checkpoints" / name, estimator=estimator, steps=plan.rl_steps, overrides=overrides)
    start = time.perf_counter()
    result = run_training(command, metrics_file, log_file, env={"VERL_PLATFORM": "cpu"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"study run {name} failed (exit code {result.returncode}); log: {log_file}")
    metrics = read_metrics(metrics_file)
    steps = sorted(step for step in metrics if step >= 1)

    def mean(name: str) -> float | None:
        values = [metrics[step][name] for step in steps if name in metrics[step]]
        return sum(values) / len(values) if values else None

    return {
        "method": method,
        "seed": seed,
        "accuracy": {str(step): metrics[step][HELD_OUT_METRIC] for step in sorted(metrics) if HELD_OUT_METRIC in metrics[step]},
        "train_score": {str(step): metrics[step][TRAIN_SCORE_METRIC] for step in steps if TRAIN_SCORE_METRIC in metrics[step]},
        "entropy_end": metrics[steps[-1]].get(ENTROPY_METRIC) if steps else None,
        "step_time_s": mean("timing_s/step"),
        "attribution_time_s": mean("timing_s/oar_attribution"),
        "attributed_rows": mean("oar/rows/attributed"),
        "degenerate_rows": mean("oar/rows/degenerate"),
        "wall_s": wall,
    }


def fidelity(plan: StudyPlan, model_path: Path) -> dict:
    """OAR-G vs OAR-P rank agreement on the warm-started model's sampled responses."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return rank_agreement(model, tokenizer, responses=plan.fidelity_responses, targets=plan.fidelity_targets, max_steps=plan.max_steps,
                          max_operand=plan.max_operand, max_new_tokens=plan.max_response_length)  # fmt: skip


def run_study(plan: StudyPlan, workdir: Path, results_file: Path, log=print) -> dict:
    """Runs what `results_file` does not have yet (same plan) and returns all results."""
    plan_record = dataclasses.asdict(plan)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results.get("plan") != json.loads(json.dumps(plan_record)):
        results = {"plan": plan_record, "machine": machine(), "runs": [], "prepare_s": None, "fidelity": None}
    start = time.perf_counter()
    paths = prepare(plan, workdir)
    if results["prepare_s"] is None:
        results["prepare_s"] = time.perf_counter() - start
    if results["fidelity"] is None:
        log("attribution fidelity: OAR-G vs OAR-P on the warm-started model")
        started = time.perf_counter()
        results["fidelity"] = {**fidelity(plan, paths["model"]), "time_s": time.perf_counter() - started}
        _save(results, results_file)
    done = {(run["method"], run["seed"]) for run in results["runs"]}
    for seed in plan.seeds:  # seeds outermost: a cut-short study still compares every method
        for method in plan.methods:
            if (method, seed) in done:
                continue
            log(f"training {method} seed {seed} ({plan.rl_steps} steps)")
            run = run_one(plan, paths, method, seed, workdir)
            log(f"  held-out accuracy {run['accuracy']}  ({run['wall_s']:.0f} s)")
            results["runs"].append(run)
            _save(results, results_file)
    return results


def _save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
