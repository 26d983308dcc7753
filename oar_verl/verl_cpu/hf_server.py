"""The `hf` rollout server: token-in / token-out generation with Hugging Face `generate`.

A Ray actor that verl's agent loops call like a vLLM server (`generate(prompt_ids,
sampling_params, request_id, ...) -> TokenOutput`). Concurrent requests are gathered into
batches (left-padded, one `generate` call per group of equal sampling settings), and each
sampled token comes with its log-prob under the same temperature the actor uses to
recompute it: log_softmax(raw logits / T) (T = 1 for greedy decoding). Weights arrive from
the trainer on every step (`load_weights`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.replica import TokenOutput

logger = logging.getLogger(__name__)

BATCH_WAIT_S = 0.02  # how long the first request of a batch waits for others to arrive


def weights_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, float32 bytes) in name order: equal for equal weights whatever
    the dtype they travelled in."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


class HFRolloutServer:
    """One rollout replica's generation server (a Ray actor with async methods)."""

    def __init__(self, config: RolloutConfig, model_config: DictConfig | HFModelConfig, replica_rank: int) -> None:
        if isinstance(model_config, DictConfig):
            model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.config = config
        self.replica_rank = replica_rank
        torch.manual_seed(int(config.seed) + replica_rank)  # sampling seeded by rollout.seed, as vLLM is
        self.model = AutoModelForCausalLM.from_pretrained(model_config.local_path, dtype=torch.float32, attn_implementation="sdpa").eval()
        tokenizer = model_config.tokenizer
        eos = getattr(model_config.generation_config, "eos_token_id", None)
        eos = tokenizer.eos_token_id if eos is None else eos
        self.eos_token_ids = sorted({eos} if isinstance(eos, int) else set(eos))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        self.global_steps = 0
        self._pending: list[tuple[list[int], dict, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()

    # Generation -------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict,
        request_id: str,
        image_data=None,
        video_data=None,
        **kwargs,
    ) -> TokenOutput:
        if image_data or video_data:
            raise ValueError("hf rollout: multimodal inputs are not supported")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(prompt_ids), dict(sampling_params), future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(BATCH_WAIT_S)
            taken, self._pending = self._pending[: self.config.max_num_seqs], self._pending[self.config.max_num_seqs :]
            groups: dict[tuple, list] = {}
            for request in taken:
                groups.setdefault(_sampling_key(request[1]), []).append(request)
            for requests in groups.values():
                try:
                    async with self._model_lock:
                        outputs = await asyncio.to_thread(self._generate_batch, requests)
                except Exception as error:  # every waiting request learns why
                    for _, _, future in requests:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, _, future), output in zip(requests, outputs):
                    if not future.done():
                        future.set_result(output)

    @torch.no_grad()
    def _generate_batch(self, requests: list[tuple[list[int], dict, asyncio.Future]]) -> list[TokenOutput]:
        params = requests[0][1]
        prompts = [prompt for prompt, _, _ in requests]
        limits = [self._max_tokens(prompt, p) for prompt, p, _ in requests]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        stop_ids = sorted(set(self.eos_token_ids) | set(params.get("stop_token_ids") or []))  # agent loops may add stop ids
        temperature = float(params.get("temperature", self.config.temperature))
        greedy = temperature <= 0
        top_k = int(params.get("top_k", self.config.top_k))
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else float(params.get("top_p", self.config.top_p)),
            top_k=0 if greedy or top_k <= 0 else top_k,  # verl's -1 (off) is Hugging Face's 0
            repetition_penalty=float(params.get("repetition_penalty", 1.0)),
            max_new_tokens=max(limits),
            eos_token_id=None if self.config.ignore_eos else stop_ids,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = output.sequences[:, width:]  # [N, S]
        scale = 1.0 if greedy else temperature
        log_probs = torch.stack(
            [torch.log_softmax(step.float() / scale, dim=-1).gather(1, new_tokens[:, [k]])[:, 0] for k, step in enumerate(output.logits)],
            dim=1,
        )  # [N, S], the actor's log-prob of each sampled token at the rollout temperature
        want_log_probs = bool(params.get("logprobs", False))
        results = []
        for row, limit in enumerate(limits):
            tokens = new_tokens[row, :limit].tolist()
            length = len(tokens)
            if not self.config.ignore_eos:
                length = next((k + 1 for k, token in enumerate(tokens) if token in stop_ids), length)
            results.append(
                TokenOutput(
                    token_ids=tokens[:length],
                    log_probs=log_probs[row, :length].tolist() if want_log_probs else None,
                    stop_reason="completed",
                    extra_fields={"global_steps": self.global_steps},
                )
            )
        return results

    def _max_tokens(self, prompt: list[int], params: dict) -> int:
        """As verl's vLLM server: the response budget, shortened for over-long prompts."""
        for key in ("max_tokens", "max_new_tokens"):
            if params.get(key) is not None:
                return int(params[key])
        budget = self.config.prompt_length + self.config.response_length - len(prompt)
        return max(1, min(self.config.response_length, budget))

    # Weights ----------------------------------------------------------------------------

    async def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None = None) -> str:
        """Loads the trainer's full weights; returns the digest of the loaded parameters."""
        async with self._model_lock:
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
            tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
            if unexpected or set(missing) - tied:
                raise ValueError(f"hf rollout: weights do not match the model: missing {missing}, unexpected {unexpected}")
            if global_steps is not None:
                self.global_steps = int(global_steps)
            loaded = dict(self.model.state_dict())
            return weights_digest((name, loaded[name]) for name in state_dict)

    async def weights_digest(self) -> str:
        return weights_digest(self.model.state_dict().items())

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = int(global_steps)

    # Lifecycle: weights and caches stay resident on the CPU --------------------------------

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Nothing was released: weights and caches stay in host memory."""

    async def sleep(self) -> None:
        """Nothing to release: weights stay in host memory, no KV cache persists."""

    async def clear_kv_cache(self) -> None:
        """No KV cache persists between `generate` calls."""

    async def release_kv_cache(self) -> None:
        """No KV cache persists between `generate` calls."""

    async def resume_kv_cache(self) -> None:
        """No KV cache persists between `generate` calls."""

    async def abort_all_requests(self, reject_request: bool = False) -> dict:
        """Requests run to completion (the synchronous trainer never aborts them)."""
        return {}

    async def resume_generation(self) -> None:
        """Generation is never paused (see `abort_all_requests`)."""

    async def start_profile(self, **kwargs) -> None:
        """No rollout profiler."""

    async def stop_profile(self) -> None:
        """No rollout profiler."""


def _sampling_key(params: dict) -> tuple:
    """Requests with equal keys share one `generate` call."""
    keys = ("temperature", "top_p", "top_k", "repetition_penalty", "logprobs")
    return (*(params.get(k) for k in keys), tuple(params.get("stop_token_ids") or ()))
