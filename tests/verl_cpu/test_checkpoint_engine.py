"""The gloo checkpoint engine (`oar_verl.verl_cpu.checkpoint_engine`) in the order verl's
`CheckpointEngineManager` drives it: 2 actor processes with a default group of their own
(as FSDP's) whose weight generator is collective over it, 2 rollout workers; buckets
smaller than some weights; two syncs in a row."""

import asyncio
import queue
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from oar_verl.verl_cpu.checkpoint_engine import GlooCheckpointEngine

pytestmark = pytest.mark.distributed

BUCKET = 256  # bytes: several weights per bucket, one weight larger than a bucket


def weights(version: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(version)
    return {
        "embed.weight": torch.randn(8, 4, generator=generator),  # 128 bytes
        "layer.bias": torch.randn(3, generator=generator).to(torch.bfloat16),
        "head.weight": torch.randn(20, 5, generator=generator),  # 400 bytes: alone, over the bucket size
        "steps": torch.tensor([version, 7], dtype=torch.int64),
        "norm.weight": torch.randn(16, generator=generator),
    }


def gathered(version: int):
    """The actors' weight generator: each weight costs a collective over the actor group, as
    gathering an FSDP-sharded weight does."""
    for name, tensor in weights(version).items():
        flag = torch.ones(1)
        dist.all_reduce(flag)
        assert flag.item() == dist.get_world_size()
        yield name, tensor


def child(failures, role: str, *args) -> None:
    """A child process running `actor` or `rollout`; a failure goes to the `failures` queue
    with its traceback (the parent shows it) and exits nonzero."""
    try:
        {"actor": actor, "rollout": rollout}[role](*args)
    except BaseException:
        failures.put(traceback.format_exc())
        raise


def actor(rank: int, rendezvous: str, inbox, prepared, _received) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    engine = GlooCheckpointEngine(bucket_size=BUCKET, is_master=rank == 0)
    for version in (1, 2):
        prepared.put((rank, engine.prepare()))
        engine.init_process_group(**inbox.get())
        asyncio.run(engine.send_weights(gathered(version), global_steps=version))
        engine.finalize()
    dist.destroy_process_group()


def rollout(rank: int, inbox, prepared, received) -> None:
    engine = GlooCheckpointEngine(bucket_size=BUCKET)
    for version in (1, 2):
        prepared.put((2 + rank, engine.prepare()))
        engine.init_process_group(**inbox.get())

        async def receive(version=version):
            # plain bytes: tensors put in a queue travel as shared memory whose sender may have exited
            return [(name, str(tensor.dtype), tuple(tensor.shape), tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                    async for name, tensor in engine.receive_weights(global_steps=version)]  # fmt: skip

        received.put((version, asyncio.run(receive())))
        engine.finalize()


def next_message(box, failures, processes, timeout: float = 300.0):
    """The next message in `box`; a child's failure (its traceback) or death fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return box.get(timeout=1.0)
        except queue.Empty:
            if not failures.empty():
                raise AssertionError(f"a process failed:\n{failures.get()}") from None
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise AssertionError(f"a process died with exit code {dead[0]}") from None
    raise AssertionError(f"no message within {timeout} s")


def test_weights_arrive_whole_and_in_order_at_every_rollout_worker(tmp_path):
    context = mp.get_context("spawn")
    prepared, received, failures = context.Queue(), context.Queue(), context.Queue()
    inboxes = [context.Queue() for _ in range(4)]
    rendezvous = str(tmp_path / "actors")  # the actors' default group meets in a file: no port to race for
    processes = [context.Process(target=child, args=(failures, "actor", rank, rendezvous, inboxes[rank], prepared, received)) for rank in range(2)]
    processes += [context.Process(target=child, args=(failures, "rollout", rank, inboxes[2 + rank], prepared, received)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        for version in (1, 2):
            metadata = [None] * 4
            for _ in range(4):
                slot, meta = next_message(prepared, failures, processes)
                metadata[slot] = meta
            actor_kwargs, rollout_kwargs = GlooCheckpointEngine.build_topology(2, 2, metadata)
            for slot, kwargs in enumerate([actor_kwargs] * 2 + [rollout_kwargs] * 2):
                index = slot if slot < 2 else slot - 2
                inboxes[slot].put({key: values[index] for key, values in kwargs.items()})
            expected = list(weights(version).items())
            for _ in range(2):
                received_version, tensors = next_message(received, failures, processes)
                assert received_version == version
                assert [received_weight[0] for received_weight in tensors] == [name for name, _ in expected]
                for (_, dtype, shape, data), (name, want) in zip(tensors, expected):
                    assert dtype == str(want.dtype) and shape == tuple(want.shape), name
                    assert data == want.contiguous().view(-1).view(torch.uint8).numpy().tobytes(), name
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]


def test_topology_keeps_actor_ranks_other_than_0_out():
    actor_kwargs, rollout_kwargs = GlooCheckpointEngine.build_topology(3, 2, [{"host": "h", "port": 1}, {}, {}, {}, {}])
    assert actor_kwargs["rank"] == [0, -1, -1] and rollout_kwargs["rank"] == [1, 2]
    assert set(actor_kwargs["world_size"] + rollout_kwargs["world_size"]) == {3}
