"""The upstream patches apply to the pinned verl sources, and the plugin takes the
patched path (no runtime shim) on a patched verl."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import verl

PATCHES = sorted((Path(__file__).parents[1] / "patches" / "verl-0.9.1").glob("*.patch"))


@pytest.fixture(scope="module")
def patched_verl(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl-src")
    shutil.copytree(Path(verl.__file__).parent, root / "verl", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for patch in PATCHES:
        result = subprocess.run(["git", "apply", "--check", str(patch)], cwd=root, capture_output=True, text=True)
        assert result.returncode == 0, f"{patch.name} does not apply to verl {verl.__version__}: {result.stderr}"
        subprocess.run(["git", "apply", str(patch)], cwd=root, check=True)
    return root


def test_patches_are_git_format_with_messages():
    assert len(PATCHES) >= 3
    for patch in PATCHES:
        text = patch.read_text()
        assert text.startswith("From ") and "\nSubject: [PATCH" in text
        body = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
        assert len(body.strip().splitlines()) >= 3, f"{patch.name}: the commit message must explain the change"


def test_oar_trains_through_the_patched_hooks(patched_verl, tmp_path):
    """On a patched verl the plugin registers a pre-advantage step, a worker computation
    and an estimator that declares its input: no trainer or worker class is replaced."""
    from oar_verl.quickstart import prepare, read_metrics, run_training, train_command
    from tests.verl_cpu.test_e2e_oar import check_oar_run

    paths = prepare(tmp_path, train_size=64, val_size=16)
    dumps, log, metrics = tmp_path / "dumps", tmp_path / "run.log", tmp_path / "metrics.jsonl"
    command = train_command(paths, tmp_path / "ckpt", estimator="oar_g", steps=2, overrides=[f"algorithm.oar.dump_dir={dumps}"])
    result = run_training(command, metrics, log, env={"PYTHONPATH": str(patched_verl)})
    text = log.read_text()
    assert result.returncode == 0, text[-6000:]
    assert "registered as verl's pre-advantage step (patched verl)" in text
    assert "installed in verl's sync trainer" not in text
    check_oar_run(read_metrics(metrics), dumps, quantile=0.25)
    assert int(torch.load(dumps / "step_1.pt")["path"]) == 1


def test_plugin_uses_the_patched_verl(patched_verl):
    code = (
        "import os; os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29534', RANK='0', WORLD_SIZE='1');"
        "import verl, torch.distributed as d; assert verl.__file__.startswith(%r), verl.__file__;"
        "import verl.utils.distributed as dist, verl.workers.engine_workers as w, verl.workers.engine.fsdp.transformer_impl as t;"
        "from verl.workers.rollout.base import get_rollout_class;"
        "assert dist.default_process_group_backend() == 'cpu:gloo';"
        "assert not getattr(w.initialize_global_process_group_ray, '_oar_cpu_shim', False), 'shim applied on patched verl';"
        "assert not getattr(t.CPUOffloadPolicy, '_oar_cpu_shim', False), 'shim applied on patched verl';"
        "assert get_rollout_class('hf').__name__ == 'HFServerAdapter';"
        "w.initialize_global_process_group_ray(); print('BACKEND', d.get_backend())"
    ) % str(patched_verl)
    import os

    env = {**os.environ, "VERL_PLATFORM": "cpu", "PYTHONPATH": str(patched_verl)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "BACKEND cpu:gloo" in result.stdout
