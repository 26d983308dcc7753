"""OAR-P's Taylor estimate (`perturbation_mode=taylor`): APPROXIMATE, every reasoning
token's score from one forward pass and a few backward passes.

OAR-P replaces reasoning token t's embedding E_t by the perturbation id's, a change
d_t = E(perturbation_id) - E_t [H] at position t alone, and measures the outcome shift.
Expanded around the clean embeddings E [N, L, H]:

- `answer_logprob`, first order: phi(E + d_t) - phi(E) ~ <g_t, d_t> with g = dphi/dE, so
  s_t = |<g_t, d_t>|: one backward gives every token's score.
- distribution targets, second order (the first-order term of a KL at its minimum is 0):
  KL(P || P^(t)) ~ 1/2 Var_{v~P}[<dlog p_v/dE_t, d_t>] = 1/2 sum_v p_v (u_v . D_t)^2,
  the Fisher form, with D_t = dlog P/dE_t d_t [V] and u_v = e_v - p. Each direction w [V]
  costs one backward, which gives <w, dlog P/dE_t d_t> for every t at once. Directions:
  * the `taylor_top` most probable answers v, w = sqrt(p_v) (e_v - p): their terms exactly;
  * `taylor_samples` Gaussian projections of the remaining vocabulary T,
    w = sum_{v in T} sqrt(p_v) r_v (e_v - p) with r ~ N(0, I): E[(w . D_t)^2] is the sum
    of T's terms, so each sample estimates the rest without bias (weight 1 / samples).
  With taylor_top = V the form is exact; with samples = 0 the rest is dropped (a lower
  bound).

Row b's projections use a generator seeded from (seed, b) as OAR-G's noise does, so scores
do not depend on the rows a pass holds. Every rank of a data-parallel group runs the same
steps (`base.synchronized_steps`): one forward with autograd and `taylor_top +
taylor_samples` backward passes (one for `answer_logprob`), on a chunk of rows or on a
one-token dummy. Gradients go to the embeddings only (no parameter `.grad`).
"""

from __future__ import annotations

import torch

from oar_verl.core.attribution.base import PassSync, row_seed
from oar_verl.core.attribution.chunks import Chunk, LogProbFn, ScoresAndLogProbs, StepResult, attribute_by_chunks, scores_with_log_probs
from oar_verl.core.attribution.configs import PerturbationConfig
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.models import ModelParts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import compute_target


