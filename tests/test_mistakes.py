"""The mistakes users make, each refused before anything expensive with one message naming
the key (or file and row) and exit status 2: one test per row of `docs/mistakes.md`, and
every valid `algorithm.oar.*` setting passing the dry run through a stock recipe and through
`oar_verl.main_ppo`'s CPU preset."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oar_verl import cli, dry_run, quickstart
from oar_verl.integration.config import OARSettings
from tests.fixtures.models import QUICKSTART_MODEL
from tests.test_recipes import ROOT, data_dir, recipe_overrides  # noqa: F401  (data_dir: the prepared recipe data)

RECIPE = ROOT / "recipes" / "gsm8k_qwen2.5-0.5b.sh"
MISTAKES_DOC = ROOT / "docs" / "mistakes.md"


def recipe(data, *extra, estimator="oar_g", **env):
    """The 0.5B GSM8K recipe's arguments to verl's entry point, with `extra` appended."""
    return recipe_overrides(RECIPE, *extra, ESTIMATOR=estimator, DATA_DIR=str(data), **env)


def preset(data, *extra, estimator="oar_g"):
    """`oar_verl.main_ppo --config-name cpu` arguments on the prepared GSM8K files and the
    tests' small model."""
    files = data / "gsm8k"
    return ["--config-name", "cpu", f"data.train_files={files / 'train.parquet'}", f"data.val_files={files / 'test.parquet'}",
            f"actor_rollout_ref.model.path={QUICKSTART_MODEL}", f"algorithm.adv_estimator={estimator}", *extra]  # fmt: skip


def no_model_dir(tmp):
    folder = tmp / "checkpoint"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"")
    return folder


def rows_without_ground_truth(data, tmp):
    rows = pd.read_parquet(data / "gsm8k" / "train.parquet")
    rows["reward_model"] = [{"style": "rule"} for _ in range(len(rows))]
    rows.to_parquet(tmp / "train.parquet")
    return tmp / "train.parquet"


def not_parquet(tmp):
    (tmp / "train.parquet").write_text("question,answer\n1+1,2\n")  # a CSV file named .parquet
    return tmp / "train.parquet"


def bad_jsonl(tmp):
    path = tmp / "rollouts.jsonl"
    path.write_text('{"prompt": "q", "response": "a\\n#### 1"}\n{"prompt": "q", response: 1}\n')
    return path


EXPLAIN = ["explain", "--model", str(QUICKSTART_MODEL), "--out", "page.html"]

