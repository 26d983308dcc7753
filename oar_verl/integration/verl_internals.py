"""The verl internals oar_verl relies on, and their identity check.

The plugin uses verl's extension points where verl has them (estimator, engine, platform
and rollout registries, the `verl.plugins` entry point), but its OAR step and CPU backend
also subclass, wrap or mirror code that verl does not promise to keep: the v1 trainer's
step pipeline, the actor worker's log-prob method, the FSDP engine's numerics, the
process-group and offload code the CPU shims patch, the Megatron engine's log-prob
numerics and model building. `INTERNALS` names each such function
or class; `TESTED` holds, per verl release the project is tested against, a digest of each
one's syntax tree (`ast.dump`: formatting and comments do not count).

On a tested release nothing is checked. On any other verl, `changed_internals()` compares
the installed code with every tested release's: oar_verl runs (with a warning naming the
tested releases) only if each internal is identical to a tested one, and otherwise refuses
before Ray starts, naming the internals that changed.

    python -m oar_verl.integration.verl_internals [DIR]   # digests of the installed verl, or of DIR/verl/, for TESTED
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
from pathlib import Path

# (module, qualified name) of every internal the plugin depends on.
INTERNALS: tuple[tuple[str, str], ...] = (
    # the v1 trainers' step pipeline, which OARStep extends (trainer.py)
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer.fit"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer.step"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._step_once"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._init_resource_pool_mgr"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._compute_old_log_prob"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._compute_advantage"),
    ("verl.trainer.ppo.v1.trainer_base", "register_trainer"),
    ("verl.trainer.ppo.v1.trainer_sync", "PPOTrainerSync"),
    ("verl.trainer.ppo.v1.trainer_colocate_async", "PPOTrainerColocateAsync"),
    ("verl.trainer.ppo.v1.trainer_separate_async", "PPOTrainerSeparateAsync"),
    ("verl.trainer.ppo.core_algos", "compute_grpo_outcome_advantage"),
    ("verl.workers.utils.padding", "response_to_nested"),
    # the actor worker whose log-prob method fused attribution answers (worker.py)
    ("verl.workers.engine_workers", "ActorRolloutRefWorker.compute_log_prob"),
    ("verl.experimental.separation.engine_workers", "DetachActorWorker"),
    # the FSDP engine attribution runs through (engine_attribution.py): the loss function the
    # log-prob pass is given, how a micro-batch reaches the model and the loss, the passes
    ("verl.workers.engine_workers", "TrainingWorker.infer_batch"),
    ("verl.workers.engine.base", "BaseEngine.infer_batch"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.forward_backward_batch"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.prepare_model_inputs"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.prepare_model_outputs"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.forward_step"),
    # the Megatron engine's numerics fused attribution reproduces there (integration/backends.py)
    ("verl.workers.engine.megatron.transformer_impl", "MegatronEngineWithLMHead._lm_head_logits_processor"),
    ("verl.utils.megatron.tensor_parallel", "vocab_parallel_log_probs_from_logits"),
    ("verl.utils.megatron.tensor_parallel", "vocab_parallel_entropy"),
    # how verl's Megatron engine builds its model (verl_cpu/megatron.py builds the same one for tests and benchmarks)
    ("verl.utils.megatron_utils", "make_megatron_module"),
    # the launch path the settings check runs in (main_ppo.py, plugin.py)
    ("verl.trainer.main_ppo", "main"),
    ("verl.utils.config", "validate_config"),
    # what the CPU backend's shims patch (integration/verl_hooks.py)
    ("verl.utils.distributed", "initialize_global_process_group_ray"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_fsdp_module"),
    ("verl.workers.engine.fsdp.transformer_impl", "_scale_logits_by_temperature"),
    ("verl.utils.fsdp_utils", "fsdp2_sharded_save_to_cpu"),
    ("verl.single_controller.ray.base", "RayWorkerGroup.__init__"),
    ("verl.single_controller.ray.base", "get_master_addr_port"),
    # the checkpoint-engine interface the CPU backend's gloo engine implements (verl_cpu/checkpoint_engine.py)
    ("verl.checkpoint_engine.base", "CheckpointEngine"),
    ("verl.checkpoint_engine.base", "CheckpointEngineManager.update_weights"),
)

# ast digests per tested verl release (`python -m oar_verl.integration.verl_internals` prints them).
TESTED: dict[str, dict[str, str]] = {
    "0.9.1": {
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer.fit": "f7da3eeba47b0c3a",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer.step": "c2f78564b629ce1a",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._step_once": "b9d72aef23f281b7",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._init_resource_pool_mgr": "b92e1b9e193796fe",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._compute_old_log_prob": "5ca28a6483ca38ec",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._compute_advantage": "1fa06c928f2f2651",
        "verl.trainer.ppo.v1.trainer_base:register_trainer": "1dd5648441c20db9",
        "verl.trainer.ppo.v1.trainer_sync:PPOTrainerSync": "3b4fc146cf8fdd7b",
        "verl.trainer.ppo.v1.trainer_colocate_async:PPOTrainerColocateAsync": "c034bd39ca0bb829",
        "verl.trainer.ppo.v1.trainer_separate_async:PPOTrainerSeparateAsync": "66c1f8331702b99e",
        "verl.trainer.ppo.core_algos:compute_grpo_outcome_advantage": "b7c2547fa196f3d1",
        "verl.workers.utils.padding:response_to_nested": "af8924bb3876a698",
        "verl.workers.engine_workers:ActorRolloutRefWorker.compute_log_prob": "b3745893e925d033",
        "verl.experimental.separation.engine_workers:DetachActorWorker": "f702971cd31fe346",
        "verl.workers.engine_workers:TrainingWorker.infer_batch": "f23cd4d7098eb7ad",
        "verl.workers.engine.base:BaseEngine.infer_batch": "385edf89498f56ef",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngine.forward_backward_batch": "237c0e9c228c8a62",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_inputs": "436b4ccc80e8445a",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_outputs": "fe47e79d4faf569f",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.forward_step": "0c246a287aafd34a",
        "verl.workers.engine.megatron.transformer_impl:MegatronEngineWithLMHead._lm_head_logits_processor": "008adad999987df1",
        "verl.utils.megatron.tensor_parallel:vocab_parallel_log_probs_from_logits": "991ecfd5a480261a",
        "verl.utils.megatron.tensor_parallel:vocab_parallel_entropy": "33a6f18c85676379",
        "verl.utils.megatron_utils:make_megatron_module": "deb7353282037d62",
        "verl.trainer.main_ppo:main": "60ed801d4a618a71",
        "verl.utils.config:validate_config": "6457f0b9ba0ac2b7",
        "verl.utils.distributed:initialize_global_process_group_ray": "31347938cf9dfe16",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngine._build_fsdp_module": "97473e030fe6f909",
        "verl.workers.engine.fsdp.transformer_impl:_scale_logits_by_temperature": "f5e300bf85069fa0",
        "verl.utils.fsdp_utils:fsdp2_sharded_save_to_cpu": "c6527c5537a36102",
        "verl.single_controller.ray.base:RayWorkerGroup.__init__": "c093e2f77e876543",
        "verl.single_controller.ray.base:get_master_addr_port": "de02aed1e05ec173",
        "verl.checkpoint_engine.base:CheckpointEngine": "b688d51b35d4140d",
        "verl.checkpoint_engine.base:CheckpointEngineManager.update_weights": "375a3080630aaff8",
    },
}


def _key(module: str, qualname: str) -> str:
    return f"{module}:{qualname}"


def _node(tree: ast.Module, qualname: str) -> ast.AST | None:
    node: ast.AST = tree
    for name in qualname.split("."):
        found = [
            child
            for child in ast.iter_child_nodes(node)
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == name
        ]
        if not found:
            return None
        node = found[-1]  # the last definition wins, as at import
    return node


def digest_of(source: str, qualname: str) -> str | None:
    """sha256 (16 hex digits) of `qualname`'s syntax tree in `source`; None if absent."""
    node = _node(ast.parse(source), qualname)
    return None if node is None else hashlib.sha256(ast.dump(node, include_attributes=False).encode()).hexdigest()[:16]


