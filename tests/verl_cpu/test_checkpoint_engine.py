"""The gloo checkpoint engine (`oar_verl.verl_cpu.checkpoint_engine`) in the order verl's
`CheckpointEngineManager` drives it: 2 actor processes with a default group of their own
(as FSDP's) whose weight generator is collective over it, 2 rollout workers; buckets
smaller than some weights; two syncs in a row."""

import asyncio

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from oar_verl.verl_cpu.checkpoint_engine import GlooCheckpointEngine

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


def actor(rank: int, port: int, inbox, prepared, _received) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
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

        async def receive():
            return [(name, tensor.clone()) for name, tensor in [item async for item in engine.receive_weights(global_steps=version)]]

        received.put((version, asyncio.run(receive())))
        engine.finalize()


def test_weights_arrive_whole_and_in_order_at_every_rollout_worker():
    free_port = 29740  # the actors' default group (the tests' torchrun groups use 29702-29723)
    context = mp.get_context("spawn")
    prepared, received = context.Queue(), context.Queue()
    inboxes = [context.Queue() for _ in range(4)]
    processes = [context.Process(target=actor, args=(rank, free_port, inboxes[rank], prepared, received)) for rank in range(2)]
    processes += [context.Process(target=rollout, args=(rank, inboxes[2 + rank], prepared, received)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        for version in (1, 2):
            metadata = [None] * 4
            for _ in range(4):
                slot, meta = prepared.get(timeout=120)
                metadata[slot] = meta
            actor_kwargs, rollout_kwargs = GlooCheckpointEngine.build_topology(2, 2, metadata)
            for slot, kwargs in enumerate([actor_kwargs] * 2 + [rollout_kwargs] * 2):
                index = slot if slot < 2 else slot - 2
                inboxes[slot].put({key: values[index] for key, values in kwargs.items()})
            expected = list(weights(version).items())
            for _ in range(2):
                received_version, tensors = received.get(timeout=120)
                assert received_version == version
                assert [name for name, _ in tensors] == [name for name, _ in expected]
                for (_, got), (name, want) in zip(tensors, expected):
                    assert got.dtype == want.dtype and torch.equal(got, want), name
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
