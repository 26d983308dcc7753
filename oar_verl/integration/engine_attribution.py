"""OAR-G (every target) and OAR-P's `taylor` mode through verl's own FSDP engine.

The fused old-log-prob request is answered in two parts, both run by the actor engine:

1. **verl's own log-prob pass** (`ActorRolloutRefWorker.compute_log_prob`, unchanged:
   its micro-batching, dynamic batch sizes, remove-padding, precision), so `old_log_probs`
   and `entropy` are verl's by construction. For the distribution targets it also records
   each attributed row's clean target P0: the pass is given a loss function
   (`CleanTargets`, through verl's own `set_loss_fn` and `compute_loss`: `log_prob_pass_loss`)
   that reads the head's raw logits (a forward hook on the output embeddings: temperature 1,
   before verl scales them) at the row's answer positions; the loss function is where the
   engine hands over the micro-batch, whose `oar_*` fields say which rows it holds, whatever
   order dynamic batching chose.
2. **The attribution passes**: `engine.forward_backward_batch` on the attributed rows
   alone, in chunks under `algorithm.oar.max_tokens_per_pass` tokens (each chunk one
   micro-batch, in the layout the engine runs: packed with remove-padding, else padded),
   every data-parallel rank running the same number of chunks (a one-row dummy once its
   own are done), with the parameters frozen (no parameter gradient, hence no gradient
   reduce-scatter), the engine's activation checkpointing on, and two hooks: on the input
   embeddings (the embeddings become a leaf that collects the gradient; OAR-G's noise is
   added on reasoning positions) and on the output embeddings (the raw logits). The loss
   function computes each row's objective from the logits at its answer positions: OAR-G's
   KL(P0 || P(E + noise)) or -phi (answer_logprob, at the clean embeddings), or taylor's
   projections (one backward each; the last is the engine's own backward).

Scores are s_t = |<dJ/dE_t, E_t>| (OAR-G) or taylor's estimate on the reasoning tokens,
as `oar_verl.core.attribution` defines them: the same noise per row (seeded from the
row's index), the same targets (`core.targets`), the same Fisher directions.

Shapes: a request holds B rows, row b with P_b prompt and R_b response tokens; the engine
runs a micro-batch as [1, T, .] (packed, T the sum of the rows' lengths) or [b, L, .]
(padded, L its longest row), a row's tokens first in either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_id

from oar_verl.core.attribution.base import max_over_ranks
from oar_verl.core.attribution.configs import GradientConfig, PerturbationConfig
from oar_verl.core.attribution.gradient import row_noise
from oar_verl.core.attribution.taylor import directions
from oar_verl.core.models.hf import activation_checkpointing
from oar_verl.core.targets import AnswerPositions, compute_target, target_shift

ROW_FIELDS = ("oar_row", "oar_prompt_length", "oar_reasoning_end", "oar_answer_start", "oar_answer_end", "oar_attribute")
"""Per-row fields added to the log-prob request ([B] int64 each): the row's index in the
request, its prompt length, its segments (response-token indices) and whether it is
attributed. They travel with the rows through verl's micro-batching."""


@dataclass(frozen=True)
class RowSpec:
    """One row of the request: `tokens` its prompt + response ids, `prompt_length` P_b,
    reasoning tokens [0, reasoning_end) and answer tokens [answer_start, answer_end) of the
    response."""

    row: int
    tokens: list[int]
    prompt_length: int
    reasoning_end: int
    answer_start: int
    answer_end: int

    @property
    def needed(self) -> list[int]:
        """The tokens the row's target reads: up to its last answer token."""
        return self.tokens[: self.prompt_length + self.answer_end]


def row_fields(prompt_lengths: list[int], segments: torch.Tensor) -> dict[str, torch.Tensor]:
    """The `ROW_FIELDS` of a request from its prompt lengths [B] and `oar_segments` [B, 4]."""
    segments = segments.long().cpu()
    return dict(
        zip(
            ROW_FIELDS,
            (torch.arange(len(prompt_lengths)), torch.tensor(prompt_lengths), segments[:, 0], segments[:, 1], segments[:, 2], segments[:, 3]),
        )
    )


