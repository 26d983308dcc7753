"""End to end through verl's own vLLM rollout (vLLM's CPU build, the vLLM stack's venv:
`.ci/run`): GRPO in verl's sync trainer on the CPU backend, vLLM serving the shipped
head-size-32 quickstart model. The rollout must sample with the trainer's weights after
every update: its log-probs equal the actor's recomputation of them (sync mode is on-policy).
The negative control keeps vLLM on the initial weights (a test-only vLLM plugin that
receives verl's later syncs without loading them) and must fail that check."""

import os
from pathlib import Path

import pytest

from oar_verl.tiny.launch import read_metrics, run_training, train_command
from tests.fixtures.models import QUICKSTART_VLLM_MODEL

pytest.importorskip("vllm", reason="vLLM's CPU build: the README's vLLM-stack install line")

pytestmark = pytest.mark.e2e

STALE_WEIGHTS_PLUGIN = Path(__file__).parents[1] / "fixtures" / "vllm_stale_weights"
VLLM = ("actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.actor.optim.lr=3e-3")  # an update that moves the policy well beyond 1e-4
STEPS = 2  # step 2 samples after the first update's weight sync
SYNCED = 1e-4  # max |p_rollout - p_actor| with the trainer's weights (fp32; measured 2e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """GRPO through vLLM, and the same run with vLLM kept on the initial weights: name -> metrics."""
    from oar_verl.tiny.launch import prepare

    root = tmp_path_factory.mktemp("vllm")
    (root / "model").symlink_to(QUICKSTART_VLLM_MODEL, target_is_directory=True)
    paths = prepare(root, train_size=64, val_size=16)
    results = {}
    for name, env in (
        ("synced", {}),
        ("stale_control", {"PYTHONPATH": os.pathsep.join([str(STALE_WEIGHTS_PLUGIN), os.environ.get("PYTHONPATH", "")])}),
    ):
        log, metrics = root / f"{name}.log", root / f"{name}.jsonl"
        command = train_command(paths, root / f"ckpt_{name}", estimator="grpo", steps=STEPS, overrides=list(VLLM))
        result = run_training(command, metrics, log, env=env)
        assert result.returncode == 0, log.read_text()[-6000:]
        results[name] = read_metrics(metrics)
    return results


def test_rollout_samples_with_the_trainers_weights_after_each_update(runs):
    metrics = runs["synced"]
    for step in range(1, STEPS + 1):
        assert metrics[step]["training/rollout_probs_diff_valid"] == 1.0
        assert metrics[step]["training/rollout_probs_diff_max"] < SYNCED, (step, metrics[step]["training/rollout_probs_diff_max"])
        assert 0.0 < metrics[step]["critic/score/mean"] < 1.0 and metrics[step]["actor/grad_norm"] > 0  # the update moved the policy


def test_the_stale_weights_control_fails_the_check(runs):
    metrics = runs["stale_control"]
    assert metrics[1]["training/rollout_probs_diff_max"] < SYNCED  # the initial weights did arrive
    assert metrics[STEPS]["training/rollout_probs_diff_max"] > 100 * SYNCED, metrics[STEPS]["training/rollout_probs_diff_max"]
