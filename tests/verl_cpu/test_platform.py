import subprocess
import sys

import pytest
import torch

from oar_verl.verl_cpu import device
from oar_verl.verl_cpu.cpu_platform import PlatformCPU

pytestmark = pytest.mark.slow


def run_python(code, **env):
    import os

    environment = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


def test_cpu_platform_is_never_autodetected():
    """On any machine, a CPU platform is chosen only by VERL_PLATFORM=cpu."""
    code = (
        "import verl; from oar_verl.verl_cpu import cpu_platform; from verl.plugin.platform.platform_manager import PlatformRegistry;"
        "PlatformRegistry.register(cpu_platform.NAME)(cpu_platform.PlatformCPU);"
        "from verl.plugin.platform import platform_manager as m; print('DETECTED', m._detect_platform_name())"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "DETECTED cpu" not in result.stdout and "DETECTED" in result.stdout
    assert not PlatformCPU().is_platform_available(use_smi_check=True)


def test_plugin_installs_the_backend_only_on_request():
    code = (
        "import verl; from verl.utils.device import get_device_name, get_nccl_backend;"
        "from verl.workers.rollout.base import _ROLLOUT_REGISTRY;"
        "print('DEVICE', get_device_name(), get_nccl_backend(), ('hf', 'async') in _ROLLOUT_REGISTRY)"
    )
    on_cpu = run_python(code, VERL_PLATFORM="cpu")
    assert "DEVICE cpu gloo True" in on_cpu.stdout, on_cpu.stderr[-3000:]
    default = run_python(code)
    assert "DEVICE cpu" not in default.stdout and "DEVICE" in default.stdout, default.stderr[-3000:]


def test_plugin_failure_is_logged_with_its_cause():
    """verl swallows entry-point errors; ours are logged at ERROR with the cause."""
    code = "import verl, oar_verl.integration.verl_internals as internals; internals.TESTED.clear(); import importlib, oar_verl.plugin as p; importlib.reload(p)"
    result = run_python(code, VERL_PLATFORM="cpu")  # no tested release left: the CPU shims refuse verl
    assert result.returncode != 0
    assert "ERROR oar_verl" in result.stderr and "oar_verl's CPU backend: verl 0.9.1 is not a release oar_verl is tested against" in result.stderr


def test_device_module_answers_verls_calls():
    assert device.current_device() == "cpu"
    assert device.mem_get_info() == (0, 0) and device.max_memory_allocated() == 0
    state = device.get_rng_state()
    first = torch.rand(3)
    device.set_rng_state(state)
    assert torch.equal(first, torch.rand(3))
    for name in ("empty_cache", "synchronize", "ipc_collect", "reset_peak_memory_stats", "set_per_process_memory_fraction"):
        assert callable(getattr(device, name))


def test_process_group_backend_shim():
    """The patched initializer starts a gloo group where verl's string would raise."""
    code = (
        "import os; os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='0', RANK='0', WORLD_SIZE='1');"
        "import verl, torch.distributed as d, verl.workers.engine_workers as w;"
        "w.initialize_global_process_group_ray(); print('BACKEND', d.get_backend())"
    )
    patched = run_python(code, VERL_PLATFORM="cpu")
    assert "BACKEND cpu:gloo" in patched.stdout, patched.stderr[-3000:]


def test_master_port_windows_lie_below_the_ephemeral_range(tmp_path, monkeypatch):
    """Windows are drawn between the floor and the host's ephemeral range, never into it;
    a host whose ephemeral range leaves no room keeps verl's own draw."""
    import random

    from oar_verl.integration import verl_hooks

    ranges = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(verl_hooks, "EPHEMERAL_PORT_RANGE", ranges)
    ranges.write_text("32768\t60999\n")
    draw = random.Random(0)
    windows = [verl_hooks.master_port_window(draw) for _ in range(2000)]
    assert all(first >= verl_hooks.MASTER_PORT_FLOOR and end <= 32768 and end - first == verl_hooks.MASTER_PORT_WINDOW for first, end in windows)
    assert len({first for first, _ in windows}) > 1500  # spread out: two runs rarely share a window
    ranges.write_text(f"{verl_hooks.MASTER_PORT_FLOOR + 10}\t60999\n")
    assert verl_hooks.master_port_window(draw) is None
    ranges.unlink()
    assert verl_hooks.master_port_window(draw) is None


def test_worker_groups_draw_master_ports_below_the_ephemeral_range():
    """Under the CPU backend a worker group given no port gets a window below the host's
    ephemeral range (verl binds its first free port there); a window the caller gives is kept."""
    from oar_verl.integration import verl_hooks

    code = (
        "import verl; from verl.single_controller.ray.base import RayWorkerGroup;"
        "drawn = RayWorkerGroup(resource_pool=None, ray_cls_with_init=None, worker_names=[], worker_handles=[]);"
        "given = RayWorkerGroup(resource_pool=None, ray_cls_with_init=None, worker_names=[], worker_handles=[], master_port_range=[12345, 12350]);"
        "print('DRAWN', *drawn._ray_master_port_range); print('GIVEN', *given._ray_master_port_range)"
    )
    result = run_python(code, VERL_PLATFORM="cpu")
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("DRAWN", "GIVEN")))
    assert "DRAWN" in lines, result.stderr[-3000:]
    first, end = map(int, lines["DRAWN"].split())
    ephemeral_start = int(verl_hooks.EPHEMERAL_PORT_RANGE.read_text().split()[0])
    assert verl_hooks.MASTER_PORT_FLOOR <= first < end <= ephemeral_start
    assert lines["GIVEN"] == "12345 12350"
