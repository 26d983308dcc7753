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


def attribution_noise(batch: ResponseBatch, hidden_size: int, config: GradientConfig, reasoning: torch.Tensor) -> torch.Tensor:
    """[B, P + R, H] float32 noise (see module docstring), zero outside `reasoning` ([B, R]
    bool, the response positions to perturb)."""
    device = batch.input_ids.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    shape = (*batch.input_ids.shape, hidden_size)
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * config.noise_std
    on_reasoning = torch.zeros(batch.input_ids.shape, dtype=torch.bool, device=device)
    on_reasoning[:, batch.prompt_length :] = reasoning.to(device)
    return noise * on_reasoning[:, :, None]


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
    noise = attribution_noise(batch, parts.embeddings.embedding_dim, config, segments.reasoning_mask(R))[index, :L]  # [B', L, H]
    reasoning = sub_segments.reasoning_mask(R)  # [B', R]

    chunks = torch.arange(len(index), device=device).split(per_pass)
    idle = passes_to_run(len(chunks), sync_passes) - len(chunks)
    scores = []
    with eval_mode(model):
        for c in chunks:
            ids, mask, pos = sub.input_ids[c, :L], sub.attention_mask[c, :L], sub.position_ids[c, :L]  # [C, L]
            chunk_answer = answer.select(c)
            with parts.materialized(), torch.no_grad():
                clean = compute_target(parts, parts.hidden_states(mask, pos, input_ids=ids), chunk_answer, config.target)
            product = _noisy_gradient_x_input(parts, ids, mask, pos, noise[c], clean, chunk_answer, config.target)  # [C, L]
            scores.append(product[:, P:].abs())  # [C, L - P]
        for _ in range(idle):
            parts.idle_pass(device, backward=False)
            parts.idle_pass(device, backward=True)
    scores = torch.cat(scores)  # [B', L - P]
    pair_row, pair_token = reasoning[:, : L - P].nonzero(as_tuple=True)
    return scatter_scores(B, R, index[pair_row], pair_token, scores[pair_row, pair_token])


def _noisy_gradient_x_input(parts, ids, mask, pos, noise, clean, answer, target) -> torch.Tensor:
    """<dJ/dE_t, E_t> [C, L] with J = target_shift(clean, P_final(E + noise)): one forward
    with autograd and one backward to the embeddings."""
    with parts.materialized():  # one gather of the root parameters per pass (FSDP ranks stay in step)
        with torch.no_grad():
            embeds = parts.embeddings(ids)  # [C, L, H]
        embeds.requires_grad_(True)
        with torch.enable_grad():
            hidden = parts.hidden_states(mask, pos, inputs_embeds=embeds + noise.to(embeds.dtype))  # [C, L, H]
            objective = target_shift(clean, compute_target(parts, hidden, answer, target), target)
            (grad,) = torch.autograd.grad(objective.sum(), embeds)  # rows are independent
    return (grad.to(objective.dtype) * embeds.detach().to(objective.dtype)).sum(dim=-1)


@dataclass(frozen=True)
class ScoresAndLogProbs:
    """`attribute_with_log_probs`' result.

    Attributes:
        scores: [B, R] float32 OAR-G scores, as `attribute` gives them.
        log_probs: [B, R] float32 log-probability of each response token under the model at
            `temperature` (log_softmax(logits / T)), 0 at padding: verl's `old_log_probs`.
        entropy: [B, R] float32 entropy of the model's next-token distribution at each
            response position, at `temperature`, 0 at padding (verl's `entropy`).
    """

    scores: torch.Tensor
    log_probs: torch.Tensor
    entropy: torch.Tensor


