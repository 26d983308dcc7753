"""End to end: fused oar_g on two FSDP2 ranks where one rank has nothing to attribute (the
common case at scale), in verl's stock v1 trainer on the CPU backend."""

import random

import pandas as pd
import pytest
import torch

from oar_verl.tiny.arithmetic import make_problem, verl_row
from oar_verl.tiny.launch import TASK, read_metrics, run_training, train_command
from tests.verl_cpu.test_e2e_oar import check_oar_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, quickstart_inputs):
    return tmp_path_factory.mktemp("idle_rank"), quickstart_inputs


def write_sevens(path, size: int):
    """Problems of the quickstart's task whose answer is 7, in verl's layout."""
    rng, rows = random.Random(7), []
    while len(rows) < size:
        problem = make_problem(rng, **TASK)
        if problem.answer == 7:
            rows.append(verl_row(problem, "train", len(rows)))
    pd.DataFrame(rows).to_parquet(path)
    return path


# A step leaves a rank idle when its group of two is mixed (one answer 7, one not). The shipped
# warm-started model answers these problems right in 0.40 of samples at the rollout's
# temperature 1 (256 samples), so a step is mixed with probability 2 x 0.40 x 0.60 = 0.48
# and 16 steps have none with probability 0.52^16 < 1e-4. (The rollout is seeded and the
# model shipped: on one kind of CPU the run is the same each time.)
IDLE_RANK_STEPS = 16


def test_fused_oar_g_with_a_rank_that_has_nothing_to_attribute(workdir):
    """Fused oar_g on two FSDP2 ranks with an untied model (verl wraps its embeddings and
    head as FSDP modules of their own). A step is one prompt with two responses, one per
    rank; every answer is 7 and the answer pattern finds only `#### 7`, so in a mixed group
    the correct response is attributed on its rank while the other rank has no row to
    attribute and runs dummy steps. The ranks must stay in step and the advantages be
    right."""
    root, paths = workdir
    sevens = write_sevens(root / "sevens.parquet", 2 * IDLE_RANK_STEPS)
    dumps = root / "dump_idle_rank"
    overrides = [
        f"data.train_files={sevens}", f"data.val_files={sevens}", "data.train_batch_size=1", "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "trainer.n_gpus_per_node=2", "ray_kwargs.ray_init.num_gpus=2", f"algorithm.oar.dump_dir={dumps}",
        "algorithm.oar.answer_pattern='#### (?P<answer>7)(?![0-9])'",
    ]  # fmt: skip
    log, metrics_file = root / "idle_rank.log", root / "idle_rank.jsonl"
    command = train_command(paths, root / "ckpt_idle_rank", estimator="oar_g", steps=IDLE_RANK_STEPS, overrides=overrides)
    result = run_training(command, metrics_file, log)
    assert result.returncode == 0, log.read_text()[-6000:]
    metrics = read_metrics(metrics_file)
    idle_steps = []
    for step in range(1, IDLE_RANK_STEPS + 1):
        dump = torch.load(dumps / f"step_{step}.pt")
        assert bool(dump["fused"]) and sorted(dump["dp_rank"].tolist()) == [0, 1]  # one response per rank
        attributed = (dump["segments"][:, 3] > 0) & ~dump["degenerate"]
        ranks_with_rows = set(dump["dp_rank"][attributed].tolist())
        assert metrics[step]["oar/ranks/without_attributed_rows"] == 2 - len(ranks_with_rows)
        if len(ranks_with_rows) == 1:  # one rank attributed, the other ran dummy steps
            idle_steps.append(step)
        assert metrics[step]["training/rollout_probs_diff_max"] < 1e-4  # fused old_log_probs are the model's
    assert idle_steps, f"no step left a rank without rows to attribute: {[metrics[s]['critic/score/mean'] for s in metrics]}"
    check_oar_run(metrics, dumps, quantile=0.25, steps=idle_steps)
