"""A checkpoint engine over gloo (verl's `CheckpointEngineRegistry`, backend `gloo`): the
trainer's weights to standalone rollout replicas without NCCL, NIXL, Mooncake or HCCL,
which verl's own engines need and a CPU-only machine lacks. verl's `separate_async`
trainer syncs its standalone replicas through a checkpoint engine (the colocated ones use
`naive`), so the CPU backend needs one for that mode.

Each sync (`CheckpointEngineManager.update_weights`): actor rank 0 opens a TCP store in
`prepare`; it and every rollout worker join a gloo group of their own built on that store
(the processes' default groups, FSDP's among the actors, are left alone); actor rank 0
broadcasts the weights in buckets, each preceded by a header (names, shapes, dtypes,
offsets); the other actor ranks walk the weight generator without sending (gathering a
sharded weight is collective over the actor group). `finalize` drops the group and store.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch
import torch.distributed as dist
from verl.checkpoint_engine.base import CheckpointEngine, CheckpointEngineRegistry
from verl.workers.rollout.utils import ensure_async_iterator

BACKEND = "gloo"
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class TensorSlot:
    """Where one weight lies in a broadcast bucket."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    nbytes: int


@CheckpointEngineRegistry.register(BACKEND)
class GlooCheckpointEngine(CheckpointEngine):
    """Broadcasts named weights from actor rank 0 to the rollout workers over gloo (see the
    module docstring). Buckets hold whole weights, up to `bucket_size` bytes; a larger
    weight travels alone. Memory per side: one bucket (or the largest weight)."""

    def __init__(self, bucket_size: int, is_master: bool = False, **kwargs) -> None:
        self.bucket_size = bucket_size
        self.is_master = is_master
        self.rank = -1
        self._store: dist.TCPStore | None = None
        self._group: dist.ProcessGroup | None = None

    def prepare(self) -> dict:
        """Actor rank 0 opens the sync's TCP store and returns its address."""
        if not self.is_master:
            return {}
        host = ray.util.get_node_ip_address()
        self._store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
        return {"host": host, "port": self._store.port}

    @classmethod
    def build_topology(cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict]) -> tuple[dict, dict]:
        """Actor rank 0 is the group's rank 0, rollout worker i its rank i + 1; the other
        actor ranks (rank -1) stay out."""
        master = metadata[0]
        if "port" not in master:
            raise RuntimeError(f"checkpoint engine {BACKEND}: actor rank 0 returned no store address ({master})")
        world_size = 1 + rollout_world_size
        actor = {
            "rank": [0] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world_size] * actor_wg_world_size,
            "master": [master] * actor_wg_world_size,
        }
        rollout = {"rank": list(range(1, world_size)), "world_size": [world_size] * rollout_world_size, "master": [master] * rollout_world_size}
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master: dict) -> None:
        self.rank = rank
        if rank < 0:
            return
        if self._store is None:
            self._store = dist.TCPStore(master["host"], master["port"], is_master=False, timeout=TIMEOUT)
        self._group = dist.ProcessGroupGloo(self._store, rank, world_size, TIMEOUT)

    def finalize(self) -> None:
        self._group, self._store, self.rank = None, None, -1

    async def send_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None], global_steps: int | None = None) -> dict:
        """Actor rank 0 broadcasts `weights`; the other actor ranks only walk them."""
        if self.rank != 0:
            async for _ in ensure_async_iterator(weights):
                pass
            return {}
        slots, parts, size = [], [], 0
        async for name, tensor in ensure_async_iterator(weights):
            data = tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8)
            if parts and size + data.numel() > self.bucket_size:
                self._broadcast_bucket(slots, parts, last=False)
                slots, parts, size = [], [], 0
            slots.append(TensorSlot(name, tuple(tensor.shape), tensor.dtype, size, data.numel()))
            parts.append(data)
            size += data.numel()
        self._broadcast_bucket(slots, parts, last=True)
        return {}

    async def receive_weights(self, global_steps: int | None = None) -> AsyncGenerator[tuple[str, torch.Tensor], None]:
        """(name, tensor) of each weight actor rank 0 sends, in its order."""
        last = False
        while not last:
            slots, last = pickle.loads(self._broadcast_bytes(None))
            bucket = torch.empty(sum(slot.nbytes for slot in slots), dtype=torch.uint8)  # fresh: the yielded views stay valid
            self._broadcast(bucket)
            for slot in slots:
                yield slot.name, bucket[slot.offset : slot.offset + slot.nbytes].view(slot.dtype).view(slot.shape)

    def _broadcast_bucket(self, slots: list[TensorSlot], parts: list[torch.Tensor], last: bool) -> None:
        self._broadcast_bytes(pickle.dumps((slots, last)))
        self._broadcast(torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8))

    def _broadcast_bytes(self, payload: bytes | None) -> bytes:
        """Broadcasts a byte string from rank 0 (`payload` there, None elsewhere)."""
        length = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        self._broadcast(length)
        data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload is not None else torch.empty(int(length), dtype=torch.uint8)
        self._broadcast(data)
        return data.numpy().tobytes()

    def _broadcast(self, tensor: torch.Tensor) -> None:
        if tensor.numel() == 0:
            return
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self._group.broadcast([tensor], options).wait()