def _module_file(module: str, root: Path | None) -> Path | None:
    if root is not None:
        path = root.joinpath(*module.split("."))
        return path.with_suffix(".py") if path.with_suffix(".py").exists() else None
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin else None


def digests(root: Path | None = None) -> dict[str, str | None]:
    """Digest of every internal, read from the source files of the installed verl (found by
    `importlib.util.find_spec`, which imports the parent packages), or from `root`/verl/
    (e.g. an unpacked wheel; nothing imported)."""
    result = {}
    for module, qualname in INTERNALS:
        path = _module_file(module, root)
        result[_key(module, qualname)] = digest_of(path.read_text(), qualname) if path is not None else None
    return result


def is_tested_code(module: str, qualname: str) -> bool:
    """True when the installed `module.qualname` is, syntax tree for syntax tree, a tested
    release's (e.g. verl 0.9.1's own, before an upstream fix changed it)."""
    path = _module_file(module, None)
    installed = digest_of(path.read_text(), qualname) if path is not None else None
    return installed is not None and any(release.get(_key(module, qualname)) == installed for release in TESTED.values())


def changed_internals(installed: dict[str, str | None] | None = None) -> list[str]:
    """The internals whose installed code matches no tested release's, by name."""
    installed = digests() if installed is None else installed
    return [name for name, value in installed.items() if value is None or all(release.get(name) != value for release in TESTED.values())]


def support_problem(version: str) -> tuple[str | None, str | None]:
    """(error, warning) for running oar_verl on verl `version`: both None on a tested release;
    an error naming the changed internals; or a warning that the release is untested but
    every internal is identical to a tested release's."""
    tested = ", ".join(sorted(TESTED))
    if version in TESTED:
        return None, None
    changed = changed_internals()
    if changed:
        return (f"verl {version} is not a release oar_verl is tested against ({tested}), and internals it relies on differ from "
                f"every tested release's: {', '.join(changed)}"), None  # fmt: skip
    return None, f"verl {version} is untested (tested: {tested}); every verl internal oar_verl relies on is identical to a tested release's"


def main(argv: list[str] | None = None) -> None:
    """Prints the digests of every internal as JSON, the form of a `TESTED` entry."""
    parser = argparse.ArgumentParser(prog="python -m oar_verl.integration.verl_internals",
                                     description="Digests of the verl internals oar_verl relies on, as JSON, for `TESTED`.")  # fmt: skip
    parser.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                        help="read DIR/verl/ (e.g. an unpacked wheel; nothing imported) (default: the installed verl)")  # fmt: skip
    args = parser.parse_args(argv)
    print(json.dumps(digests(args.dir), indent=1))


if __name__ == "__main__":
    main()
