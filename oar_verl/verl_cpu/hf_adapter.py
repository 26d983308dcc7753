"""Trainer side of the `hf` rollout (verl's `_ROLLOUT_REGISTRY[("hf", "async")]`): lives in
each actor worker and pushes the trainer's weights to its replica's server every step."""

from __future__ import annotations

import logging
import os

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.utils import ensure_async_iterator

from oar_verl.verl_cpu.hf_replica import server_actor_name
from oar_verl.verl_cpu.hf_server import weights_digest

logger = logging.getLogger(__name__)


class HFServerAdapter(BaseRollout):
    """Weight sync to an `HFRolloutServer`; generation goes to the server directly.

    The replica's first rank (rollout rank 0) sends the full weights; every rank drains
    the weight generator, since gathering sharded parameters is collective. With
    `rollout.engine_kwargs.hf.verify_weight_sync` the sender compares the digest of what it
    sent with the digest of what the server loaded, and raises on a mismatch.
    """

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        replica_size = self.config.tensor_model_parallel_size * self.config.data_parallel_size * self.config.pipeline_model_parallel_size
        self.replica_rank = rank // replica_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % replica_size
        engine_kwargs = (self.config.engine_kwargs or {}).get("hf") or {}
        self.verify_weight_sync = bool(engine_kwargs.get("verify_weight_sync", False))
        self._server = None

    def _server_handle(self):
        if self.rollout_rank != 0:
            return None
        if self._server is None:  # the server starts after the workers: look it up lazily
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        """Weights and caches stay in host memory: nothing to resume."""

    async def release(self) -> None:
        """Weights and caches stay in host memory: nothing to release."""

    @torch.no_grad()
    async def update_weights(self, weights, global_steps: int | None = None, wire_format: str = "named_tensors", **kwargs) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"hf rollout: weight wire format {wire_format!r} is not supported (named_tensors only)")
        server = self._server_handle()
        state_dict = {}
        async for name, tensor in ensure_async_iterator(weights):  # every rank drains the weights (a checkpoint engine's arrive asynchronously)
            if server is not None:
                state_dict[name] = tensor.detach().to("cpu", copy=True).contiguous()
        if server is None:
            return
        loaded = await server.load_weights.remote(state_dict, global_steps)
        if self.verify_weight_sync:
            sent = weights_digest(state_dict.items())
            if sent != loaded:
                raise RuntimeError(f"hf rollout: weight sync mismatch at step {global_steps}: sent {sent}, server holds {loaded}")
            print(f"[oar_verl.hf_rollout] replica {self.replica_rank} step {global_steps}: weights synced, sha256 {sent}", flush=True)
