"""OAR-G: gradient x input of a noisy outcome shift (OAR_SPEC section 5).

    E   = input embeddings [B, L, H] (a leaf; no parameter gradient is produced)
    eps ~ N(0, sigma^2) on reasoning positions only
    J   = KL(P0 || P_final(E + eps))    or    phi0 - phi(E + eps)   (answer_logprob)
    s_t = | <dJ/dE_t, E_t> |            (summed over H)

P0 / phi0 come from a clean pass without gradients. J and its backward run in float32
(float64 for a float64 model). Why the noise: at eps = 0 the KL is at its minimum and its
gradient vanishes; with noise it is about H eps, a second-order sensitivity whose size
scales with sigma. `answer_logprob` gives a first-order signal.

The noise of row b (its index in the batch) is drawn per pass, for that row alone:
`torch.randn(n_b, H, generator=g_b) * sigma` on its n_b reasoning tokens, in order, zero
elsewhere, with `g_b` a generator on the batch's device seeded with `base.row_seed(seed, b)`. So a
row's scores do not depend on the rows it shares a pass with, on the padding or on the
token budget, and no pass holds noise for more than its own rows.

Every rank of a data-parallel group runs the same program (`base.synchronized_steps`):
per step a clean forward and a noisy forward and backward (fused `answer_logprob`: one
forward and backward; fused log-prob-only rows: one forward), on its next chunk of rows or
on a one-token dummy once it has none left.
"""

from __future__ import annotations

import torch

from oar_verl.core.attribution.base import PassSync, row_seed
from oar_verl.core.attribution.chunks import Chunk, LogProbFn, ScoresAndLogProbs, StepResult, attribute_by_chunks, scores_with_log_probs
from oar_verl.core.attribution.configs import GradientConfig
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.models import ModelParts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import compute_target, target_shift

NAME = "oar_g"


def row_noise(
    rows: torch.Tensor, reasoning_end: torch.Tensor, length: int, prompt_length: int, hidden_size: int, config: GradientConfig
) -> torch.Tensor:
    """[C, length, H] float32 noise of batch rows `rows` [C] whose reasoning is response
    tokens 0..reasoning_end [C] (sequence positions P + k): see the module docstring."""
    device = rows.device
    noise = torch.zeros((len(rows), length, hidden_size), dtype=torch.float32, device=device)
    for i, (row, end) in enumerate(zip(rows.tolist(), reasoning_end.tolist())):
        generator = torch.Generator(device=device).manual_seed(row_seed(config.seed, row))
        noise[i, prompt_length : prompt_length + end] = torch.randn((end, hidden_size), generator=generator, device=device, dtype=torch.float32)
    return noise * config.noise_std


def chunk_noise(chunk: Chunk, hidden_size: int, config: GradientConfig) -> torch.Tensor:
    """[C, L_c, H] the chunk's rows' noise on their reasoning positions (zero for the dummy)."""
    rows = chunk.rows if chunk.rows is not None else torch.zeros(1, dtype=torch.long, device=chunk.input_ids.device)
    return row_noise(rows, chunk.reasoning_end, chunk.input_ids.shape[1], chunk.prompt_length, hidden_size, config)


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
        sync_passes: under FSDP, maps this rank's step count to the count all ranks run
            (`base.max_over_ranks`); a step is a clean forward plus a noisy forward and
            backward on a chunk of rows.
    """
    return attribute_by_chunks(
        model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk: _step(parts, chunk, config), rows, sync_passes
    )


def _step(parts: ModelParts, chunk: Chunk, config: GradientConfig) -> StepResult:
    """OAR-G's s_t at every position [C, L]: a clean forward, then the noisy gradient x input."""
    with parts.materialized(), torch.no_grad():
        hidden = parts.hidden_states(parts.embed(chunk.input_ids), chunk.attention_mask, chunk.position_ids)  # [C, L, H]
        clean = compute_target(parts, hidden, chunk.answer, config.target)  # [C, V] or [C]
    return StepResult(_noisy_gradient_x_input(parts, chunk, clean, config).abs(), hidden)


def _noisy_gradient_x_input(parts: ModelParts, chunk: Chunk, clean: torch.Tensor, config: GradientConfig) -> torch.Tensor:
    """<dJ/dE_t, E_t> [C, L] with J = target_shift(clean, P_final(E + noise)): one forward
    with autograd and one backward to the embeddings (activation checkpointing honoured)."""
    with parts.materialized():
        with torch.no_grad():
            embeds = parts.embed(chunk.input_ids)  # [C, L, H]
        noise = chunk_noise(chunk, embeds.shape[-1], config).to(embeds.dtype)
        embeds.requires_grad_(True)
        with torch.enable_grad(), parts.activation_checkpointing():
            hidden = parts.hidden_states(embeds + noise, chunk.attention_mask, chunk.position_ids)  # [C, L, H]
            objective = target_shift(parts, clean, compute_target(parts, hidden, chunk.answer, config.target), config.target)  # [C]
            (grad,) = torch.autograd.grad(objective.sum(), embeds)  # rows are independent
    return (grad.to(objective.dtype) * embeds.detach().to(objective.dtype)).sum(dim=-1)


def attribute_with_log_probs(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: GradientConfig,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    log_prob_fn: LogProbFn | None = None,
    sync_passes: PassSync | None = None,
) -> ScoresAndLogProbs:
    """OAR-G fused with the trainer's log-prob pass (`scores_with_log_probs`): for the
    attributed rows the clean forward that gives the log-probs also gives the clean target;
    then
    - `answer_mean` / `first_answer`: one noisy forward with autograd and one backward on the
      same rows (same shapes as the clean forward), as in `attribute` (same noise, same
      scores);
    - `answer_logprob`: the gradient is taken from the clean forward itself (run with
      autograd on the embeddings): s_t = |<d(-phi)/dE_t, E_t>| at the clean embeddings,
      which is `attribute` with `noise_std=0`; no second forward.

    Args:
        model, batch, segments, config, rows: as for `attribute`.
        temperature, log_prob_fn, sync_passes: as for `scores_with_log_probs`.
    """
    step = _clean_gradient_step if config.target == "answer_logprob" else _step
    return scores_with_log_probs(
        model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk: step(parts, chunk, config), rows,
        temperature=temperature, log_prob_fn=log_prob_fn, sync_passes=sync_passes,
    )  # fmt: skip


def _clean_gradient_step(parts: ModelParts, chunk: Chunk, config: GradientConfig) -> StepResult:
    """`answer_logprob` fused: s_t = |<d(-phi)/dE_t, E_t>| [C, L] from the clean forward
    itself (run with autograd on the embeddings), no noisy pass."""
    with parts.materialized():
        embeds = parts.embed(chunk.input_ids).detach().requires_grad_(True)  # [C, L, H]
        with torch.enable_grad(), parts.activation_checkpointing():
            hidden = parts.hidden_states(embeds, chunk.attention_mask, chunk.position_ids)  # [C, L, H]
            phi = compute_target(parts, hidden, chunk.answer, config.target)  # [C]
            (grad,) = torch.autograd.grad(-phi.sum(), embeds)
    return StepResult((grad.to(phi.dtype) * embeds.detach().to(phi.dtype)).sum(dim=-1).abs(), hidden.detach())
