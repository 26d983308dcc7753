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
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from oar_verl.core.attribution import taylor
from oar_verl.core.attribution.base import PassSync, attributed_rows, passes_to_run, scatter_scores
from oar_verl.core.attribution.chunks import Chunk, answer_widths, plan_chunks, prompt_lengths
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.lm import eval_mode, lm_parts
from oar_verl.core.names import did_you_mean
from oar_verl.core.spans import Segments
from oar_verl.core.targets import check_target, compute_target, target_shift

NAME = "oar_p"
MODES = ("exact", "span_approx", "guided_approx", "taylor")


@dataclass(frozen=True)
class PerturbationConfig:
    target: str = field(
        default="first_answer",
        metadata={
            "help": "P_final mode: first_answer (OAR-P reference default), answer_mean, answer_logprob or every_answer (not with mode taylor)."
        },
    )
    perturbation_id: int | None = field(
        default=None, metadata={"help": "Token id put in place of the perturbed token; the tokenizer's pad id in the reference. Required."}
    )
    max_tokens_per_pass: int = field(
        default=16384,
        metadata={"help": "Token budget of one forward pass (sequences x length): bounds peak memory. Must hold one prompt plus response."},
    )
    mode: str = field(
        default="exact",
        metadata={
            "help": "exact (the definition), or span_approx: APPROXIMATE, each run of `span` consecutive reasoning tokens is replaced at once and its tokens share the score (about span x fewer sequences); guided_approx: APPROXIMATE, exact scores for the top tokens by OAR-G, calibrated OAR-G for the rest; taylor: APPROXIMATE, a first-order (answer_logprob) or Fisher (KL targets) expansion of every replacement, one forward and taylor_top + taylor_samples backward passes (one for answer_logprob)."
        },
    )
    span: int = field(default=4, metadata={"help": "span_approx: tokens replaced together (>= 1; 1 is exact)."})
    guided_fraction: float = field(
        default=0.25,
        metadata={"help": "guided_approx: share of each response's reasoning tokens, the top ones by OAR-G, scored exactly (in (0, 1])."},
    )
    calibration_fraction: float = field(
        default=0.1,
        metadata={
            "help": "guided_approx: share drawn at random from the other tokens and scored exactly, to fit the scale applied to their OAR-G scores (in (0, 1])."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "guided_approx: seed of the OAR-G noise and of the calibration draw; taylor: seed of the Gaussian projections."}
    )
    taylor_top: int = field(
        default=4,
        metadata={"help": "taylor (KL targets): the most probable answer tokens whose Fisher terms are taken exactly, one backward each (>= 0)."},
    )
    taylor_samples: int = field(
        default=0,
        metadata={
            "help": "taylor (KL targets): Gaussian projections estimating the rest of the vocabulary's terms without bias, one backward each (>= 0; 0 drops the rest)."
        },
    )

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown OAR-P mode {self.mode!r}{did_you_mean(self.mode, MODES)}, expected one of {list(MODES)}")
        for name in ("taylor_top", "taylor_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0 backward passes, got {getattr(self, name)}")
        if self.mode == "taylor" and self.target == "every_answer":
            raise ValueError(
                "mode: taylor's Fisher form takes one distribution a row; target 'every_answer' has one a position: use mode exact, or oar_g"
            )
        if self.taylor_top + self.taylor_samples < 1:
            raise ValueError(f"taylor_top, taylor_samples: at least one direction is needed, got {self.taylor_top} and {self.taylor_samples}")
        if self.span < 1:
            raise ValueError(f"span: expected >= 1 consecutive tokens, got {self.span}")
        for name in ("guided_fraction", "calibration_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a fraction in (0, 1], got {getattr(self, name)}")
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
            (`base.max_over_ranks`); every pass is one backbone forward (`LMParts`), the
            extra ones one-token idle forwards. guided_approx first runs OAR-G's steps.
    """
    if config.mode == "taylor":
        return taylor.attribute(model, batch, segments, config, rows, sync_passes)
    parts = lm_parts(model)
    B, R = batch.input_ids.shape[0], batch.response_length
    device = batch.input_ids.device
    index = attributed_rows(batch, segments, rows)  # [B']
    sub, sub_segments = batch.select(index), segments.select(index)
    # guided_approx: OAR-G's steps first, on every rank (a rank without rows runs dummies)
    guide = _guide(model, sub, sub_segments, config, sync_passes) if config.mode == "guided_approx" else None  # [B', R]
    if index.numel() == 0:
        with eval_mode(model):
            for _ in range(passes_to_run(0, sync_passes)):
                parts.idle_forward(device)
        return torch.zeros((B, R), dtype=torch.float32, device=device)
    # clean passes on chunks of rows of similar length, each cut to its own widths
    steps = plan_chunks(prompt_lengths(sub), answer_widths(sub_segments), torch.arange(len(index), device=device), config.max_tokens_per_pass)
    chunks = [Chunk.of(sub, sub_segments, rows_of_chunk, with_answer=True, to_answers=True) for rows_of_chunk in steps]
    span = config.span if config.mode == "span_approx" else 1
    if config.mode == "guided_approx":
        units = _guided_units(guide, sub_segments, config)
    else:
        units = [torch.arange(0, int(end), span, device=device) for end in sub_segments.reasoning_end]
    windows = {}  # row -> its perturbed passes, each recomputing from its first unit to the row's own last column
    for chunk in chunks:
        for within, r in enumerate(chunk.rows.tolist()):
            windows[r] = _windows(units[r], span, chunk.prompt_length, int(chunk.answer.columns_needed[within]), config.max_tokens_per_pass)
    passes = len(chunks) + sum(len(w) for w in windows.values())
    idle = passes_to_run(passes, sync_passes) - passes

    pair_row, pair_token, shifts = [], [], []
    with eval_mode(model):
        for chunk in chunks:  # one chunk's clean key/value cache at a time: memory does not grow with the batch
            with parts.materialized():
                hidden, cache = parts.hidden_states_and_cache(chunk.input_ids, chunk.attention_mask, chunk.position_ids)  # [C, L_c, H]
                clean = compute_target(parts, hidden, chunk.answer, config.target)  # [C, V] or [C]
            del hidden
            P = chunk.prompt_length
            for within, r in enumerate(chunk.rows.tolist()):
                row_cache = copy.deepcopy(cache)  # the row taken out of its chunk's cache once
                row_cache.batch_select_indices(torch.tensor([within], device=device))
                end, length = int(sub_segments.reasoning_end[r]), int(chunk.answer.columns_needed[within])
                for window in windows[r]:  # window: [C'] first positions of runs of `span` tokens
                    start = P + int(window[0])  # positions before `start` keep their clean keys/values
                    count = len(window)
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
                        perturbed = compute_target(
                            parts, hidden, chunk.answer.select(torch.full((count,), within, device=device)).shifted(-start), config.target
                        )
                    shift = target_shift(parts, clean[[within] * count], perturbed, config.target).abs()  # [C']
                    tokens = (window[:, None] + torch.arange(span, device=device)[None, :]).flatten()  # [C' * span]
                    inside = tokens < end
                    shifts.append(shift.repeat_interleave(span)[inside])  # a unit's tokens share its score
                    pair_row.append(torch.full((int(inside.sum()),), r, device=device))
                    pair_token.append(tokens[inside])
            del cache
        for _ in range(idle):  # every pass is one backbone forward: a one-token one keeps step
            parts.idle_forward(device)
    pair_row, pair_token, shifts = torch.cat(pair_row), torch.cat(pair_token), torch.cat(shifts)
    if config.mode == "guided_approx":
        pair_row, pair_token, shifts = _scaled_guide(guide, sub_segments, pair_row, pair_token, shifts, units, config)
    return scatter_scores(B, R, index[pair_row], pair_token, shifts)


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


def _guide(model, batch: ResponseBatch, segments: Segments, config: PerturbationConfig, sync_passes) -> torch.Tensor:
    """[B, R] OAR-G scores that rank the tokens for guided_approx."""
    from oar_verl.core.attribution import gradient

    guide_config = gradient.GradientConfig(target=config.target, seed=config.seed, max_tokens_per_pass=config.max_tokens_per_pass)
    with torch.enable_grad():
        return gradient.attribute(model, batch, segments, guide_config, sync_passes=sync_passes)


def _guided_units(guide: torch.Tensor, segments: Segments, config: PerturbationConfig) -> list[torch.Tensor]:
    """Per row, the sorted positions scored exactly: the top `guided_fraction` by OAR-G and
    a random `calibration_fraction` of the others."""
    generator = torch.Generator().manual_seed(config.seed)
    units = []
    for row, end in enumerate(segments.reasoning_end.tolist()):
        order = guide[row, :end].argsort(descending=True).cpu()
        top = order[: math.ceil(config.guided_fraction * end)]
        rest = order[len(top) :]
        draw = rest[torch.randperm(len(rest), generator=generator)[: math.ceil(config.calibration_fraction * len(rest))]]
        units.append(torch.cat([top, draw]).sort().values.to(guide.device))
    return units


def _scaled_guide(guide, segments, pair_row, pair_token, shifts, units, config):
    """Exact scores where measured; elsewhere OAR-G x a, a fitted per row by least squares
    through the origin on the calibration tokens (on every measured token if there are none)."""
    rows, tokens, values = [pair_row], [pair_token], [shifts]
    for row, end in enumerate(segments.reasoning_end.tolist()):
        measured = torch.zeros(end, dtype=torch.bool, device=guide.device)
        measured[units[row]] = True
        exact = torch.zeros(end, dtype=shifts.dtype, device=guide.device)
        mine = pair_row == row
        exact[pair_token[mine]] = shifts[mine]
        g = guide[row, :end].to(shifts.dtype)
        top = guide[row, :end].argsort(descending=True)[: math.ceil(config.guided_fraction * end)]
        calibration = measured.clone()
        calibration[top] = False
        fit = calibration if bool(calibration.any()) else measured
        denominator = float((g[fit] ** 2).sum())
        scale = float((exact[fit] * g[fit]).sum()) / denominator if denominator > 0 else 0.0
        others = (~measured).nonzero().squeeze(1)
        rows.append(torch.full((len(others),), row, device=guide.device))
        tokens.append(others)
        values.append(scale * g[others])
    return torch.cat(rows), torch.cat(tokens), torch.cat(values)