# (row id: the same in docs/mistakes.md, entry point, its arguments given the prepared data and a
# temporary folder, what the message must say)
MISTAKES = [
    (
        "estimator-dash",
        "dry_run",
        lambda d, t: recipe(d, estimator="oar-g"),
        "algorithm.adv_estimator=oar-g: no such advantage estimator (did you mean 'oar_g'?)",
    ),
    ("estimator-case", "dry_run", lambda d, t: recipe(d, estimator="OAR_G"), "no such advantage estimator (did you mean 'oar_g'?)"),
    (
        "estimator-quickstart",
        "quickstart",
        lambda d, t: ["--estimator", "oar-p"],
        "--estimator oar-p: no such advantage estimator (did you mean 'oar_p'?)",
    ),
    ("model-missing", "dry_run", lambda d, t: recipe(d, f"actor_rollout_ref.model.path={t / 'qwen'}"), "actor_rollout_ref.model.path="),
    ("model-not-hf", "dry_run", lambda d, t: recipe(d, f"actor_rollout_ref.model.path={no_model_dir(t)}"), "no config.json in this directory"),
    ("tokenizer-missing", "dry_run", lambda d, t: recipe(d, f"+actor_rollout_ref.model.tokenizer_path={t}"), "no tokenizer files"),
    (
        "oar-key-without-plus",
        "dry_run",
        lambda d, t: recipe(d, "algorithm.oar.quantile=0.3"),
        "write +algorithm.oar.quantile=0.3 with verl's entry point",
    ),
    ("oar-key-typo", "dry_run", lambda d, t: recipe(d, "+algorithm.oar.quantil=0.3"), "unknown setting(s) 'quantil' (did you mean 'quantile'?)"),
    ("oar-key-typo-preset", "dry_run", lambda d, t: preset(d, "algorithm.oar.quantil=0.3"), "algorithm.oar.quantil (did you mean 'quantile'?)"),
    ("oar-value-range", "dry_run", lambda d, t: recipe(d, "+algorithm.oar.quantile=2"), "algorithm.oar.quantile: expected a value in (0, 1), got 2"),
    (
        "oar-value-type",
        "dry_run",
        lambda d, t: recipe(d, "+algorithm.oar.quantile=abc"),
        "algorithm.oar.quantile: expected a number, got 'abc' (str)",
    ),
    (
        "oar-value-type-preset",
        "dry_run",
        lambda d, t: preset(d, "algorithm.oar.seed=first"),
        "algorithm.oar.seed=first: expected an integer (the default is 0)",
    ),
    (
        "verl-key-typo",
        "dry_run",
        lambda d, t: recipe(d, "actor_rollout_ref.actor.ppo_mini_batch=16"),
        "(did you mean 'ppo_mini_batch_size'?) under actor_rollout_ref.actor",
    ),
    ("verl-value-type", "dry_run", lambda d, t: recipe(d, "trainer.nnodes=one"), "trainer.nnodes=one: expected an integer (the default is 1)"),
    ("hydra-quoting", "dry_run", lambda d, t: recipe(d, "+algorithm.oar.answer_pattern=#### (?P<answer>[0-9]+)"), "cannot parse an override"),
    (
        "target-typo",
        "dry_run",
        lambda d, t: recipe(d, "+algorithm.oar.target=answer-mean"),
        "unknown target 'answer-mean' (did you mean 'answer_mean'?)",
    ),
    (
        "mode-typo",
        "dry_run",
        lambda d, t: recipe(d, "+algorithm.oar.perturbation_mode=taylr", estimator="oar_p"),
        "unknown OAR-P mode 'taylr' (did you mean 'taylor'?)",
    ),
    ("pattern-name-typo", "dry_run", lambda d, t: recipe(d, "+algorithm.oar.answer_pattern=gsm"), "(did you mean 'gsm8k'?)"),
    ("pattern-misses-data", "dry_run", lambda d, t: recipe(d, "+algorithm.oar.answer_pattern=boxed"), "set algorithm.oar.answer_pattern=gsm8k"),
    ("data-not-prepared", "dry_run", lambda d, t: recipe(t), "no such file (recipes/prepare_data.py writes the recipes' data)"),
    (
        "data-no-ground-truth",
        "dry_run",
        lambda d, t: preset(d, f"data.train_files={rows_without_ground_truth(d, t)}"),
        "row 0: no reward_model.ground_truth",
    ),
    (
        "one-sample-a-prompt",
        "dry_run",
        lambda d, t: recipe(d, "actor_rollout_ref.rollout.n=1"),
        "actor_rollout_ref.rollout.n=1: oar_g keeps GRPO's group baseline",
    ),
    ("gpu-setting-on-cpu", "dry_run", lambda d, t: preset(d, "actor_rollout_ref.rollout.name=sglang"), "actor_rollout_ref.rollout.name=sglang"),
    ("config-name-typo", "dry_run", lambda d, t: ["--config-name", "cpu-megatron", *preset(d)[2:]], "--config-name cpu-megatron: no such config"),
    ("legacy-trainer", "dry_run", lambda d, t: recipe(d, "trainer.use_v1=false"), "trainer.use_v1=False"),
    (
        "fp16-attribution",
        "dry_run",
        lambda d, t: recipe(d, "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp16"),
        "fp16 gradients of the attribution objective underflow",
    ),
    ("fused-kernels", "dry_run", lambda d, t: recipe(d, "actor_rollout_ref.model.use_fused_kernels=true"), "use_fused_kernels=True"),
    ("verl-batch-check", "dry_run", lambda d, t: recipe(d, "actor_rollout_ref.actor.ppo_mini_batch_size=1000"), "verl's config check:"),
    (
        "verl-micro-batch",
        "dry_run",
        lambda d, t: preset(d, "actor_rollout_ref.actor.use_dynamic_bsz=false", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null"),
        "verl's config check: [actor] Please set",
    ),
    ("rollout-name-unset", "dry_run", lambda d, t: ["--config-name", "ppo", *preset(d)[2:]], "actor_rollout_ref.rollout.name: no value"),
    ("data-not-parquet", "dry_run", lambda d, t: recipe(d, f"data.train_files={not_parquet(t)}"), "cannot read rows from it (ArrowInvalid"),
    ("oar-section-not-mapping", "dry_run", lambda d, t: recipe(d, "+algorithm.oar=3"), "algorithm.oar: expected a mapping of settings"),
    ("model-path-empty", "dry_run", lambda d, t: recipe(d, "actor_rollout_ref.model.path="), "actor_rollout_ref.model.path: empty"),
    (
        "pass-budget-too-small",
        "dry_run",
        lambda d, t: recipe(d, "+algorithm.oar.max_tokens_per_pass=512"),
        "algorithm.oar.max_tokens_per_pass=512: one pass must hold",
    ),
    (
        "explain-setting-typo",
        "explain",
        lambda d, t: [*EXPLAIN, "--prompt", "q", "--response", "a", "--set", "quantil=0.3"],
        "did you mean quantile?",
    ),
    ("explain-bad-jsonl", "explain", lambda d, t: [*EXPLAIN, "--input", str(bad_jsonl(t))], "rollouts.jsonl:2: not JSON"),
]


def run_entry_point(entry, argv, monkeypatch, capsys):
    """(exit status, stderr) of `entry`'s main in this process; the quickstart must stop
    before it builds anything."""
    monkeypatch.setattr(quickstart, "prepare", lambda *args, **kwargs: pytest.fail("the quickstart built its model before refusing"))
    main = {"dry_run": dry_run.main, "quickstart": quickstart.main, "explain": cli.main}[entry]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


@pytest.mark.parametrize("row, entry, arguments, message", MISTAKES, ids=[row[0] for row in MISTAKES])
def test_a_mistake_is_one_message_and_exit_status_2(row, entry, arguments, message, data_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    status, stderr = run_entry_point(entry, arguments(data_dir, tmp_path), monkeypatch, capsys)
    assert status == 2, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr


def test_the_documented_table_lists_every_tested_mistake():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", MISTAKES_DOC.read_text(), flags=re.MULTILINE)
    assert documented == [row[0] for row in MISTAKES]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["oar_verl.dry_run", "algorithm.adv_estimator=oar-g"],
        ["oar_verl.main_ppo", "--config-name", "cpu", "algorithm.oar.quantil=0.3"],
        ["oar_verl.main_ppo", "--config-name", "cpu", "algorithm.adv_estimator=oar_g", "algorithm.oar.quantile=2"],
        ["oar_verl.quickstart", "--estimator", "oar-g"],
    ],
    ids=["dry_run", "main_ppo-compose", "main_ppo-check", "quickstart"],
)
def test_the_entry_points_stop_without_a_traceback(command, tmp_path):
    """As installed: a separate process, exit status 2, one `error:` line and its details."""
    result = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and re.search(r"^python -m oar_verl\.\w+: error: ", result.stderr, flags=re.MULTILINE), result.stderr[
        -3000:
    ]
    assert "Error executing job with overrides" not in result.stderr


