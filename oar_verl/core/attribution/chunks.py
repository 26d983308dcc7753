"""The chunk driver the gradient methods share (OAR-G, OAR-P `taylor`; OAR-P's clean passes
plan with it too): rows in chunks under a token budget, each chunk cut to its own widths,
every data-parallel rank through the same number of steps.

Rows cost what their real tokens cost. A chunk holds rows of similar length (rows are
taken longest first) and is cut to the longest real prompt and the longest response
columns among its rows: a 50-token response in a batch padded to 3072 is not computed at
3072. `max_tokens_per_pass` bounds rows x (that prompt width + that response width), the
tokens a chunk computes, padding within it included.

    rows --plan_chunks--> [chunk rows, ...] --Chunk.of--> Chunk [C, L_c] --step--> scores [C, L_c]

A step (`Step`: the method's work on one chunk) gets a `Chunk` whose `prompt_length` P_c is its own: response token k of a row sits
at column P_c + k, as in verl's layout. The results are scattered back to the batch's
[B, R] by row index, so a row's scores and log-probs do not depend on the rows it shares a
chunk with (up to the last bits of batched kernels), on the order of the rows, or on the
budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from oar_verl.core.attribution.base import PassSync, attributed_rows, synchronized_steps
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.models import ModelParts, eval_mode, log_probs_and_entropy, model_parts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import AnswerPositions, answer_positions

LogProbFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(logits [N, S, V] at the temperature, in the head's dtype; tokens [N, S]) -> (log-probs
[N, S], entropies [N, S]): how the trainer turns logits into `old_log_probs` and `entropy`."""

LOGIT_TOKENS = 1024  # positions whose [.., V] logits exist at once in the log-prob pass (~20 B per logit with temporaries)


def prompt_lengths(batch: ResponseBatch) -> torch.Tensor:
    """[B] int64 real prompt tokens of each row (its prompt is left-padded to P)."""
    return batch.attention_mask[:, : batch.prompt_length].long().sum(dim=1)


def response_widths(batch: ResponseBatch) -> torch.Tensor:
    """[B] int64 response columns up to each row's last real token (at least 1)."""
    real = batch.response_mask
    k = torch.arange(1, batch.response_length + 1, device=real.device)[None, :]
    return (real.long() * k).max(dim=1).values.clamp(min=1)


def answer_widths(segments: Segments) -> torch.Tensor:
    """[B] int64 response columns a row's target reads: up to the position predicting its
    last answer token (rows without an answer: 1)."""
    return (segments.answer_end - 1).clamp(min=1).long()


def plan_chunks(prompts: torch.Tensor, widths: torch.Tensor, rows: torch.Tensor, max_tokens_per_pass: int) -> list[torch.Tensor]:
    """`rows` [B'] in chunks (each a tensor of row indices) whose cost, rows x (longest real
    prompt + widest response among them), is at most `max_tokens_per_pass`: rows taken
    longest first (ties by index), each chunk filled while the next row fits.

    Args:
        prompts: [B] real prompt lengths; widths: [B] response columns each row needs.
        rows: [B'] the rows to plan.
    """
    if rows.numel() == 0:
        return []
    p, w = prompts[rows].tolist(), widths[rows].tolist()
    order = sorted(range(len(p)), key=lambda i: (-(p[i] + w[i]), i))
    longest = p[order[0]] + w[order[0]]
    if longest > max_tokens_per_pass:
        raise ValueError(
            f"max_tokens_per_pass: {max_tokens_per_pass} tokens cannot hold one sequence of {longest} tokens "
            f"(prompt plus response up to what is computed); raise it to at least {longest}"
        )
    chunks, current, p_max, w_max = [], [], 0, 0
    for i in order:
        p_next, w_next = max(p_max, p[i]), max(w_max, w[i])
        if current and (len(current) + 1) * (p_next + w_next) > max_tokens_per_pass:
            chunks.append(current)
            current, p_next, w_next = [], p[i], w[i]
        current.append(i)
        p_max, w_max = p_next, w_next
    chunks.append(current)
    return [rows[torch.tensor(chunk, dtype=torch.long, device=rows.device)] for chunk in chunks]


