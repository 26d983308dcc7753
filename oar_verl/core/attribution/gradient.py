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
elsewhere, with `g_b` a generator on the batch's device seeded with
`numpy.random.SeedSequence([seed, b]).generate_state(1, numpy.uint64)[0] % 2**63`. So a
row's scores do not depend on the rows it shares a pass with, on the padding or on the
token budget, and no pass holds noise for more than its own rows.

Every rank of a data-parallel group runs the same program (`base.synchronized_steps`):
per step a clean forward and a noisy forward and backward (fused `answer_logprob`: one
forward and backward; fused log-prob-only rows: one forward), on its next chunk of rows or
on a one-token dummy once it has none left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from oar_verl.core.attribution.base import PassSync, attributed_rows, rows_per_pass, split_rows, synchronized_steps
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.lm import LMParts, eval_mode, lm_parts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import AnswerPositions, answer_positions, check_target, compute_target, target_shift

NAME = "oar_g"


@dataclass(frozen=True)
class GradientConfig:
    target: str = field(default="answer_mean", metadata={"help": "P_final mode: answer_mean (OAR-G reference default), first_answer or answer_logprob."})
    noise_std: float = field(default=1e-3, metadata={"help": "sigma of the Gaussian noise on reasoning embeddings (reference code: 1e-3). 0 is allowed only with answer_logprob, where the KL gradient does not vanish."})
    seed: int = field(default=0, metadata={"help": "Seed of the noise generators (>= 0; each row's generator is seeded from it and the row's index)."})
    max_tokens_per_pass: int = field(default=16384, metadata={"help": "Token budget of one forward+backward pass (rows x length): bounds peak memory."})

    def __post_init__(self) -> None:
        check_target(self.target)
        if not self.noise_std >= 0 or self.noise_std == float("inf"):
            raise ValueError(f"noise_std: expected a finite value >= 0, got {self.noise_std}")
        if self.noise_std == 0 and self.target != "answer_logprob":
            raise ValueError(f"noise_std: 0 gives all-zero KL gradients with target {self.target!r}; use > 0 or target 'answer_logprob'")
        if self.seed < 0:
            raise ValueError(f"seed: expected >= 0, got {self.seed}")
        if self.max_tokens_per_pass < 1:
            raise ValueError(f"max_tokens_per_pass: expected >= 1, got {self.max_tokens_per_pass}")


LogProbFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(logits [N, S, V] at the temperature, in the head's dtype; tokens [N, S]) -> (log-probs
[N, S], entropies [N, S]): how the trainer turns logits into `old_log_probs` and `entropy`."""

LOGIT_TOKENS = 1024  # positions whose [.., V] logits exist at once in the log-prob pass (~20 B per logit with temporaries)


def row_seed(seed: int, row: int) -> int:
    """The seed of row `row`'s noise generator (see the module docstring)."""
    return int(np.random.SeedSequence([seed, row]).generate_state(1, np.uint64)[0]) % 2**63


def row_noise(rows: torch.Tensor, reasoning_end: torch.Tensor, length: int, prompt_length: int, hidden_size: int, config: GradientConfig) -> torch.Tensor:
    """[C, length, H] float32 noise of batch rows `rows` [C] whose reasoning is response
    tokens 0..reasoning_end [C] (sequence positions P + k): see the module docstring."""
    device = rows.device
    noise = torch.zeros((len(rows), length, hidden_size), dtype=torch.float32, device=device)
    for i, (row, end) in enumerate(zip(rows.tolist(), reasoning_end.tolist())):
        generator = torch.Generator(device=device).manual_seed(row_seed(config.seed, row))
        noise[i, prompt_length : prompt_length + end] = torch.randn((end, hidden_size), generator=generator, device=device, dtype=torch.float32)
    return noise * config.noise_std