# A valid value of every setting, and the estimator that reads it.
VALID_SETTINGS = {
    "answer_pattern": ("gsm8k", "oar_g"),
    "target": ("answer_logprob", "oar_g"),
    "quantile": (0.3, "oar_g"),
    "beta": (0.5, "oar_g"),
    "min_weight": (0.2, "oar_g"),
    "min_signal": (0.0, "oar_p"),
    "preserve_mass": (False, "oar_g"),
    "noise_std": (0.01, "oar_g"),
    "seed": (7, "oar_g"),
    "fuse_log_probs": (False, "oar_g"),
    "perturbation_id": (3, "oar_p"),
    "perturbation_mode": ("span_approx", "oar_p"),
    "taylor_top": (2, "oar_p"),
    "taylor_samples": (2, "oar_p"),
    "span": (2, "oar_p"),
    "guided_fraction": (0.5, "oar_p"),
    "calibration_fraction": (0.2, "oar_p"),
    "max_tokens_per_pass": (8192, "oar_g"),
    "permute_weights": (True, "oar_g"),
    "oracle": (True, "oar_g"),
    "heatmap_freq": (5, "oar_g"),
    "heatmap_responses": (3, "oar_g"),
    "dump_dir": ("dumps", "oar_g"),
}


def test_the_valid_settings_cover_every_setting():
    assert set(VALID_SETTINGS) == {setting.name for setting in dataclasses.fields(OARSettings)}


