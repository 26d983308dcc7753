"""Score fidelity in bf16: how well each method's token ranking in bf16 agrees with its own
ranking in float32, per response, on the CPU study's warm-started arithmetic model (whose
scores are graded, unlike the planted-pivot model's).

    python benchmarks/bf16_fidelity.py        # a few minutes on 2 CPU cores

bf16 here is the model's parameters and compute in bf16, as FSDP2 mixed precision with
`param_dtype=bf16` runs the actor on GPUs; the objective and the KL stay in float32 (the
methods upcast the logits). Same responses, same noise seed; OAR-P exact with the pad id.
Printed, per method and target, mean and minimum per-response Spearman of:
- bf16 vs float32 (same method, same noise seed);
- OAR-G only: float32 with another noise seed vs float32 (how much the ranking moves with
  the noise draw alone: the yardstick for the precision's effect);
- each precision against the definition, exact OAR-P in float32 (same target).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python benchmarks/bf16_fidelity.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    import torch
    from attribution import arithmetic_model_and_batch, spearman

    from oar_verl.core import GradientConfig, PerturbationConfig, segment_responses
    from oar_verl.core.attribution import attribute, gradient, perturbation
    from oar_verl.core.targets import TARGET_MODES

    model, tokenizer, batch = arithmetic_model_and_batch()
    segments = segment_responses(tokenizer, batch.responses, batch.response_mask, "gsm8k")
    usable = segments.usable & (segments.reasoning_end >= 3)
    rows = usable.nonzero().flatten().tolist()
    half = copy.deepcopy(model).to(torch.bfloat16)
    print(f"device: CPU, {torch.get_num_threads()} threads; {len(rows)} responses, {int(segments.reasoning_end[usable].min())}-"
          f"{int(segments.reasoning_end[usable].max())} reasoning tokens; hidden {model.config.hidden_size}")  # fmt: skip
    print("mean / min per-response Spearman:")
    print(f"  {'method':<12} {'target':<15} {'bf16 vs fp32':>15} {'fp32, other seed':>17} {'fp32 vs exact':>15} {'bf16 vs exact':>15}")

    def agreement(a: torch.Tensor, b: torch.Tensor) -> str:
        rhos = [spearman(a[i, : int(segments.reasoning_end[i])], b[i, : int(segments.reasoning_end[i])]) for i in rows]
        return f"{sum(rhos) / len(rhos):.3f} / {min(rhos):.3f}"

    for target in TARGET_MODES:
        exact = attribute(model, batch, segments, PerturbationConfig(target=target, perturbation_id=tokenizer.pad_token_id), rows=usable)
        methods = (
            ("OAR-G", gradient.attribute, GradientConfig(target=target, seed=11)),
            ("OAR-P exact", perturbation.attribute, PerturbationConfig(target=target, perturbation_id=tokenizer.pad_token_id)),
        )
        for name, run, config in methods:
            full = run(model, batch, segments, config, rows=usable)
            low = run(half, batch, segments, config, rows=usable)
            reseeded = agreement(run(model, batch, segments, dataclasses.replace(config, seed=12), rows=usable), full) if name == "OAR-G" else "-"
            print(
                f"  {name:<12} {target:<15} {agreement(low, full):>15} {reseeded:>17} {agreement(full, exact):>15} {agreement(low, exact):>15}",
                flush=True,
            )


if __name__ == "__main__":
    main()