@dataclass(frozen=True)
class Chunk:
    """One pass's rows: `rows` [C] their batch indices (None: the dummy of a rank with no
    rows left), `input_ids` / `attention_mask` / `position_ids` [C, L], `prompt_length` P,
    `answer` their answer positions (None for log-prob-only rows), `reasoning_end` [C]."""

    rows: torch.Tensor | None
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    answer: AnswerPositions | None
    reasoning_end: torch.Tensor

    @classmethod
    def of(cls, batch: ResponseBatch, segments: Segments, rows: torch.Tensor, length: int, with_answer: bool) -> Chunk:
        """Rows `rows` of the batch, cut to the first `length` positions."""
        sub, sub_segments = batch.select(rows), segments.select(rows)
        answer = answer_positions(sub, sub_segments) if with_answer else None
        return cls(rows, sub.input_ids[:, :length], sub.attention_mask[:, :length], sub.position_ids[:, :length], batch.prompt_length, answer, sub_segments.reasoning_end)

    @classmethod
    def dummy(cls, device: torch.device) -> Chunk:
        """A one-token prompt and a one-token response that is its own answer, no reasoning."""
        ids = torch.zeros((1, 2), dtype=torch.long, device=device)
        answer = AnswerPositions(torch.zeros((1, 1), dtype=torch.long, device=device), torch.zeros((1, 1), dtype=torch.long, device=device), torch.ones((1, 1), dtype=torch.bool, device=device))
        return cls(None, ids, torch.ones_like(ids), torch.arange(2, device=device)[None], 1, answer, torch.zeros(1, dtype=torch.long, device=device))

    def noise(self, hidden_size: int, config: GradientConfig) -> torch.Tensor:
        """[C, L, H] the rows' noise (zero for the dummy)."""
        rows = self.rows if self.rows is not None else torch.zeros(1, dtype=torch.long, device=self.input_ids.device)
        return row_noise(rows, self.reasoning_end, self.input_ids.shape[1], self.prompt_length, hidden_size, config)

    @property
    def responses(self) -> torch.Tensor:
        """[C, L - P] the response tokens."""
        return self.input_ids[:, self.prompt_length :]


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
    return attribute_by_chunks(model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk: _chunk_scores(parts, chunk, config), rows, sync_passes)


ChunkScores = Callable[[LMParts, Chunk], torch.Tensor]
"""(model parts, a chunk of C rows cut to L columns) -> [C, L] scores >= 0 of every position
(only reasoning positions are kept), in one synchronised step."""