@dataclass(frozen=True)
class HeadOutput:
    """`core.targets`' view of the head's raw output: `logits` upcasts it to float32 and
    applies the model's final logit soft-cap (`final_logit_softcapping`, e.g. Gemma 2),
    which the model's forward applies after the head; the reductions are over the whole
    vocabulary on one rank."""

    softcap: float | None = None
    vocab_parallel = False

    @staticmethod
    def of(module: torch.nn.Module) -> HeadOutput:
        """The view for the model `module` (its config's soft-cap, if any)."""
        return HeadOutput(getattr(getattr(module, "config", None), "final_logit_softcapping", None))

    def logits(self, values: torch.Tensor, upcast: bool = True) -> torch.Tensor:
        values = values.float() if upcast else values
        return torch.tanh(values / self.softcap) * self.softcap if self.softcap else values

    @staticmethod
    def log_softmax(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits, dim=-1)

    @staticmethod
    def vocab_sum(values: torch.Tensor) -> torch.Tensor:
        return values.sum(dim=-1)

    @staticmethod
    def token_values(values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, tokens[..., None])[..., 0]


def _row_starts(micro_batch: TensorDict, packed: bool) -> list[tuple[int, int]]:
    """(batch index, start of the row's first token in its dimension) per row of the micro-batch:
    packed rows start at their offsets in [1, T], padded rows at 0 of their row of [b, L]."""
    offsets = micro_batch["input_ids"].offsets().tolist()
    return [(0, offsets[b]) if packed else (b, 0) for b in range(len(offsets) - 1)]


def answer_positions(micro_batch: TensorDict, packed: bool, b: int) -> tuple[int, torch.Tensor]:
    """(batch index, [A_b] positions) of the logits predicting row b's answer tokens in the
    engine's layout: [1, T, .] packed, [b, L, .] padded."""
    batch_index, start = _row_starts(micro_batch, packed)[b]
    first, last = int(micro_batch["oar_answer_start"][b]), int(micro_batch["oar_answer_end"][b])
    return batch_index, start + int(micro_batch["oar_prompt_length"][b]) + torch.arange(first, last) - 1


def answer_target(
    head: HeadOutput, logits: torch.Tensor, micro_batch: TensorDict, packed: bool, rows: list[int], mode: str, compact: bool = False
) -> torch.Tensor:
    """The target (`core.targets.compute_target`) of the micro-batch's rows `rows` (their
    indices in the micro-batch) from the head's output [1, T, V] or [b, L, V] (`compact`:
    [1, N, V], the answer positions of every row of the micro-batch one after the other):
    [N, V] log-probs ([N, A, V] for `every_answer`) or [N] phi, float32."""
    prompt = micro_batch["oar_prompt_length"].tolist()
    first = micro_batch["oar_answer_start"].tolist()
    last = micro_batch["oar_answer_end"].tolist()
    ids, offsets = micro_batch["input_ids"].values(), micro_batch["input_ids"].offsets().tolist()
    width = max(last[b] - first[b] for b in rows)
    cursor = [0, *torch.tensor([last[b] - first[b] for b in range(len(prompt))]).cumsum(0).tolist()]
    gathered, tokens, mask = [], [], []
    for b in rows:
        length, pad = last[b] - first[b], width - last[b] + first[b]
        if compact:
            row_logits = logits[0, cursor[b] : cursor[b + 1]]
        else:
            batch_index, positions = answer_positions(micro_batch, packed, b)
            row_logits = logits[batch_index, positions.to(logits.device)]
        gathered.append(torch.nn.functional.pad(row_logits, (0, 0, 0, pad)))  # [A, V]
        row_tokens = ids[offsets[b] + prompt[b] + first[b] : offsets[b] + prompt[b] + last[b]]
        tokens.append(torch.nn.functional.pad(row_tokens, (0, pad)))
        mask.append(torch.arange(width, device=logits.device) < length)
    mask = torch.stack(mask)
    answer = AnswerPositions(torch.where(mask, torch.arange(width, device=logits.device)[None], 0), torch.stack(tokens).long(), mask)
    return compute_target(head, torch.stack(gathered), answer, mode)


