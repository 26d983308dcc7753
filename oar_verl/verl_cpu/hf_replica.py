"""The `hf` rollout replica (verl's `RolloutReplicaRegistry`): one `HFRolloutServer` actor
per replica, on the node of the replica's first worker."""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutReplica

from oar_verl.verl_cpu.hf_server import HFRolloutServer

NAME = "hf"


def server_actor_name(replica_rank: int, suffix: str = "", role: str = "") -> str:
    """The Ray actor name of a replica's server (the trainer-side adapter looks it up)."""
    return f"{NAME}_server_{role}{replica_rank}_0{suffix}"


class HFReplica(RolloutReplica):
    """A rollout replica served by Hugging Face `generate` (one server; CPU, tiny models)."""

    async def launch_servers(self) -> None:
        if self.nnodes != 1:
            raise ValueError(f"hf rollout: a replica spans one node; got {self.nnodes} (tensor/pipeline/data parallel sizes too large)")
        node_id = ray.get_runtime_context().get_node_id()
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        role = "reward_" if self.is_reward_model else "teacher_" if self.is_teacher_model else ""
        name = server_actor_name(self.replica_rank, self.name_suffix, role)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                num_cpus=0,  # the replica's placement-group bundles already hold its CPUs
                max_concurrency=self.max_concurrency,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # a label: single-turn agent loops talk to the handle
