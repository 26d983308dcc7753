"""OAR-P: outcome shift when one reasoning token is replaced (OAR_SPEC section 4), exact.

For reasoning token t of a row, its id is replaced by `perturbation_id` (every position,
mask and other token kept) and the target is recomputed:

    s_t = KL(P_final || P_final^(t))      (answer_mean, first_answer)
    s_t = |phi - phi^(t)|                 (answer_logprob)

Exact, computed without repeating work the perturbation cannot change: replacing token t
leaves every position before t as it was, so each row's clean pass keeps its key/value
cache and a perturbed sequence recomputes only from its window's first perturbed position
on, up to the last position the target reads (later tokens cannot change it). A window is
a run of a row's reasoning positions batched in one pass, as many sequences as
`max_tokens_per_pass` holds counting each one's cached prefix (so peak memory is bounded
by the budget, not by the response length); rows are processed one chunk at a time, and
logits are computed at the target positions only.

`span_approx` perturbs runs of `span` tokens at once (its tokens share the score);
`guided_approx` (`guided.py`) perturbs the tokens OAR-G ranks highest and a calibration
draw; `taylor` is not a perturbed pass (`taylor.py`; `core.attribution.attribute`
dispatches every mode).
"""

from __future__ import annotations

import copy

import torch

from oar_verl.core.attribution import guided
from oar_verl.core.attribution.base import PassSync, TokenScores, attributed_rows, passes_to_run
from oar_verl.core.attribution.chunks import Chunk, answer_widths, plan_chunks, prompt_lengths
from oar_verl.core.attribution.configs import PerturbationConfig
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.models import ModelParts, eval_mode, idle_forward, model_parts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import compute_target, target_shift

NAME = "oar_p"