class HeadLogits:
    """The output head's raw logits of the engine's last forward (hooks on the model's output
    embeddings).

    With `positions` ([N] indices into a packed sequence [1, T]) the head runs on those
    positions alone: a forward pre-hook selects their hidden states, so the model's logits
    are [1, N, V] instead of the whole vocabulary at every token. An attribution pass asks
    verl for no log-probs and no entropy (`distillation_only`, `calculate_entropy=False`), and
    verl's packed path then reads nothing of the logits; the backward runs through the head
    on those N positions only.
    """

    def __init__(self, module: torch.nn.Module, positions: torch.Tensor | None = None):
        self.logits: torch.Tensor | None = None
        self.positions = positions
        head = module.get_output_embeddings()
        self._handles = [head.register_forward_hook(self._keep)]
        if positions is not None:
            self._handles.append(head.register_forward_pre_hook(self._select))

    def _select(self, module, args):
        hidden, *rest = args
        return (hidden[:, self.positions.to(hidden.device)], *rest)

    def _keep(self, module, args, output) -> None:
        self.logits = output

    def take(self) -> torch.Tensor:
        logits, self.logits = self.logits, None
        if logits is None:
            raise RuntimeError("the engine's forward did not run the model's output embeddings (fused kernels, or a head the model bypasses)")
        return logits

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class CleanTargets:
    """The loss function of verl's log-prob pass while it records P0: for each micro-batch,
    the attributed rows' targets from the head's raw logits (`clean[row]`, detached)."""

    def __init__(self, head: HeadLogits, output: HeadOutput, packed: bool, mode: str):
        self.head, self.output, self.packed, self.mode = head, output, packed, mode
        self.clean: dict[int, torch.Tensor] = {}

    def __call__(self, model_output=None, data: TensorDict | None = None, dp_group=None, **_):
        logits = self.head.take()
        rows = [b for b, flag in enumerate(data["oar_attribute"].tolist()) if flag]
        if rows:
            targets = answer_target(self.output, logits, data, self.packed, rows, self.mode).detach()
            for b, target in zip(rows, targets):
                self.clean[int(data["oar_row"][b])] = target
        return torch.ones((), device=logits.device), {}  # what the engine reports for a pass without a loss function