def directions(log_probs: torch.Tensor, rows: torch.Tensor, top: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The projections of the Fisher form and their weights.

    Args:
        log_probs: [C, V] the clean target's log-probabilities.
        rows: [C] the rows' batch indices (seed the Gaussian draws).
        top, samples, seed: see the module docstring.

    Returns:
        ([K, C, V] float32 directions w, [K] float32 weights), K = min(top, V) + samples:
        the form is sum_k weight_k (w_k . D_t)^2.
    """
    p = log_probs.detach().float().exp()  # [C, V]
    C, V = p.shape
    m = min(top, V)
    top_ids = p.topk(m, dim=-1).indices if m else torch.zeros((C, 0), dtype=torch.long, device=p.device)  # [C, m]
    exact = -p[None].expand(m, C, V).clone()  # [m, C, V]: sqrt(p_v) (e_v - p)
    exact.scatter_add_(2, top_ids.T[:, :, None], torch.ones((m, C, 1), device=p.device))
    exact *= p.gather(1, top_ids).sqrt().T[:, :, None]
    rest = torch.ones_like(p).scatter(1, top_ids, 0.0)  # [C, V], the vocabulary not taken exactly
    draws = torch.empty((samples, C, V), dtype=torch.float32, device=p.device)
    for i, row in enumerate(rows.tolist()):
        generator = torch.Generator(device=p.device).manual_seed(row_seed(seed, row))
        draws[:, i] = torch.randn((samples, V), generator=generator, device=p.device)
    scaled = p.sqrt()[None] * rest[None] * draws  # [S, C, V]: sqrt(p_v) r_v on the rest
    sampled = scaled - p[None] * scaled.sum(dim=-1, keepdim=True)  # sum_v sqrt(p_v) r_v (e_v - p)
    weights = torch.cat([torch.ones(m), torch.full((samples,), 1.0 / max(samples, 1))]).to(p.device)
    return torch.cat([exact, sampled]), weights


def attribute(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: PerturbationConfig,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """Taylor estimates of OAR-P's scores [B, R] (float32), 0 off the reasoning of attributed rows.

    Args:
        model: a Hugging Face causal LM; its parameters' `.grad` are left untouched.
        batch: prompts and responses in verl's layout, [B, L].
        segments: the responses' segments, [B].
        config: OAR-P's settings with mode `taylor` (target, perturbation id, taylor_top,
            taylor_samples, seed, token budget).
        rows: [B] bool, the rows to attribute; default all.
        sync_passes: under FSDP, maps this rank's step count to the count all ranks run.
    """
    return attribute_by_chunks(
        model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk: _step(parts, chunk, config), rows, sync_passes
    )


def attribute_with_log_probs(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: PerturbationConfig,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    log_prob_fn: LogProbFn | None = None,
    sync_passes: PassSync | None = None,
) -> ScoresAndLogProbs:
    """The Taylor estimates fused with the trainer's log-prob pass
    (`chunks.scores_with_log_probs`): the clean forward the expansion differentiates gives
    the attributed rows' log-probs too, so the fused step costs the log-prob pass plus the
    backward passes. Args as for `attribute` and `chunks.scores_with_log_probs`."""
    return scores_with_log_probs(
        model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk: _step(parts, chunk, config), rows,
        temperature=temperature, log_prob_fn=log_prob_fn, sync_passes=sync_passes,
    )  # fmt: skip


def _step(parts: ModelParts, chunk: Chunk, config: PerturbationConfig) -> StepResult:
    """[C, L] float32 estimates of every position's score (only reasoning positions are
    read), and the clean forward's hidden states (the one forward the expansion
    differentiates)."""
    if parts.vocab_parallel and config.target != "answer_logprob":
        raise ValueError(
            f"mode: taylor with target {config.target!r} needs the whole vocabulary of the target (its Fisher directions); "
            "the model's head is split over tensor-parallel ranks: use target 'answer_logprob', mode 'exact', or oar_g"
        )
    with parts.materialized():
        with torch.no_grad():
            embeds = parts.embed(chunk.input_ids)  # [C, L, H]
            replacement = parts.embed(torch.full_like(chunk.input_ids[:, :1], config.perturbation_id))  # [C, 1, H]
            change = (replacement - embeds).float()  # [C, L, H]: d_t
        embeds.requires_grad_(True)
        with torch.enable_grad(), parts.activation_checkpointing():
            hidden = parts.hidden_states(embeds, chunk.attention_mask, chunk.position_ids)  # [C, L, H]
            target = compute_target(parts, hidden, chunk.answer, config.target)  # [C, V] or [C]
            if config.target == "answer_logprob":
                (grad,) = torch.autograd.grad(target.sum(), embeds)  # rows are independent
                scores = (grad.float() * change).sum(dim=-1).abs()
            else:
                rows = chunk.rows if chunk.rows is not None else torch.zeros(1, dtype=torch.long, device=embeds.device)
                projections, weights = directions(target, rows, config.taylor_top, config.taylor_samples, config.seed)  # [K, C, V], [K]
                form = torch.zeros(chunk.input_ids.shape, dtype=torch.float32, device=embeds.device)  # [C, L]
                with parts.gathered_through_backward():  # one graph, one backward per direction
                    for k in range(len(weights)):
                        (grad,) = torch.autograd.grad((target * projections[k]).sum(), embeds, retain_graph=k + 1 < len(weights))
                        form += weights[k] * (grad.float() * change).sum(dim=-1).square()
                scores = 0.5 * form
    return StepResult(scores, hidden.detach())
