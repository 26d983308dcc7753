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
`max_tokens_per_pass` holds; logits are computed at the target positions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import copy

import torch

from oar_verl.core.attribution.base import PassSync, attributed_rows, passes_to_run, rows_per_pass, scatter_scores
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.lm import eval_mode, lm_parts
from oar_verl.core.spans import Segments
from oar_verl.core.targets import answer_positions, check_target, compute_target, target_shift

NAME = "oar_p"
MODES = ("exact", "span_approx")


@dataclass(frozen=True)
class PerturbationConfig:
    target: str = field(default="first_answer", metadata={"help": "P_final mode: first_answer (OAR-P reference default), answer_mean or answer_logprob."})
    perturbation_id: int | None = field(default=None, metadata={"help": "Token id put in place of the perturbed token; the tokenizer's pad id in the reference. Required."})
    max_tokens_per_pass: int = field(default=16384, metadata={"help": "Token budget of one forward pass (sequences x length): bounds peak memory. Must hold one prompt plus response."})
    mode: str = field(default="exact", metadata={"help": "exact (the definition), or span_approx: APPROXIMATE, each run of `span` consecutive reasoning tokens is replaced at once and its tokens share the score (about span x fewer sequences)."})
    span: int = field(default=4, metadata={"help": "span_approx: tokens replaced together (>= 1; 1 is exact)."})

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown OAR-P mode {self.mode!r}, expected one of {list(MODES)}")
        if self.span < 1:
            raise ValueError(f"span: expected >= 1 consecutive tokens, got {self.span}")
        if self.perturbation_id is None or int(self.perturbation_id) < 0:
            raise ValueError(f"perturbation_id: expected a token id >= 0 (e.g. tokenizer.pad_token_id), got {self.perturbation_id!r}")
        if self.max_tokens_per_pass < 1:
            raise ValueError(f"max_tokens_per_pass: expected >= 1, got {self.max_tokens_per_pass}")


@torch.no_grad()
def attribute(
    model: torch.nn.Module,
    batch: ResponseBatch,
    segments: Segments,
    config: PerturbationConfig,
    rows: torch.Tensor | None = None,
    sync_passes: PassSync | None = None,
) -> torch.Tensor:
    """OAR-P scores [B, R] (float32): s_t on reasoning tokens of attributed rows, 0 elsewhere.

    Args:
        model: a Hugging Face causal LM.
        batch: prompts and responses in verl's layout, [B, L].
        segments: the responses' segments, [B].
        config: target mode, perturbation id, token budget.
        rows: [B] bool, the rows to attribute (e.g. nonzero advantage); default all.
        sync_passes: under FSDP, maps this rank's pass count to the count all ranks run
            (see `base.PassSync`); the extra passes are one-token idle passes.
    """
    parts = lm_parts(model)
    B, R = batch.input_ids.shape[0], batch.response_length
    device = batch.input_ids.device
    index = attributed_rows(batch, segments, rows)  # [B']
    if index.numel() == 0:
        with eval_mode(model):
            for _ in range(passes_to_run(0, sync_passes)):
                parts.idle_pass(device, backward=False)
        return torch.zeros((B, R), dtype=torch.float32, device=device)
    sub, sub_segments = batch.select(index), segments.select(index)
    answer = answer_positions(sub, sub_segments)  # [B', A]
    L = int(answer.columns_needed.max())  # no target reads past column L
    input_ids = sub.input_ids[:, :L]
    attention_mask, position_ids = sub.attention_mask[:, :L], sub.position_ids[:, :L]
    per_pass = rows_per_pass(config.max_tokens_per_pass, L, "max_tokens_per_pass")

    P = batch.prompt_length
    row_chunks = torch.arange(len(index), device=device).split(per_pass)
    span = config.span if config.mode == "span_approx" else 1
    windows = [(r, w) for r in range(len(index)) for w in _windows(int(sub_segments.reasoning_end[r]), span, P, L, config.max_tokens_per_pass, device)]
    idle = passes_to_run(len(row_chunks) + len(windows), sync_passes) - len(row_chunks) - len(windows)

    with eval_mode(model):
        clean, caches = [], []
        for c in row_chunks:
            with parts.materialized():
                hidden, cache = parts.hidden_states_and_cache(attention_mask[c], position_ids[c], input_ids[c])  # [C, L, H]
                clean.append(compute_target(parts, hidden, answer.select(c), config.target))
            caches.append(cache)
        clean = torch.cat(clean)  # [B', V] or [B']

        pair_row, pair_token, shifts = [], [], []
        for r, units in windows:  # units: [C] first positions of consecutive runs of `span` tokens of row r
            start = P + int(units[0])  # positions before `start` keep their clean keys/values
            C = len(units)
            chunk, within = divmod(r, per_pass)
            prefix = copy.deepcopy(caches[chunk])
            prefix.batch_select_indices(torch.tensor([within], device=device))
            prefix.crop(start)
            prefix.batch_repeat_interleave(C)
            suffix = input_ids[r, start:].repeat(C, 1)  # [C, L - start]
            end = int(sub_segments.reasoning_end[r])
            for offset in range(span):  # a unit is [first, first + span) within the reasoning
                inside = units + offset < end
                suffix[torch.arange(C, device=device)[inside], (P + units + offset - start)[inside]] = config.perturbation_id
            with parts.materialized():
                hidden, _ = parts.hidden_states_and_cache(
                    attention_mask[r].repeat(C, 1), position_ids[r, start:].repeat(C, 1), suffix, past_key_values=prefix
                )  # [C, L - start, H]
                perturbed = compute_target(parts, hidden, answer.select(torch.full((C,), r, device=device)).shifted(-start), config.target)
            shift = target_shift(clean[[r] * C], perturbed, config.target).abs()  # [C]
            tokens = (units[:, None] + torch.arange(span, device=device)[None, :]).flatten()  # [C * span]
            inside = tokens < end
            shifts.append(shift.repeat_interleave(span)[inside])  # a unit's tokens share its score
            pair_row.append(torch.full((int(inside.sum()),), r, device=device))
            pair_token.append(tokens[inside])
        for _ in range(idle):
            parts.idle_pass(device, backward=False)
    pair_row, pair_token = torch.cat(pair_row), torch.cat(pair_token)
    return scatter_scores(B, R, index[pair_row], pair_token, torch.cat(shifts))


def _windows(reasoning_end: int, span: int, prompt_length: int, length: int, max_tokens: int, device: torch.device) -> list[torch.Tensor]:
    """A row's perturbation units (first positions 0, span, 2 span, ... below reasoning_end)
    split into windows, each batched in one pass: C sequences recomputing the
    S = L - (P + first) positions from the window's first unit hold at most `max_tokens`
    tokens, and C <= S / (4 span), so that the positions a sequence recomputes before its
    own unit (C span / 2 on average) stay a small share of its S: about 1.14x the tokens of
    recomputing each from its own unit."""
    units = torch.arange(0, reasoning_end, span, device=device)
    windows, first = [], 0
    while first < len(units):
        suffix = length - (prompt_length + int(units[first]))
        count = max(1, min(len(units) - first, max_tokens // suffix, suffix // (4 * span)))
        windows.append(units[first : first + count])
        first += count
    return windows