@contextlib.contextmanager
def log_prob_pass_loss(training_worker, data: TensorDict, loss_function) -> Iterator[None]:
    """verl's own extension point for a loss in its log-prob pass: a `TrainingWorker`
    computes its loss function (`set_loss_fn`) there when the request has `compute_loss`
    (verl's SFT evaluation uses it); inside the block `loss_function` is that loss function
    and `data` asks for it, both restored on exit."""
    previous, asked = training_worker.loss_fn, tu.get(data, key="compute_loss", default=True)
    training_worker.set_loss_fn(loss_function)
    tu.assign_non_tensor(data, compute_loss=True)
    try:
        yield
    finally:
        training_worker.set_loss_fn(previous)
        tu.assign_non_tensor(data, compute_loss=asked)


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters without `requires_grad` inside the block (FSDP2 copies the flag to the
    unsharded parameters when it gathers them): a backward gives no parameter gradient and
    FSDP issues no gradient reduce-scatter."""
    parameters = list(module.parameters())
    saved = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, saved):
            p.requires_grad_(flag)


class _InputEmbeddings:
    """Forward hook on the input embeddings during an attribution pass: the output becomes
    a leaf `leaf` [1, T, H] or [b, L, H] that collects dJ/dE, plus the chunk's noise; the
    embedding of the perturbation id (taylor) taken while the weights are gathered."""

    def __init__(self, module: torch.nn.Module, noise_fn, perturbation_id: int | None):
        self.noise_fn, self.perturbation_id = noise_fn, perturbation_id
        self.leaf: torch.Tensor | None = None
        self.replacement: torch.Tensor | None = None
        self._embeddings = module.get_input_embeddings()
        # prepend: before FSDP's post-forward hook reshards the weight
        self._handle = self._embeddings.register_forward_hook(self._leaf, prepend=True)

    def _leaf(self, module, args, output):
        if self.perturbation_id is not None:
            with torch.no_grad():
                index = torch.full((1,), self.perturbation_id, dtype=torch.long, device=output.device)
                self.replacement = torch.nn.functional.embedding(index, module.weight).to(output.dtype)  # [1, H]
        self.leaf = output.detach().requires_grad_(True)
        noise = self.noise_fn(output.shape)
        return self.leaf if noise is None else self.leaf + noise.to(output.dtype)

    def remove(self) -> None:
        self._handle.remove()


def plan_chunks(lengths: list[int], budget: int, packed: bool) -> list[list[int]]:
    """Row indices in chunks, longest first, each chunk's computed tokens (packed: the sum of
    its lengths; padded: rows x the longest) at most `budget`."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if order and lengths[order[0]] > budget:
        raise ValueError(
            f"algorithm.oar.max_tokens_per_pass={budget}: one attribution pass cannot hold a sequence of {lengths[order[0]]} tokens; "
            f"raise it to at least {lengths[order[0]]}"
        )
    chunks, current, tokens = [], [], 0  # tokens: the current chunk's real tokens
    for i in order:
        cost = tokens + lengths[i] if packed else (len(current) + 1) * lengths[(current or [i])[0]]  # longest first: the first is the widest
        if current and cost > budget:
            chunks.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    return chunks + ([current] if current else [])


