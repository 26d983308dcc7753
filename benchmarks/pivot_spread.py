"""The spread of the planted-pivot statistics that `tests/core/test_faithfulness.py` asserts:
over training seeds (how much a retrained model moves them) and, on the shipped fixture
model, over OAR-G noise seeds.

    python benchmarks/pivot_spread.py [--training-seeds 20] [--noise-seeds 30] [--json out.json]

Per trained model (`oar_verl.demo.train_pivot_model(steps=400, seed=s)`, the 20 test
responses of the test): the fraction of responses whose answer token the model predicts
(copy accuracy), OAR-P's count of responses with the pivot ranked first per target, and
OAR-G's mean pivot rank per target against chance (the mean rank of a random order). On
the fixture (`tests/fixtures/models/pivot`): OAR-G's mean pivot rank per target over
noise seeds 0..n-1. Prints a table of each statistic's min / median / max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oar_verl.demo import train_pivot_model  # noqa: E402
from tests.fixtures.models import PIVOT_MODEL, chance_mean_rank, copied_answers, pivot_ranks, pivot_test_batch  # noqa: E402


def model_statistics(model, tokenizer, noise_seed: int = 0, with_oar_p: bool = True) -> dict:
    """The test's statistics on one model (see the module docstring)."""
    from oar_verl.core import TARGET_MODES, GradientConfig, PerturbationConfig
    from oar_verl.core.attribution import attribute, gradient

    batch, segments, pivots = pivot_test_batch(tokenizer)
    stats = {"copy_accuracy": float(copied_answers(model, batch, segments).float().mean()), "chance_mean_rank": chance_mean_rank(segments)}
    for target in TARGET_MODES:
        if with_oar_p:
            scores = attribute(model, batch, segments, PerturbationConfig(target=target, perturbation_id=tokenizer.pad_token_id))
            stats[f"oar_p_{target}_first"] = pivot_ranks(scores, segments, pivots).count(1)
        scores = gradient.attribute(model, batch, segments, GradientConfig(target=target, seed=noise_seed))
        stats[f"oar_g_{target}_mean_rank"] = statistics.mean(pivot_ranks(scores, segments, pivots))
    return stats


def summary(records: list[dict]) -> dict[str, tuple[float, float, float]]:
    """statistic -> (min, median, max) over records."""
    return {name: (min(r[name] for r in records), statistics.median(r[name] for r in records), max(r[name] for r in records)) for name in records[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/pivot_spread.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--training-seeds", type=int, default=20, help="models trained, seeds 0..n-1 (default: %(default)s)")
    parser.add_argument("--noise-seeds", type=int, default=30, help="OAR-G noise seeds on the fixture model (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write every record to this file (default: no file)")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)

    fixture = AutoModelForCausalLM.from_pretrained(PIVOT_MODEL, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(PIVOT_MODEL)
    noise = [model_statistics(fixture, tokenizer, noise_seed=s, with_oar_p=False) for s in range(args.noise_seeds)]
    print(f"fixture model, OAR-G over {args.noise_seeds} noise seeds (chance {noise[0]['chance_mean_rank']:.2f}):")
    for name, (low, median, high) in summary(noise).items():
        print(f"  {name:32s} min {low:6.3f}  median {median:6.3f}  max {high:6.3f}")

    trained = []
    for seed in range(args.training_seeds):
        model, tokenizer = train_pivot_model(steps=400, seed=seed)
        trained.append({"training_seed": seed, **model_statistics(model, tokenizer)})
        print(json.dumps(trained[-1]), flush=True)
    print(f"\nover {args.training_seeds} training seeds:")
    for name, (low, median, high) in summary([{k: v for k, v in r.items() if k != "training_seed"} for r in trained]).items():
        print(f"  {name:32s} min {low:6.3f}  median {median:6.3f}  max {high:6.3f}")
    if args.json:
        args.json.write_text(json.dumps({"noise_seeds": noise, "training_seeds": trained}, indent=1))


if __name__ == "__main__":
    main()
