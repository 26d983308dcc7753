"""Shared fixtures: a byte-level tokenizer and tiny Qwen2 models built locally, and the
training runs' warm-started model and data (built once per session)."""

import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hypothesis import settings

from oar_verl.core import ResponseBatch, Segments
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
from tests.fixtures.models import QUICKSTART_MODEL, QUICKSTART_VLLM_MODEL

# Property tests draw the same examples on every run, so CI's verdict does not depend on the
# draw; `pytest --hypothesis-profile explore` searches with fresh random examples.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer(merges=[("#", "#"), ("##", "##"), ("Ġ", "1"), ("1", "2")])


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_qwen2(len(tokenizer), hidden_size=32, seed=1).eval()


@pytest.fixture(scope="session")
def model64(tokenizer):
    return tiny_qwen2(len(tokenizer), hidden_size=32, seed=2, dtype=torch.float64).eval()


@pytest.fixture
def batch_and_segments(tokenizer):
    """Three rows of different prompt and response lengths (so both paddings occur) plus a
    row without an answer. Segments are set by hand: (reasoning_end, answer_start, answer_end)."""
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13], [14, 15]]
    responses = [
        [20, 21, 22, 23, 24, 25, 30, 31, 40, 41, 50],  # reasoning 6, bridge 2, answer 2, tail 1
        [60, 61, 62, 30, 42, 43, 44],  # reasoning 3, bridge 1, answer 3
        [70, 71, 72, 73, 74, 75, 76, 77, 30, 45],  # reasoning 8, bridge 1, answer 1
        [80, 81, 82],  # no answer
    ]
    batch = ResponseBatch.from_token_lists(prompts, responses, pad_token_id=tokenizer.pad_token_id)
    segments = Segments(
        reasoning_end=torch.tensor([6, 3, 8, 0]),
        answer_start=torch.tensor([8, 4, 9, 0]),
        answer_end=torch.tensor([10, 7, 10, 0]),
        found=torch.tensor([True, True, True, False]),
    )
    return prompts, responses, batch, segments


@pytest.fixture(scope="session")
def quickstart_inputs(tmp_path_factory, worker_id):
    """{"model", "train", "val"} paths: the quickstart's warm-started model (the shipped
    fixture `tests/fixtures/models/quickstart`: a model trained here would differ by CPU)
    and generated GSM8K-format data (64 training, 16 held-out rows), built once per test
    session (also under `pytest -n 2`: the first worker builds it, the other waits and
    reuses it) and only read by the training runs of every test module."""
    return _shared_inputs(tmp_path_factory, worker_id, "quickstart_inputs", QUICKSTART_MODEL)


@pytest.fixture(scope="session")
def vllm_inputs(tmp_path_factory, worker_id):
    """`quickstart_inputs` with the head-size-32 warm start (`tests/fixtures/models/quickstart_vllm`)
    that verl's vLLM rollout serves on the CPU: the runs that roll out through vLLM."""
    return _shared_inputs(tmp_path_factory, worker_id, "vllm_inputs", QUICKSTART_VLLM_MODEL)


def _shared_inputs(tmp_path_factory, worker_id, name: str, model: Path) -> dict[str, Path]:
    if worker_id == "master":  # not distributed
        return _inputs(tmp_path_factory.mktemp(name), model)
    shared = tmp_path_factory.getbasetemp().parent  # this session's directory, common to its workers
    with FileLock(shared / f"{name}.lock"):
        return _inputs(shared / name, model)


def _inputs(workdir: Path, model: Path) -> dict[str, Path]:
    from oar_verl.tiny.launch import prepare

    if not (workdir / "model").exists():
        shutil.copytree(model, workdir / "model")
    return prepare(workdir, train_size=64, val_size=16)


@pytest.fixture(scope="session")
def patched_verl(tmp_path_factory):
    """verl 0.9.1's source tree with the upstream patches applied (put it on PYTHONPATH)."""
    from tests.patched_verl import patched_verl_tree

    return patched_verl_tree(tmp_path_factory.mktemp("verl-src"))


# Modules that launch verl's trainer (minutes each), longest first. They are collected
# first, so that `pytest -n 2 --dist loadfile --no-loadscope-reorder` (the README's test
# command) hands them out before the short modules and the two workers finish together.
LONGEST_MODULES = (
    "verl_cpu/test_e2e_oar.py",
    "verl_cpu/test_e2e_grpo.py",
    "verl_cpu/test_e2e_megatron.py",
    "study/test_smoke.py",
    "verl_cpu/test_e2e_idle_rank.py",
    "test_patches.py",
)


def pytest_collection_modifyitems(config, items):
    order = {name: rank for rank, name in enumerate(LONGEST_MODULES)}
    tests = Path(__file__).parent
    items.sort(key=lambda item: order.get(item.path.relative_to(tests).as_posix(), len(order)))
