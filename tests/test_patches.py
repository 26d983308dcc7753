"""The upstream patches apply to verl 0.9.1's sources, the tests they add to verl's tree
pass there together with verl's own CPU tests of the modules they change, and the plugin
takes the patched path (no runtime shim) on a patched verl (`patched_verl`, tests/conftest.py).
OAR training through the patched hooks: `tests/verl_cpu/test_e2e_grpo.py` (its resumed run)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.patched_verl import PATCHES, SERIES

pytestmark = pytest.mark.e2e

MAIN_PATCHES = sorted((SERIES / "verl-main").glob("*.patch"))  # checked against verl's main by hand (patches/README.md)


def changed_files(patch: Path) -> list[str]:
    return re.findall(r"^\+\+\+ b/(\S+)$", patch.read_text(), flags=re.MULTILINE)


def verl_tests_touched(root: Path) -> list[str]:
    """verl's own CPU tests that import a module the series changes."""
    modules = {path.removesuffix(".py").replace("/", ".") for patch in PATCHES for path in changed_files(patch)}
    modules = {module for module in modules if module.startswith("verl.")}
    added = {path for patch in PATCHES for path in changed_files(patch)}
    touched = []
    for test in sorted((root / "tests").rglob("*_on_cpu.py")):
        relative = str(test.relative_to(root))
        if relative not in added and any(module in test.read_text() for module in modules):
            touched.append(relative)
    return touched


def test_each_patch_carries_verl_style_cpu_tests():
    for patch in PATCHES + MAIN_PATCHES:
        files = changed_files(patch)
        tests = [path for path in files if path.startswith("tests/") and path.endswith("_on_cpu.py")]
        assert tests, f"{patch.name} adds no tests/**/*_on_cpu.py"
        assert any(path.startswith("verl/") for path in files), f"{patch.name} changes no verl code"


def test_patched_verl_passes_the_new_tests_and_its_own(patched_verl):
    """The patches' tests and verl's CPU tests of the changed modules, run in the patched
    tree (verl's layout: pytest from the repository root)."""
    added = sorted({path for patch in PATCHES for path in changed_files(patch) if path.startswith("tests/")})
    touched = verl_tests_touched(patched_verl)
    assert "tests/trainer/ppo/test_core_algos_on_cpu.py" in touched
    env = {**os.environ, "PYTHONPATH": str(patched_verl)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning", *added, *touched]
    result = subprocess.run(command, cwd=patched_verl, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "skipped" not in summary, summary


def added_file(patch: Path, path: str) -> str:
    """The content of a file the patch creates."""
    text = patch.read_text()
    hunk = text.split(f"+++ b/{path}\n", 1)[1].split("\ndiff --git", 1)[0].split("\n-- \n", 1)[0]
    return "\n".join(line[1:] for line in hunk.splitlines() if line.startswith("+"))


def test_the_main_series_carries_the_same_patches_and_tests():
    assert [patch.name for patch in MAIN_PATCHES] == [patch.name for patch in PATCHES]
    for pinned, main in zip(PATCHES, MAIN_PATCHES):
        tests = [path for path in changed_files(pinned) if path.startswith("tests/")]
        assert tests == [path for path in changed_files(main) if path.startswith("tests/")], main.name
        for path in tests:
            assert "\ndef test_" in added_file(pinned, path), f"{pinned.name}: {path} has no test"
            assert added_file(main, path) == added_file(pinned, path), f"{main.name}: {path} differs from the pinned series"


def test_plugin_uses_the_patched_verl(patched_verl):
    code = (  # noqa: UP031 (the code string takes verl's path as a repr)
        "import os; os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='0', RANK='0', WORLD_SIZE='1');"
        "import verl, torch.distributed as d; assert verl.__file__.startswith(%r), verl.__file__;"
        "from oar_verl.integration.verl_hooks import is_hooked;"
        "import verl.utils.distributed as dist, verl.workers.engine_workers as w, verl.workers.engine.fsdp.transformer_impl as t;"
        "from verl.workers.rollout.base import get_rollout_class;"
        "assert dist.default_process_group_backend() == 'cpu:gloo';"
        "assert not is_hooked(w.initialize_global_process_group_ray), 'shim applied on patched verl';"
        "assert not is_hooked(t.CPUOffloadPolicy), 'shim applied on patched verl';"
        "import verl.utils.fsdp_utils as f; assert not is_hooked(f.fsdp2_sharded_save_to_cpu), 'shim applied on patched verl';"
        "assert get_rollout_class('hf').__name__ == 'HFServerAdapter';"
        "from oar_verl.verl_cpu import vllm_distribution as vd; import importlib.util as u;"
        "assert u.find_spec('vllm') is None or (not vd.alias_needed() and not vd.installed('vllm')), 'alias installed on patched verl';"
        "import verl.third_party.vllm as v; assert u.find_spec('vllm') is None or v.vllm_version.endswith('+cpu'), v.vllm_version;"
        "w.initialize_global_process_group_ray(); print('BACKEND', d.get_backend())"
    ) % str(patched_verl)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "PYTHONPATH": str(patched_verl)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "BACKEND cpu:gloo" in result.stdout