class EngineAttribution:
    """OAR-G or taylor scores of one request's rows through `engine` (see the module docstring).

    Args:
        engine: verl's FSDP actor engine (`FSDPEngineWithLMHead`).
        config: the method's config (`GradientConfig`, or `PerturbationConfig` in mode taylor).
        packed: the engine's layout (`use_remove_padding`).
        pad_token_id: the id the dummy row is made of.
    """

    def __init__(self, engine, config: GradientConfig | PerturbationConfig, packed: bool, pad_token_id: int):
        if isinstance(config, PerturbationConfig) and config.mode != "taylor":
            raise ValueError(f"perturbation_mode={config.mode}: only taylor runs through the engine's passes")
        self.engine, self.config, self.packed, self.pad = engine, config, packed, pad_token_id
        self.head = HeadOutput.of(engine.module)
        self.taylor = isinstance(config, PerturbationConfig)
        self.needs_clean_pass = not self.taylor and config.target != "answer_logprob"

    @contextlib.contextmanager
    def clean_target_recorder(self) -> Iterator[CleanTargets | None]:
        """The loss function verl's log-prob pass is given to record P0 for OAR-G's
        distribution targets, its head hook installed inside the block (None where the
        attribution passes need no clean target)."""
        if not self.needs_clean_pass:
            yield None
            return
        head = HeadLogits(self.engine.module)
        try:
            yield CleanTargets(head, self.head, self.packed, self.config.target)
        finally:
            head.remove()

    def scores(self, rows: list[RowSpec], batch_size: int, response_length: int, clean: dict[int, torch.Tensor] | None) -> torch.Tensor:
        """[B, R] float32 scores (0 off the attributed rows' reasoning) of a request of B rows
        whose attributed rows are `rows`; `clean` the P0 recorded by verl's pass."""
        chunks = plan_chunks([len(r.needed) for r in rows], self.config.max_tokens_per_pass, self.packed)
        total = max_over_ranks(len(chunks))
        scores = torch.zeros((batch_size, response_length), dtype=torch.float32)
        with self.engine.eval_mode(), frozen(self.engine.module), activation_checkpointing(self.engine.module):
            for k in range(total):
                chunk = [rows[i] for i in chunks[k]] if k < len(chunks) else None
                self._pass(chunk, clean, scores)
        return scores

    # One attribution pass ---------------------------------------------------------------

    def _request(self, chunk: list[RowSpec] | None) -> TensorDict:
        """The chunk as one micro-batch of verl's no-padding layout (a 2-token dummy for None)."""
        sequences = [r.needed for r in chunk] if chunk else [[self.pad, self.pad]]
        specs = chunk or [RowSpec(-1, sequences[0], 1, 0, 1, 2)]
        ids = [torch.tensor(s, dtype=torch.long) for s in sequences]
        fields = {
            "input_ids": torch.nested.as_nested_tensor(ids, layout=torch.jagged),
            "position_ids": torch.nested.as_nested_tensor([torch.arange(len(s)) for s in sequences], layout=torch.jagged),
            "loss_mask": torch.nested.as_nested_tensor([torch.ones(len(s), dtype=torch.long) for s in sequences], layout=torch.jagged),
            "oar_row": torch.tensor([r.row for r in specs]),
            "oar_prompt_length": torch.tensor([r.prompt_length for r in specs]),
            "oar_reasoning_end": torch.tensor([r.reasoning_end for r in specs]),
            "oar_answer_start": torch.tensor([r.answer_start for r in specs]),
            "oar_answer_end": torch.tensor([r.answer_end for r in specs]),
            "oar_attribute": torch.tensor([int(chunk is not None)] * len(specs)),
        }
        data = TensorDict(fields, batch_size=[len(specs)])
        tu.assign_non_tensor(
            data, temperature=1.0, use_remove_padding=self.packed, use_dynamic_bsz=False, micro_batch_size_per_gpu=len(specs),
            use_fused_kernels=False, calculate_entropy=False, distillation_only=True, compute_loss=True, pad_token_id=self.pad,
        )  # fmt: skip
        return data

    @staticmethod
    def _answer_index(data: TensorDict) -> torch.Tensor:
        """[N] the positions of the packed sequence predicting the chunk's answer tokens, row by row."""
        return torch.cat([answer_positions(data, True, b)[1] for b in range(data.batch_size[0])])

    def _noise_fn(self, data: TensorDict):
        """(shape of the embeddings) -> OAR-G's noise on the chunk's reasoning positions, or
        None (taylor, answer_logprob: the clean embeddings)."""
        if self.taylor or self.config.target == "answer_logprob":
            return lambda shape: None
        starts = _row_starts(data, self.packed)
        prompt, end, rows = data["oar_prompt_length"].tolist(), data["oar_reasoning_end"].tolist(), data["oar_row"].tolist()

        def noise(shape: torch.Size) -> torch.Tensor:
            values = torch.zeros(shape, dtype=torch.float32, device=get_device_id())
            for b, (batch_index, start) in enumerate(starts):
                if rows[b] >= 0:  # the row's draws as `core.attribution.gradient.row_noise` makes them
                    row = row_noise(torch.tensor([rows[b]], device=values.device), torch.tensor([end[b]]), end[b], 0, shape[-1], self.config)
                    values[batch_index, start + prompt[b] : start + prompt[b] + end[b]] = row[0]
            return values

        return noise

    def _pass(self, chunk: list[RowSpec] | None, clean: dict[int, torch.Tensor] | None, scores: torch.Tensor) -> None:
        data = self._request(chunk)
        head = HeadLogits(self.engine.module, self._answer_index(data) if self.packed else None)
        embeddings = _InputEmbeddings(self.engine.module, self._noise_fn(data), self.config.perturbation_id if self.taylor else None)
        objective = _Objective(self, head, embeddings, clean, chunk is not None)
        try:
            self.engine.forward_backward_batch(data, objective, forward_only=False)
        finally:
            head.remove()
            embeddings.remove()
        if chunk is None:
            return
        estimate = objective.estimate()  # [1, T] or [b, L]
        for b, (batch_index, start) in enumerate(_row_starts(data, self.packed)):
            spec = chunk[b]
            first = start + spec.prompt_length
            scores[spec.row, : spec.reasoning_end] = estimate[batch_index, first : first + spec.reasoning_end].clamp(min=0.0).cpu()


