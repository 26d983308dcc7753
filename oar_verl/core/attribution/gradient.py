"""OAR-G: gradient x input of a noisy outcome shift (OAR_SPEC section 5).

    E   = input embeddings [B, L, H] (a leaf; no parameter gradient is produced)
    eps ~ N(0, sigma^2) on reasoning positions only
    J   = KL(P0 || P_final(E + eps))    or    phi0 - phi(E + eps)   (answer_logprob)
    s_t = | <dJ/dE_t, E_t> |            (summed over H)

P0 / phi0 come from a clean pass without gradients. J and its backward run in float32
(float64 for a float64 model). Why the noise: at eps = 0 the KL is at its minimum and its
gradient vanishes; with noise it is about H eps, a second-order sensitivity whose size
scales with sigma. `answer_logprob` gives a first-order signal.

The noise is drawn once for the whole batch, `torch.randn(B, L, H, generator=g) * sigma`
with `g` a generator on the batch's device seeded with `seed`, then zeroed outside
reasoning positions, so a row's scores do not depend on how rows are split into passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from oar_verl.core.attribution.base import PassSync, attributed_rows, passes_to_run, rows_per_pass, scatter_scores
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.lm import eval_mode, lm_parts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import answer_positions, check_target, compute_target, target_shift

NAME = "oar_g"


@dataclass(frozen=True)
class GradientConfig:
    target: str = field(default="answer_mean", metadata={"help": "P_final mode: answer_mean (OAR-G reference default), first_answer or answer_logprob."})
    noise_std: float = field(default=1e-3, metadata={"help": "sigma of the Gaussian noise on reasoning embeddings (reference code: 1e-3). 0 is allowed only with answer_logprob, where the KL gradient does not vanish."})
    seed: int = field(default=0, metadata={"help": "Seed of the noise generator."})
    max_tokens_per_pass: int = field(default=16384, metadata={"help": "Token budget of one forward+backward pass (rows x length): bounds peak memory."})

    def __post_init__(self) -> None:
        check_target(self.target)
        if not self.noise_std >= 0 or self.noise_std == float("inf"):
            raise ValueError(f"noise_std: expected a finite value >= 0, got {self.noise_std}")
        if self.noise_std == 0 and self.target != "answer_logprob":
            raise ValueError(f"noise_std: 0 gives all-zero KL gradients with target {self.target!r}; use > 0 or target 'answer_logprob'")
        if self.max_tokens_per_pass < 1:
            raise ValueError(f"max_tokens_per_pass: expected >= 1, got {self.max_tokens_per_pass}")


def attribution_noise(batch: ResponseBatch, hidden_size: int, config: GradientConfig) -> torch.Tensor:
    """[B, L, H] float32 noise, before masking to reasoning positions (see module docstring)."""
    device = batch.input_ids.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    shape = (*batch.input_ids.shape, hidden_size)
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * config.noise_std


def attribute(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: GradientConfig,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """OAR-G scores [B, R] (float32): s_t on reasoning tokens of attributed rows, 0 elsewhere.

    Args:
        model: a Hugging Face causal LM; its parameters' `.grad` are left untouched.
        batch: prompts and responses in verl's layout, [B, L].
        segments: the responses' segments, [B].
        config: target mode, noise, seed, token budget.
        rows: [B] bool, the rows to attribute (e.g. nonzero advantage); default all.
        sync_passes: under FSDP, maps this rank's pass count to the count all ranks run
            (see `base.PassSync`); a pass here is a clean forward plus a forward and
            backward, the extra ones one-token idle passes.
    """
    parts = lm_parts(model)
    B, R = batch.input_ids.shape[0], batch.response_length
    P = batch.prompt_length
    device = batch.input_ids.device
    index = attributed_rows(batch, segments, rows)  # [B']
    if index.numel() == 0:
        with eval_mode(model):
            for _ in range(passes_to_run(0, sync_passes)):
                parts.idle_pass(device, backward=False)
                parts.idle_pass(device, backward=True)
        return torch.zeros((B, R), dtype=torch.float32, device=device)
    sub, sub_segments = batch.select(index), segments.select(index)
    answer = answer_positions(sub, sub_segments)  # [B', A]
    L = int(answer.columns_needed.max())
    per_pass = rows_per_pass(config.max_tokens_per_pass, L, "max_tokens_per_pass")
    hidden_size = parts.embeddings.embedding_dim
    noise = attribution_noise(batch, hidden_size, config)[index, :L]  # [B', L, H]
    reasoning = sub_segments.reasoning_mask(R)  # [B', R]
    on_reasoning = torch.zeros((len(index), L), dtype=torch.bool, device=index.device)
    on_reasoning[:, P:] = reasoning[:, : L - P]  # [B', L]
    noise = noise * on_reasoning[:, :, None]

    chunks = torch.arange(len(index), device=device).split(per_pass)
    idle = passes_to_run(len(chunks), sync_passes) - len(chunks)
    scores = []
    with eval_mode(model):
        for c in chunks:
            ids, mask, pos = sub.input_ids[c, :L], sub.attention_mask[c, :L], sub.position_ids[c, :L]  # [C, L]
            chunk_answer = answer.select(c)
            with parts.materialized(), torch.no_grad():
                clean = compute_target(parts, parts.hidden_states(mask, pos, input_ids=ids), chunk_answer, config.target)
                embeds = parts.embeddings(ids)  # [C, L, H]
            embeds.requires_grad_(True)
            noisy = embeds + noise[c].to(embeds.dtype)
            with parts.materialized(), torch.enable_grad():
                hidden = parts.hidden_states(mask, pos, inputs_embeds=noisy)  # [C, L, H]
                objective = target_shift(clean, compute_target(parts, hidden, chunk_answer, config.target), config.target)
                (grad,) = torch.autograd.grad(objective.sum(), embeds)  # rows are independent
            product = (grad.to(objective.dtype) * embeds.detach().to(objective.dtype)).sum(dim=-1)  # [C, L]
            scores.append(product[:, P:].abs())  # [C, L - P]
        for _ in range(idle):
            parts.idle_pass(device, backward=False)
            parts.idle_pass(device, backward=True)
    scores = torch.cat(scores)  # [B', L - P]
    pair_row, pair_token = reasoning[:, : L - P].nonzero(as_tuple=True)
    return scatter_scores(B, R, index[pair_row], pair_token, scores[pair_row, pair_token])