@dataclass(frozen=True)
class Chunk:
    """One step's rows: `rows` [C] their batch indices (None: the dummy of a rank with no
    rows left), `input_ids` / `attention_mask` / `position_ids` [C, L_c], `prompt_length`
    P_c (the longest real prompt among the rows: response token k at column P_c + k),
    `answer` their answer positions in these columns (None for log-prob-only rows),
    `reasoning_end` [C]."""

    rows: torch.Tensor | None
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    answer: AnswerPositions | None
    reasoning_end: torch.Tensor

    @classmethod
    def of(cls, batch: ResponseBatch, segments: Segments, rows: torch.Tensor, *, with_answer: bool, to_answers: bool = False) -> Chunk:
        """Rows `rows` of the batch cut to their own widths: from their longest real prompt
        to their last real response token, or (`to_answers`) to the last column their
        targets read."""
        sub, sub_segments = batch.select(rows), segments.select(rows)
        P, width = batch.prompt_length, int(response_widths(sub).max())
        start = P - int(prompt_lengths(sub).max())
        trimmed = ResponseBatch(*(t[:, start : P + width] for t in (sub.input_ids, sub.attention_mask, sub.position_ids)), response_length=width)
        answer = answer_positions(trimmed, sub_segments) if with_answer else None
        length = int(answer.columns_needed.max()) if to_answers else trimmed.input_ids.shape[1]
        return cls(
            rows,
            trimmed.input_ids[:, :length],
            trimmed.attention_mask[:, :length],
            trimmed.position_ids[:, :length],
            trimmed.prompt_length,
            answer,
            sub_segments.reasoning_end,
        )

    @classmethod
    def dummy(cls, device: torch.device) -> Chunk:
        """A one-token prompt and a one-token response that is its own answer, no reasoning."""
        ids = torch.zeros((1, 2), dtype=torch.long, device=device)
        answer = AnswerPositions(
            torch.zeros((1, 1), dtype=torch.long, device=device),
            torch.zeros((1, 1), dtype=torch.long, device=device),
            torch.ones((1, 1), dtype=torch.bool, device=device),
        )
        return cls(None, ids, torch.ones_like(ids), torch.arange(2, device=device)[None], 1, answer, torch.zeros(1, dtype=torch.long, device=device))

    @property
    def responses(self) -> torch.Tensor:
        """[C, L_c - P_c] the response tokens in the chunk's columns."""
        return self.input_ids[:, self.prompt_length :]

    @property
    def response_width(self) -> int:
        """L_c - P_c: the response columns the chunk holds (the batch's first ones)."""
        return self.input_ids.shape[1] - self.prompt_length


@dataclass(frozen=True)
class StepResult:
    """What a method's step gives the driver for a chunk of C rows over L_c columns.

    Attributes:
        scores: [C, L_c] estimates >= 0 at every position (the driver keeps the reasoning
            positions of the chunk's rows).
        clean_hidden: [C, L_c, H] the last hidden states of the step's clean forward, without
            a graph: the fused driver (`scores_with_log_probs`) takes the rows' log-probs
            from them.
    """

    scores: torch.Tensor
    clean_hidden: torch.Tensor


Step = Callable[[ModelParts, Chunk], StepResult]
"""A method's work on one chunk, in one synchronised step (the same program on every rank,
on the one-token dummy chunk too)."""


