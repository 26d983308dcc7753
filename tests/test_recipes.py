"""The recipes: data preparation on local fixtures in the hub's format, and a dry run of
every recipe and estimator (verl's full configuration composes, verl's and OAR's checks
pass) that fails when a recipe drifts from verl 0.9.1's config schema."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oar_verl.dry_run import dry_run, summary
from recipes.math_sets import SOURCES, DatasetError, prepare, to_verl_rows
from recipes.rewards import compute_score

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "hub"
LOCAL = {
    "gsm8k_train": "gsm8k",
    "gsm8k_test": "gsm8k",
    "math_train": "math_lighteval",
    "math500": "math500",
    "aime2024": "aime_2024",
    "amc2023": "amc23",
}
RECIPES = sorted((ROOT / "recipes").glob("*.sh"))


def environment(**extra):
    """The recipes call `python3`: this interpreter's, with oar_verl and verl installed."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "VERL_MAIN": f"{sys.executable} -m oar_verl.dry_run", **extra}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    local = [f"{name}={FIXTURES / folder}" for name, folder in LOCAL.items()]
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "prepare_data.py"), "--out", str(out), "--local", *local],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_prepared_rows_follow_verls_layout(data_dir):
    gsm8k = pd.read_parquet(data_dir / "gsm8k" / "test.parquet")
    assert list(gsm8k.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert [r["ground_truth"] for r in gsm8k.reward_model] == ["120", "36", "1800"]  # "1,800" -> "1800"
    assert set(gsm8k.data_source) == {"openai/gsm8k"} and gsm8k.prompt[0][0]["content"].endswith('output the final answer after "####".')
    math = pd.read_parquet(data_dir / "math" / "train.parquet")
    assert [r["ground_truth"] for r in math.reward_model] == ["23", "5", "\\frac{3}{4}", "540"]
    assert "\\boxed{}" in math.prompt[0][0]["content"] and math.extra_info[0]["solution"].endswith("\\boxed{23}$.")
    aime = pd.read_parquet(data_dir / "aime2024" / "test.parquet")
    amc = pd.read_parquet(data_dir / "amc2023" / "test.parquet")
    assert [r["ground_truth"] for r in aime.reward_model] == ["47", "401"] and [r["ground_truth"] for r in amc.reward_model] == ["31", "12"]
    assert set(aime.data_source) == {"aime2024"} and set(amc.data_source) == {"amc2023"}


def test_bad_datasets_are_named(tmp_path):
    with pytest.raises(
        DatasetError, match=r"gsm8k_train \(openai/gsm8k, train\) row 1: no ground-truth answer: expected a solution ending in '#### <number>'"
    ):
        to_verl_rows("gsm8k_train", [{"question": "q", "answer": "1\n#### 1"}, {"question": "q", "answer": "no marker"}], "train")
    with pytest.raises(DatasetError, match=r"math500 .* row 0: no problem in column 'problem'"):
        to_verl_rows("math500", [{"question": "q", "answer": "1"}], "test")
    with pytest.raises(DatasetError, match="does not exist"):
        prepare("math500", tmp_path, local_path=tmp_path / "missing")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q?", "answer": 3.0}) + "\n")
    written = prepare("amc2023", tmp_path / "out", local_path=tmp_path / "rows.jsonl")
    assert pd.read_parquet(written).reward_model[0]["ground_truth"] == "3"
    assert set(SOURCES) == set(LOCAL)


def test_reward_routing_scores_every_recipe_source():
    assert compute_score("openai/gsm8k", "so 29\n#### 29", "29") == 1.0
    assert compute_score("openai/gsm8k", "so 28\n#### 28", "29") == 0.0
    assert compute_score("HuggingFaceH4/MATH-500", "thus \\boxed{\\frac{3}{4}}", "\\frac{3}{4}") == 1.0
    assert compute_score("aime2024", "the answer is \\boxed{47}", "47") == 1.0
    assert compute_score("aime2024", "Answer: 47", "47") == 0.0  # the prompts ask for \boxed{}
    assert compute_score("amc2023", "\\boxed{31}", "31") == 1.0 and compute_score("amc2023", "\\boxed{30}", "31") == 0.0


# Every recipe with oar_g, and each estimator on one recipe: the scripts set the estimator in
# one key and have no estimator-specific branch, so the other pairs repeat these checks.
# The Megatron recipe runs another configuration (ppo_megatron_trainer): every estimator.
MEGATRON_RECIPE = ROOT / "recipes" / "math_gsm8k_qwen2.5-math-7b_megatron.sh"
DRY_RUNS = [(recipe, "oar_g") for recipe in RECIPES] + [
    (recipe, estimator) for recipe in (ROOT / "recipes" / "gsm8k_qwen2.5-0.5b.sh", MEGATRON_RECIPE) for estimator in ("grpo", "oar_p")
]


def recipe_overrides(recipe: Path, *extra: str, **env: str) -> list[str]:
    """The arguments the recipe passes to verl's entry point (`VERL_MAIN`), as a list."""
    result = subprocess.run(
        ["bash", str(recipe), *extra], env=environment(**env, VERL_MAIN="printf %s\\0"), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("\0")[:-1]


@pytest.mark.parametrize("recipe, estimator", DRY_RUNS, ids=[f"{recipe.stem}-{estimator}" for recipe, estimator in DRY_RUNS])
def test_recipe_dry_run(recipe, estimator, data_dir):
    config = dry_run(recipe_overrides(recipe, ESTIMATOR=estimator, DATA_DIR=str(data_dir)))
    assert config.algorithm.adv_estimator == estimator and summary(config).startswith(f"dry run passed: algorithm.adv_estimator={estimator}")


def test_megatron_recipe_is_megatron_and_refuses_what_attribution_cannot_honour(data_dir):
    config = dry_run(recipe_overrides(MEGATRON_RECIPE, ESTIMATOR="oar_g", DATA_DIR=str(data_dir)))
    assert config.actor_rollout_ref.actor.strategy == "megatron" and config.actor_rollout_ref.actor.megatron.tensor_model_parallel_size == 4
    for extra, message in (
        (["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2"], "megatron.pipeline_model_parallel_size=2"),
        (["algorithm.oar.target=first_answer"], "algorithm.oar.perturbation_mode=taylor with algorithm.oar.target=first_answer"),
    ):
        with pytest.raises(Exception) as refused:
            dry_run(recipe_overrides(MEGATRON_RECIPE, *extra, ESTIMATOR="oar_p", DATA_DIR=str(data_dir)))
        assert message in str(refused.value), refused.value


@pytest.mark.parametrize("recipe", [ROOT / "recipes" / "math_qwen2.5-math-1.5b.sh", MEGATRON_RECIPE], ids=lambda path: path.stem)
def test_gpu_recipes_run_oar_p_in_taylor_mode(recipe, data_dir):
    """At 3k-token responses exact OAR-P is ~1,000x the step's log-prob pass: the GPU recipes
    run taylor unless OAR_P_MODE says otherwise; other estimators get no OAR-P setting."""
    assert dry_run(recipe_overrides(recipe, ESTIMATOR="oar_p", DATA_DIR=str(data_dir))).algorithm.oar.perturbation_mode == "taylor"
    assert (
        dry_run(recipe_overrides(recipe, ESTIMATOR="oar_p", OAR_P_MODE="guided_approx", DATA_DIR=str(data_dir))).algorithm.oar.perturbation_mode
        == "guided_approx"
    )
    assert "perturbation_mode" not in " ".join(recipe_overrides(recipe, ESTIMATOR="oar_g", DATA_DIR=str(data_dir)))


@pytest.mark.parametrize("estimator", ["grpo", "oar_g"])
def test_the_dry_run_accepts_oar_settings(estimator, data_dir):
    config = dry_run(
        recipe_overrides(ROOT / "recipes" / "gsm8k_qwen2.5-0.5b.sh", "+algorithm.oar.quantile=0.3", ESTIMATOR=estimator, DATA_DIR=str(data_dir))
    )
    assert config.algorithm.oar.quantile == 0.3


def test_a_recipe_runs_through_the_dry_run_entry_point(data_dir):
    """The recipe's own command line, with `python -m oar_verl.dry_run` as verl's entry point."""
    recipe = ROOT / "recipes" / "gsm8k_qwen2.5-0.5b.sh"
    result = subprocess.run(
        ["bash", str(recipe)], env=environment(ESTIMATOR="oar_g", DATA_DIR=str(data_dir)), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "dry run passed: algorithm.adv_estimator=oar_g" in result.stdout


@pytest.mark.parametrize(
    "extra, env, message",
    [
        (["actor_rollout_ref.actor.no_such_key=1"], {}, "no_such_key"),  # drift from verl's schema
        (["+algorithm.oar.quantile=2.0"], {"ESTIMATOR": "oar_g"}, "algorithm.oar.quantile: expected a value in (0, 1), got 2.0"),
        (["+algorithm.oar.answer_pattern=answer_colon"], {"ESTIMATOR": "oar_g"}, "set algorithm.oar.answer_pattern=gsm8k"),
        ([], {"DATA_DIR": "/nowhere"}, "data.train_files[0] (/nowhere/gsm8k/train.parquet): no such file"),
    ],
)
def test_recipe_dry_run_refuses(extra, env, message, data_dir):
    overrides = recipe_overrides(ROOT / "recipes" / "gsm8k_qwen2.5-0.5b.sh", *extra, **{"DATA_DIR": str(data_dir), **env})
    with pytest.raises(Exception) as refused:
        dry_run(overrides)
    assert message in str(refused.value) + str(refused.value.__cause__), refused.value