def attribute_with_log_probs(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: GradientConfig,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    sync_passes: PassSync | None = None,
) -> ScoresAndLogProbs:
    """OAR-G fused with the trainer's log-prob pass: per chunk of rows, one clean forward over
    the whole sequence gives every row's response log-probs and the attributed rows' clean
    target; then
    - `answer_mean` / `first_answer`: one noisy forward with autograd and one backward, as
      in `attribute` (same noise, same scores);
    - `answer_logprob`: the gradient is taken from the clean forward itself (run with
      autograd on the embeddings): s_t = |<d(-phi)/dE_t, E_t>| at the clean embeddings,
      which is `attribute` with `noise_std=0`; no second forward.

    Args:
        model, batch, segments, config, rows: as for `attribute`.
        temperature: the sampling temperature the log-probs are taken at (> 0).
        sync_passes: under FSDP, as for `attribute`; a pass here is a chunk's clean forward
            plus, for the KL targets, its noisy forward and backward.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    parts = lm_parts(model)
    B, R, P = batch.input_ids.shape[0], batch.response_length, batch.prompt_length
    L = P + R
    device = batch.input_ids.device
    attributed = torch.zeros(B, dtype=torch.bool, device=device)
    attributed[attributed_rows(batch, segments, rows)] = True
    reasoning = segments.reasoning_mask(R).to(device) & attributed[:, None]  # [B, R]
    grad_from_clean = config.target == "answer_logprob"  # no noisy pass, no noise
    noise = None if grad_from_clean else attribution_noise(batch, parts.embeddings.embedding_dim, config, reasoning)  # [B, L, H]
    per_pass = rows_per_pass(config.max_tokens_per_pass, L, "max_tokens_per_pass")
    chunks = torch.arange(B, device=device).split(per_pass)
    idle = passes_to_run(len(chunks), sync_passes) - len(chunks)
    scores = torch.zeros((B, R), dtype=torch.float32, device=device)
    log_probs = torch.zeros((B, R), dtype=torch.float32, device=device)
    entropy = torch.zeros((B, R), dtype=torch.float32, device=device)
    with eval_mode(model):
        for c in chunks:
            ids, mask, pos = batch.input_ids[c], batch.attention_mask[c], batch.position_ids[c]  # [C, L]
            local = attributed[c].nonzero().squeeze(1)  # attributed rows of the chunk
            answer = answer_positions(batch.select(c[local]), segments.select(c[local])) if local.numel() else None
            with parts.materialized(), torch.set_grad_enabled(grad_from_clean and answer is not None):
                embeds = parts.embeddings(ids)  # [C, L, H]
                if torch.is_grad_enabled():
                    embeds = embeds.detach().requires_grad_(True)
                hidden = parts.hidden_states(mask, pos, inputs_embeds=embeds)  # [C, L, H]
                with torch.no_grad():  # no graph through the head for the log-probs
                    log_probs[c], entropy[c] = response_log_probs(parts, hidden.detach(), batch.responses[c], P, temperature)
                if answer is None:
                    continue
                clean = compute_target(parts, hidden[local], answer, config.target)
                if grad_from_clean:
                    (grad,) = torch.autograd.grad(-clean.sum(), embeds)
                    product = (grad[local].to(clean.dtype) * embeds[local].detach().to(clean.dtype)).sum(dim=-1)  # [C', L]
            if not grad_from_clean:
                product = _noisy_gradient_x_input(parts, ids[local], mask[local], pos[local], noise[c[local]], clean.detach(), answer, config.target)
            scores[c[local]] = product[:, P:].abs().float() * reasoning[c[local]]
        for _ in range(idle):
            parts.idle_pass(device, backward=grad_from_clean)
            if not grad_from_clean:
                parts.idle_pass(device, backward=True)
    return ScoresAndLogProbs(scores=scores, log_probs=log_probs * batch.response_mask, entropy=entropy * batch.response_mask)


def response_log_probs(
    parts, hidden: torch.Tensor, responses: torch.Tensor, prompt_length: int, temperature: float, slice_tokens: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """([C, R] log-probs of the response tokens, [C, R] entropies), float32, from hidden
    states [C, P + R, H] at `temperature`, `slice_tokens` positions at a time so that at
    most [C, slice, V] logits exist."""
    C, R = responses.shape
    log_probs = torch.empty((C, R), dtype=torch.float32, device=responses.device)
    entropy = torch.empty((C, R), dtype=torch.float32, device=responses.device)
    for start in range(0, R, slice_tokens):
        end = min(start + slice_tokens, R)
        logits = parts.logits(hidden[:, prompt_length - 1 + start : prompt_length - 1 + end]) / temperature  # [C, S, V]
        log_softmax = torch.log_softmax(logits, dim=-1)
        log_probs[:, start:end] = log_softmax.gather(2, responses[:, start:end, None])[:, :, 0].float()
        entropy[:, start:end] = -(log_softmax.exp() * log_softmax).sum(dim=-1).float()
    return log_probs, entropy