class _Objective:
    """The engine's loss function in an attribution pass: J summed over the chunk's rows
    (the dummy: zero, through the whole model, so that every rank backpropagates alike);
    `estimate()` after the engine's backward gives the per-position scores."""

    def __init__(self, owner: EngineAttribution, head: HeadLogits, embeddings: _InputEmbeddings, clean, real: bool):
        self.owner, self.head, self.embeddings, self.clean, self.real = owner, head, embeddings, clean, real
        self.form: torch.Tensor | None = None  # taylor's Fisher form over the directions before the last
        self.last_weight = 1.0

    def __call__(self, model_output=None, data: TensorDict | None = None, dp_group=None, **_):
        logits = self.head.take()
        config = self.owner.config
        if self.real:
            rows = list(range(data.batch_size[0]))
            target = answer_target(self.owner.head, logits, data, self.owner.packed, rows, config.target, compact=self.owner.packed)
        else:
            target = logits[..., :1].float().sum() * 0.0
        if self.owner.taylor:
            return self._taylor(target, data), {}
        if not self.real:
            return target, {}
        if config.target == "answer_logprob":
            return -target.sum(), {}  # J = phi0 - phi at the clean embeddings
        clean = torch.stack([self.clean[int(row)] for row in data["oar_row"].tolist()])
        return target_shift(self.owner.head, clean, target, config.target).sum(), {}

    def _taylor(self, target: torch.Tensor, data: TensorDict) -> torch.Tensor:
        """taylor's objective: phi's sum (answer_logprob, one backward: the engine's); else the
        Fisher form's K directions, the first K - 1 backpropagated here (`autograd.grad`,
        the graph kept), the last by the engine's backward."""
        config, leaf = self.owner.config, self.embeddings.leaf
        if config.target == "answer_logprob":
            return target.sum()
        K = config.taylor_top + config.taylor_samples
        if not self.real:
            for _ in range(K - 1):
                torch.autograd.grad(target, leaf, retain_graph=True)
            return target
        rows = data["oar_row"].to(target.device)
        projections, weights = directions(target, rows, config.taylor_top, config.taylor_samples, config.seed)  # [K, N, V], [K]
        change = self._change()
        self.form = torch.zeros(leaf.shape[:-1], dtype=torch.float32, device=leaf.device)
        for k in range(len(weights) - 1):
            (grad,) = torch.autograd.grad((target * projections[k]).sum(), leaf, retain_graph=True)
            self.form += weights[k] * (grad.float() * change).sum(dim=-1).square()
        self.last_weight = weights[-1]
        return (target * projections[-1]).sum()

    def _change(self) -> torch.Tensor:
        """d_t = E(perturbation id) - E_t, [1, T, H] or [b, L, H] float32."""
        return (self.embeddings.replacement - self.embeddings.leaf.detach()).float()

    def estimate(self) -> torch.Tensor:
        """[1, T] or [b, L] float32 scores at every position, from the leaf's gradient."""
        leaf = self.embeddings.leaf
        grad = leaf.grad.float()
        if not self.owner.taylor:
            return (grad * leaf.detach().float()).sum(dim=-1).abs()
        projected = (grad * self._change()).sum(dim=-1)
        if self.form is None:  # answer_logprob: first order
            return projected.abs()
        return 0.5 * (self.form + self.last_weight * projected.square())