@torch.no_grad()
def attribute(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: PerturbationConfig,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """OAR-P scores [B, R] (float32) by perturbed passes (modes exact, span_approx,
    guided_approx): s_t on reasoning tokens of attributed rows, 0 elsewhere.

    Args:
        model: a Hugging Face causal LM or a megatron-core GPTModel.
        batch: prompts and responses in verl's layout, [B, L].
        segments: the responses' segments, [B].
        config: target mode, perturbation id, token budget, mode.
        rows: [B] bool, the rows to attribute (e.g. nonzero advantage); default all.
        sync_passes: under FSDP, maps this rank's pass count to the count all ranks run
            (`base.max_over_ranks`); every pass is one backbone forward, the extra ones
            one-token idle forwards. guided_approx first runs OAR-G's steps.
    """
    if config.mode == "taylor":
        raise ValueError("mode: taylor runs no perturbed passes; call core.attribution.attribute, which dispatches every mode")
    B, R = batch.input_ids.shape[0], batch.response_length
    index = attributed_rows(batch, segments, rows)  # [B']
    sub, sub_segments = batch.select(index), segments.select(index)
    span = config.span if config.mode == "span_approx" else 1
    if config.mode == "guided_approx":
        plan = guided.guided_units(model, sub, sub_segments, config, sync_passes)
        measured = perturbed_passes(model, sub, sub_segments, plan.units, span, config, sync_passes)
        measured = guided.fill_unmeasured(plan, sub_segments, measured)
    else:
        units = [torch.arange(0, int(end), span, device=index.device) for end in sub_segments.reasoning_end]
        measured = perturbed_passes(model, sub, sub_segments, units, span, config, sync_passes)
    return measured.scatter(B, R, index)


def perturbed_passes(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    units: list[torch.Tensor],
    span: int,
    config: PerturbationConfig,
    sync_passes: PassSync | None,
) -> TokenScores:
    """The exact shift of every unit of every row: units[b] [U_b] the sorted first positions
    of runs of `span` reasoning tokens of row b, each run replaced at once (its tokens share
    the score). Clean passes go by chunks of rows, each chunk's key/value cache kept while
    its rows' perturbed passes run; every rank runs the same number of passes.

    Returns the scores of rows 0..B-1 of `batch`, one per reasoning token of a unit.
    """
    parts = model_parts(model)
    device = batch.input_ids.device
    steps = plan_chunks(prompt_lengths(batch), answer_widths(segments), torch.arange(len(units), device=device), config.max_tokens_per_pass)
    chunks = [Chunk.of(batch, segments, rows_of_chunk, with_answer=True, to_answers=True) for rows_of_chunk in steps]
    windows = {}  # row -> its perturbed passes, each recomputing from its first unit to the row's own last column
    for chunk in chunks:
        for within, r in enumerate(chunk.rows.tolist()):
            windows[r] = _windows(units[r], span, chunk.prompt_length, int(chunk.answer.columns_needed[within]), config.max_tokens_per_pass)
    passes = len(chunks) + sum(len(w) for w in windows.values())
    idle = passes_to_run(passes, sync_passes) - passes
    pieces = []
    with eval_mode(model):
        for chunk in chunks:  # one chunk's clean key/value cache at a time: memory does not grow with the batch
            with parts.materialized():
                hidden, cache = parts.hidden_states_and_cache(chunk.input_ids, chunk.attention_mask, chunk.position_ids)  # [C, L_c, H]
                clean = compute_target(parts, hidden, chunk.answer, config.target)  # [C, V] or [C]
            del hidden
            for within, r in enumerate(chunk.rows.tolist()):
                row_cache = copy.deepcopy(cache)  # the row taken out of its chunk's cache once
                row_cache.batch_select_indices(torch.tensor([within], device=device))
                for window in windows[r]:
                    shift = _window_shifts(parts, chunk, within, row_cache, window, span, clean, config)  # [C']
                    tokens = (window[:, None] + torch.arange(span, device=device)[None, :]).flatten()  # [C' * span]
                    inside = tokens < int(segments.reasoning_end[r])
                    pieces.append(
                        TokenScores(torch.full((int(inside.sum()),), r, device=device), tokens[inside], shift.repeat_interleave(span)[inside])
                    )
            del cache
        for _ in range(idle):  # every pass is one backbone forward: a one-token one keeps step
            idle_forward(parts, device)
    return TokenScores.cat(pieces, device)


def _window_shifts(
    parts: ModelParts, chunk: Chunk, within: int, row_cache, window: torch.Tensor, span: int, clean: torch.Tensor, config: PerturbationConfig
) -> torch.Tensor:
    """[C'] the target shifts of one pass: row `within` of the chunk, C' copies, copy i with
    the `span` reasoning tokens from window[i] replaced, recomputed from window[0] on over
    the row's clean key/value cache (`row_cache`) before it."""
    device = window.device
    P, count = chunk.prompt_length, len(window)
    end, length = int(chunk.reasoning_end[within]), int(chunk.answer.columns_needed[within])
    start = P + int(window[0])  # positions before `start` keep their clean keys/values
    prefix = copy.deepcopy(row_cache)
    prefix.crop(start)
    prefix.batch_repeat_interleave(count)
    suffix = chunk.input_ids[within, start:length].repeat(count, 1)  # [C', length - start]
    for offset in range(span):  # a unit is [first, first + span) within the reasoning
        inside = window + offset < end
        suffix[torch.arange(count, device=device)[inside], (P + window + offset - start)[inside]] = config.perturbation_id
    with parts.materialized():
        hidden, _ = parts.hidden_states_and_cache(
            suffix,
            chunk.attention_mask[within, :length].repeat(count, 1),
            chunk.position_ids[within, start:length].repeat(count, 1),
            past_key_values=prefix,
        )  # [C', length - start, H]
        perturbed = compute_target(parts, hidden, chunk.answer.select(torch.full((count,), within, device=device)).shifted(-start), config.target)
    return target_shift(parts, clean[[within] * count], perturbed, config.target).abs()


def _windows(units: torch.Tensor, span: int, prompt_length: int, length: int, max_tokens: int) -> list[torch.Tensor]:
    """A row's perturbation units (sorted first positions of runs of `span` tokens) split
    into windows, each batched in one pass: C sequences, each recomputing the
    S = L - (P + first) positions from the window's first unit on top of a copy of the
    clean key/value cache before it, hold at most `max_tokens` tokens counting both
    (C L <= max_tokens, so memory is bounded by the budget whatever the length), and
    C <= S / (4 span), so that the positions a sequence recomputes before its own unit
    (C span / 2 on average) stay a small share of its S: about 1.14x the tokens of
    recomputing each from its own unit."""
    windows, first = [], 0
    while first < len(units):
        suffix = length - (prompt_length + int(units[first]))
        count = max(1, min(len(units) - first, max_tokens // length, suffix // (4 * span)))
        windows.append(units[first : first + count])
        first += count
    return windows