def attribute_by_chunks(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    max_tokens_per_pass: int,
    chunk_scores: ChunkScores,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """Scores [B, R] (float32) of the gradient methods (OAR-G, OAR-P taylor): the attributed
    rows in chunks of `max_tokens_per_pass` tokens, cut to the columns their targets read,
    one `chunk_scores` step each; every rank runs the same steps (`synchronized_steps`, a
    one-token dummy chunk once it has no rows left). 0 off the reasoning of attributed rows."""
    parts = lm_parts(model)
    B, R, P = batch.input_ids.shape[0], batch.response_length, batch.prompt_length
    device = batch.input_ids.device
    index = attributed_rows(batch, segments, rows)  # [B']
    L = int(answer_positions(batch.select(index), segments.select(index)).columns_needed.max()) if index.numel() else P + 1  # no target reads past column L
    per_pass = rows_per_pass(max_tokens_per_pass, L, "max_tokens_per_pass")
    reasoning = segments.reasoning_mask(R).to(device)[:, : L - P]  # [B, L - P]
    scores = torch.zeros((B, R), dtype=torch.float32, device=device)
    with eval_mode(model):
        for step_rows in synchronized_steps(split_rows(index, per_pass), sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, L, with_answer=True) if step_rows is not None else Chunk.dummy(device)
            estimate = chunk_scores(parts, chunk)  # [C, L]
            if step_rows is not None:
                scores[step_rows, : L - P] = estimate[:, P:].float() * reasoning[step_rows]
    return scores


def _chunk_scores(parts: LMParts, chunk: Chunk, config: GradientConfig) -> torch.Tensor:
    """[C, L] OAR-G's s_t at every position: a clean forward, then the noisy gradient x input."""
    with parts.materialized(), torch.no_grad():
        hidden = parts.hidden_states(parts.embed(chunk.input_ids), chunk.attention_mask, chunk.position_ids)  # [C, L, H]
        clean = compute_target(parts, hidden, chunk.answer, config.target)  # [C, V] or [C]
    return _noisy_gradient_x_input(parts, chunk, clean, config).abs()


def _noisy_gradient_x_input(parts: LMParts, chunk: Chunk, clean: torch.Tensor, config: GradientConfig) -> torch.Tensor:
    """<dJ/dE_t, E_t> [C, L] with J = target_shift(clean, P_final(E + noise)): one forward
    with autograd and one backward to the embeddings (activation checkpointing honoured)."""
    with parts.materialized():
        with torch.no_grad():
            embeds = parts.embed(chunk.input_ids)  # [C, L, H]
        noise = chunk.noise(embeds.shape[-1], config).to(embeds.dtype)
        embeds.requires_grad_(True)
        with torch.enable_grad(), parts.activation_checkpointing():
            hidden = parts.hidden_states(embeds + noise, chunk.attention_mask, chunk.position_ids)  # [C, L, H]
            objective = target_shift(parts, clean, compute_target(parts, hidden, chunk.answer, config.target), config.target)  # [C]
            (grad,) = torch.autograd.grad(objective.sum(), embeds)  # rows are independent
    return (grad.to(objective.dtype) * embeds.detach().to(objective.dtype)).sum(dim=-1)


@dataclass(frozen=True)
class ScoresAndLogProbs:
    """`attribute_with_log_probs`' result.

    Attributes:
        scores: [B, R] float32 OAR-G scores, as `attribute` gives them.
        log_probs: [B, R] float32 log-probability of each response token under the model at
            `temperature`, 0 at padding: verl's `old_log_probs`.
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
    return scores_with_log_probs(
        model, batch, segments, config.max_tokens_per_pass, lambda parts, chunk, record: _fused_chunk_scores(parts, chunk, record, config), rows,
        temperature=temperature, log_prob_fn=log_prob_fn, sync_passes=sync_passes,
    )  # fmt: skip


RecordLogProbs = Callable[[torch.Tensor], None]
"""Takes a chunk's clean hidden states [C, L, H] (with or without a graph) and keeps its
rows' response log-probs and entropies."""

FusedChunkScores = Callable[[LMParts, Chunk, RecordLogProbs], torch.Tensor]
"""(model parts, a chunk of C rows over all L = P + R columns, record) -> [C, L] scores >= 0
of every position, in one synchronised step whose clean forward's hidden states go to
`record` once."""


def scores_with_log_probs(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    max_tokens_per_pass: int,
    chunk_scores: FusedChunkScores,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    log_prob_fn: LogProbFn | None = None,
    sync_passes: PassSync | None = None,
) -> ScoresAndLogProbs:
    """A gradient method (OAR-G, OAR-P taylor) fused with the trainer's log-prob pass: every
    row's response log-probs and entropies come from a clean forward over its whole sequence;
    for the attributed rows that forward is the method's own (`chunk_scores`). Attributed
    rows go in chunks of their own, the others (log-probs only, one forward) after them.

    Args:
        model, batch, segments, rows: as for `attribute`.
        max_tokens_per_pass: token budget of one step (rows x (P + R)).
        chunk_scores: the method's step.
        temperature: the sampling temperature the log-probs are taken at (> 0), applied as
            verl does (`scale_by_temperature`).
        log_prob_fn: logits at the temperature -> (log-probs, entropies), default the
            parts' `log_probs_and_entropy` (float32); the verl worker passes verl's own
            functions.
        sync_passes: under FSDP, as for `attribute`; ranks run the same number of
            attributed steps, then the same number of log-prob-only steps.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    parts = lm_parts(model)
    log_prob_fn = log_prob_fn or parts.log_probs_and_entropy
    B, R, P = batch.input_ids.shape[0], batch.response_length, batch.prompt_length
    L = P + R
    device = batch.input_ids.device
    attributed = attributed_rows(batch, segments, rows)  # [B']
    chosen = torch.zeros(B, dtype=torch.bool, device=device)
    chosen[attributed] = True
    plain = (~chosen).nonzero().squeeze(1)  # [B - B'] rows that only need log-probs
    per_pass = rows_per_pass(max_tokens_per_pass, L, "max_tokens_per_pass")
    reasoning = segments.reasoning_mask(R).to(device)  # [B, R]
    scores = torch.zeros((B, R), dtype=torch.float32, device=device)
    log_probs = torch.zeros((B, R), dtype=torch.float32, device=device)
    entropy = torch.zeros((B, R), dtype=torch.float32, device=device)

    def record_for(chunk: Chunk) -> RecordLogProbs:
        def record(hidden: torch.Tensor) -> None:
            with torch.no_grad():  # no graph through the head for the log-probs
                values, entropies = response_log_probs(parts, hidden.detach(), chunk.responses, chunk.prompt_length, temperature, log_prob_fn)
            if chunk.rows is not None:
                log_probs[chunk.rows], entropy[chunk.rows] = values, entropies

        return record

    with eval_mode(model):
        for step_rows in synchronized_steps(split_rows(attributed, per_pass), sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, L, with_answer=True) if step_rows is not None else Chunk.dummy(device)
            estimate = chunk_scores(parts, chunk, record_for(chunk))  # [C, L]
            if step_rows is not None:
                scores[step_rows] = estimate[:, P:].float() * reasoning[step_rows]
        for step_rows in synchronized_steps(split_rows(plain, per_pass), sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, L, with_answer=False) if step_rows is not None else Chunk.dummy(device)
            with parts.materialized(), torch.no_grad():
                record_for(chunk)(parts.hidden_states(parts.embed(chunk.input_ids), chunk.attention_mask, chunk.position_ids))
    return ScoresAndLogProbs(scores=scores, log_probs=log_probs * batch.response_mask, entropy=entropy * batch.response_mask)


def _fused_chunk_scores(parts: LMParts, chunk: Chunk, record: RecordLogProbs, config: GradientConfig) -> torch.Tensor:
    """[C, L] OAR-G's s_t at every position, its clean forward's hidden states recorded."""
    if config.target == "answer_logprob":  # the gradient of the clean pass
        with parts.materialized():
            embeds = parts.embed(chunk.input_ids).detach().requires_grad_(True)  # [C, L, H]
            with torch.enable_grad(), parts.activation_checkpointing():
                hidden = parts.hidden_states(embeds, chunk.attention_mask, chunk.position_ids)  # [C, L, H]
                phi = compute_target(parts, hidden, chunk.answer, config.target)  # [C]
                (grad,) = torch.autograd.grad(-phi.sum(), embeds)
        with parts.materialized():  # after the backward (its graph freed, FSDP groups resharded): the log-prob logits do not add to its memory
            record(hidden)
        return (grad.to(phi.dtype) * embeds.detach().to(phi.dtype)).sum(dim=-1).abs()
    with parts.materialized(), torch.no_grad():
        hidden = parts.hidden_states(parts.embed(chunk.input_ids), chunk.attention_mask, chunk.position_ids)  # [C, L, H]
        record(hidden)
        clean = compute_target(parts, hidden, chunk.answer, config.target)
    return _noisy_gradient_x_input(parts, chunk, clean, config).abs()


def scale_by_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits [N, S, V] / T as verl's FSDP engine takes them (`_scale_logits_by_temperature`):
    in the logits' own dtype, T rounded to it, divided by a per-row tensor [N, 1, 1] exactly
    as verl's is, and not at all at T = 1."""
    if float(temperature) == 1.0:
        return logits
    divisor = torch.full((logits.shape[0], 1, 1), temperature, dtype=torch.float32, device=logits.device)
    return logits / divisor.clamp(min=1e-8).to(logits.dtype)


def response_log_probs(
    parts: LMParts, hidden: torch.Tensor, responses: torch.Tensor, prompt_length: int, temperature: float, log_prob_fn: LogProbFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """([C, R] log-probs of the response tokens, [C, R] entropies), float32, from hidden
    states [C, P + R, H]: logits in the head's dtype, at `temperature`, for at most
    `LOGIT_TOKENS` positions at a time."""
    C, R = responses.shape
    log_probs = torch.empty((C, R), dtype=torch.float32, device=responses.device)
    entropy = torch.empty((C, R), dtype=torch.float32, device=responses.device)
    step = max(1, LOGIT_TOKENS // C)
    for start in range(0, R, step):
        end = min(start + step, R)
        logits = scale_by_temperature(parts.logits(hidden[:, prompt_length - 1 + start : prompt_length - 1 + end], upcast=False), temperature)  # [C, S, V]
        values, entropies = log_prob_fn(logits, responses[:, start:end])
        log_probs[:, start:end], entropy[:, start:end] = values.float(), entropies.float()
    return log_probs, entropy