def hydra_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(VALID_SETTINGS))
def test_every_valid_setting_passes_the_dry_run(key, data_dir, tmp_path, monkeypatch):  # noqa: F811
    """Through the stock recipe (verl's config: `+algorithm.oar.KEY`) and `oar_verl.main_ppo`'s
    CPU preset (which declares `algorithm.oar`); nothing written in the working directory."""
    monkeypatch.chdir(tmp_path)
    value, estimator = VALID_SETTINGS[key]
    for arguments in (recipe(data_dir, f"+algorithm.oar.{key}={hydra_value(value)}", estimator=estimator),
                      preset(data_dir, f"algorithm.oar.{key}={hydra_value(value)}", estimator=estimator)):  # fmt: skip
        config = dry_run.dry_run(arguments)
        assert config.algorithm.oar[key] == value and config.algorithm.adv_estimator == estimator
    assert list(Path(tmp_path).iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["grpo", "oar_g", "oar_p"])
def test_the_dry_run_passes_every_preset_and_leaves_nothing_behind(estimator, data_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    for name in ("ppo", "cpu", "cpu_megatron", "ppo_megatron"):
        arguments = [*preset(data_dir, estimator=estimator)[2:], "actor_rollout_ref.rollout.n=4"]
        if name.startswith("ppo"):  # the GPU presets leave micro-batches and the rollout engine to the user, as verl's config does
            micro_batches = [
                "actor.ppo_micro_batch_size_per_gpu",
                "rollout.log_prob_micro_batch_size_per_gpu",
                "ref.log_prob_micro_batch_size_per_gpu",
            ]
            arguments += [f"actor_rollout_ref.{key}=4" for key in micro_batches] + ["actor_rollout_ref.rollout.name=vllm"]
        if name == "ppo":
            arguments.append("actor_rollout_ref.actor.strategy=fsdp2")
        dry_run.main(["--config-name", name, *arguments])
        assert capsys.readouterr().out.splitlines()[-1].startswith(f"dry run passed: algorithm.adv_estimator={estimator}"), name
    assert list(Path(tmp_path).iterdir()) == []


def test_an_interpolation_is_not_a_value_of_the_wrong_type():
    from oar_verl.integration.command_line import VERL_CONFIG_DIR, CommandLine, compose_config

    config = compose_config(CommandLine.parse(["--config-name", "cpu", "trainer.n_gpus_per_node=${trainer.nnodes}"], VERL_CONFIG_DIR, "ppo_trainer"))
    assert config.trainer.n_gpus_per_node == config.trainer.nnodes