def attribute_by_chunks(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    max_tokens_per_pass: int,
    step: Step,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """Scores [B, R] (float32) of a gradient method: the attributed rows in chunks of at
    most `max_tokens_per_pass` computed tokens, each cut to the columns its targets read,
    one `step` each; every rank runs the same number of steps
    (`synchronized_steps`, a one-token dummy chunk once it has no rows left). 0 off the
    reasoning of attributed rows."""
    parts = model_parts(model)
    B, R = batch.input_ids.shape[0], batch.response_length
    device = batch.input_ids.device
    index = attributed_rows(batch, segments, rows)  # [B']
    steps = plan_chunks(prompt_lengths(batch), answer_widths(segments).to(device), index, max_tokens_per_pass)
    reasoning = segments.reasoning_mask(R).to(device)  # [B, R]
    scores = torch.zeros((B, R), dtype=torch.float32, device=device)
    with eval_mode(model):
        for step_rows in synchronized_steps(steps, sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, with_answer=True, to_answers=True) if step_rows is not None else Chunk.dummy(device)
            result = step(parts, chunk)
            if step_rows is not None:
                _keep_reasoning_scores(scores, chunk, result.scores, reasoning)
    return scores


def _keep_reasoning_scores(scores: torch.Tensor, chunk: Chunk, estimate: torch.Tensor, reasoning: torch.Tensor) -> None:
    """Writes a chunk's estimates [C, L_c] into the batch's scores [B, R] on the reasoning
    tokens (`reasoning` [B, R]) of its rows; 0 elsewhere in its columns."""
    W = chunk.response_width
    scores[chunk.rows, :W] = estimate[:, chunk.prompt_length :].float() * reasoning[chunk.rows, :W]


@dataclass(frozen=True)
class ScoresAndLogProbs:
    """`scores_with_log_probs`' result.

    Attributes:
        scores: [B, R] float32 scores, as the method's `attribute` gives them.
        log_probs: [B, R] float32 log-probability of each response token under the model at
            `temperature`, 0 at padding: verl's `old_log_probs`.
        entropy: [B, R] float32 entropy of the model's next-token distribution at each
            response position, at `temperature`, 0 at padding (verl's `entropy`).
    """

    scores: torch.Tensor
    log_probs: torch.Tensor
    entropy: torch.Tensor


def scores_with_log_probs(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    max_tokens_per_pass: int,
    step: Step,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    log_prob_fn: LogProbFn | None = None,
    sync_passes: PassSync | None = None,
) -> ScoresAndLogProbs:
    """A gradient method (OAR-G, OAR-P taylor) fused with the trainer's log-prob pass: every
    row's response log-probs and entropies come from a clean forward over its whole sequence;
    for the attributed rows that forward is the method's own (`step`'s `clean_hidden`, read
    after the step's backward passes, so the log-prob logits do not add to their memory).
    Attributed rows go in chunks of their own, the others (log-probs only, one forward)
    after them.

    Args:
        model, batch, segments, rows: as for `attribute_by_chunks`.
        max_tokens_per_pass: token budget of one step (rows x their real widths).
        step: the method's step on a chunk of whole sequences.
        temperature: the sampling temperature the log-probs are taken at (> 0), applied as
            verl does (`scale_by_temperature`).
        log_prob_fn: logits at the temperature -> (log-probs, entropies), default the
            parts' reductions (`models.log_probs_and_entropy`, float32); the verl worker passes verl's own
            functions.
        sync_passes: under FSDP, as for `attribute_by_chunks`; ranks run the same number of
            attributed steps, then the same number of log-prob-only steps.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    parts = model_parts(model)
    log_prob_fn = log_prob_fn or (lambda logits, tokens: log_probs_and_entropy(parts, logits, tokens))
    B, R = batch.input_ids.shape[0], batch.response_length
    device = batch.input_ids.device
    attributed = attributed_rows(batch, segments, rows)  # [B']
    chosen = torch.zeros(B, dtype=torch.bool, device=device)
    chosen[attributed] = True
    plain = (~chosen).nonzero().squeeze(1)  # [B - B'] rows that only need log-probs
    prompts, widths = prompt_lengths(batch), response_widths(batch)
    reasoning = segments.reasoning_mask(R).to(device)  # [B, R]
    scores = torch.zeros((B, R), dtype=torch.float32, device=device)
    log_probs = torch.zeros((B, R), dtype=torch.float32, device=device)
    entropy = torch.zeros((B, R), dtype=torch.float32, device=device)

    def record(chunk: Chunk, hidden: torch.Tensor) -> None:
        """Keeps the chunk's rows' response log-probs and entropies from its clean hidden
        states [C, L_c, H] (the head applied without a graph; inside `materialized()`)."""
        values, entropies = response_log_probs(parts, hidden.detach(), chunk.responses, chunk.prompt_length, temperature, log_prob_fn)
        if chunk.rows is not None:
            W = chunk.response_width
            log_probs[chunk.rows, :W], entropy[chunk.rows, :W] = values, entropies

    with eval_mode(model):
        for step_rows in synchronized_steps(plan_chunks(prompts, widths, attributed, max_tokens_per_pass), sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, with_answer=True) if step_rows is not None else Chunk.dummy(device)
            result = step(parts, chunk)
            with parts.materialized(), torch.no_grad():
                record(chunk, result.clean_hidden)
            if step_rows is not None:
                _keep_reasoning_scores(scores, chunk, result.scores, reasoning)
        for step_rows in synchronized_steps(plan_chunks(prompts, widths, plain, max_tokens_per_pass), sync_passes):
            chunk = Chunk.of(batch, segments, step_rows, with_answer=False) if step_rows is not None else Chunk.dummy(device)
            with parts.materialized(), torch.no_grad():
                record(chunk, parts.hidden_states(parts.embed(chunk.input_ids), chunk.attention_mask, chunk.position_ids))
    return ScoresAndLogProbs(scores=scores, log_probs=log_probs * batch.response_mask, entropy=entropy * batch.response_mask)


def scale_by_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits [N, S, V] / T as verl's FSDP engine takes them (`_scale_logits_by_temperature`):
    in the logits' own dtype, T rounded to it, divided by a per-row tensor [N, 1, 1] exactly
    as verl's is, and not at all at T = 1."""
    if float(temperature) == 1.0:
        return logits
    divisor = torch.full((logits.shape[0], 1, 1), temperature, dtype=torch.float32, device=logits.device)
    return logits / divisor.clamp(min=1e-8).to(logits.dtype)


def response_log_probs(
    parts: ModelParts, hidden: torch.Tensor, responses: torch.Tensor, prompt_length: int, temperature: float, log_prob_fn: LogProbFn
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
        logits = scale_by_temperature(
            parts.logits(hidden[:, prompt_length - 1 + start : prompt_length - 1 + end], upcast=False), temperature
        )  # [C, S, V]
        values, entropies = log_prob_fn(logits, responses[:, start:end])
        log_probs[:, start:end], entropy[:, start:end] = values.float(), entropies.float()
    return log_probs, entropy
