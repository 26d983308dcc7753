"""The shipped trained models (`tests/fixtures/models`): the tests load the committed bytes,
and each is what the project's own training code builds, short of its training steps."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from oar_verl.demo import train_pivot_model
from oar_verl.tiny.launch import TASK, VLLM_WARM_START
from oar_verl.tiny.warmstart import warm_start
from tests.fixtures.models import PIVOT_MODEL, QUICKSTART_MODEL, QUICKSTART_VLLM_MODEL, STUDY_SMOKE_MODEL, recorded_digests, weights_digest


@pytest.mark.parametrize("path", [PIVOT_MODEL, QUICKSTART_MODEL, QUICKSTART_VLLM_MODEL, STUDY_SMOKE_MODEL], ids=lambda path: path.name)
def test_the_shipped_weights_are_the_recorded_ones(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert weights_digest(model) == recorded_digests()[path.name]


def test_weights_digest_sees_a_one_bit_change():
    model = AutoModelForCausalLM.from_pretrained(PIVOT_MODEL, dtype=torch.float32)
    before = weights_digest(model)
    with torch.no_grad():
        weight = model.model.norm.weight
        weight.view(torch.int32)[0] ^= 1
    assert weights_digest(model) != before


def settings(path) -> dict:
    """A config file's settings, less the transformers release that wrote it."""
    return {key: value for key, value in json.loads(path.read_text()).items() if key != "transformers_version"}


def same_architecture(built_dir, shipped_dir) -> None:
    """Same config and vocabulary."""
    built, shipped = settings(built_dir / "config.json"), settings(shipped_dir / "config.json")
    assert built == shipped
    assert AutoTokenizer.from_pretrained(built_dir).get_vocab() == AutoTokenizer.from_pretrained(shipped_dir).get_vocab()


def test_the_quickstart_model_is_what_the_warm_start_builds(tmp_path):
    built = warm_start(tmp_path / "model", steps=2, seed=0, **TASK)
    same_architecture(built, QUICKSTART_MODEL)
    generation = settings(built / "generation_config.json")
    assert generation == settings(QUICKSTART_MODEL / "generation_config.json")
    tokenizer = AutoTokenizer.from_pretrained(built)
    assert generation["eos_token_id"] == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]


def test_the_vllm_quickstart_model_is_what_the_warm_start_builds_at_head_size_32(tmp_path):
    """Head size 32 (vLLM's CPU attention takes 32 and up), grouped queries (2 key/value heads
    for 4 heads) and key/value heads that split over Megatron's tensor parallelism 2."""
    from oar_verl.verl_cpu.vllm_settings import CPU_ATTENTION_HEAD_SIZES, model_head_size

    built = warm_start(tmp_path / "model", seed=0, **{**VLLM_WARM_START, "steps": 2, "target_accuracy": None}, **TASK)
    same_architecture(built, QUICKSTART_VLLM_MODEL)
    config = json.loads((QUICKSTART_VLLM_MODEL / "config.json").read_text())
    assert model_head_size(str(QUICKSTART_VLLM_MODEL)) == 32 in CPU_ATTENTION_HEAD_SIZES
    assert config["num_key_value_heads"] == 2 < config["num_attention_heads"]


def test_the_pivot_model_is_what_the_demo_trains(tmp_path):
    model, tokenizer = train_pivot_model(steps=2, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    same_architecture(tmp_path, PIVOT_MODEL)
