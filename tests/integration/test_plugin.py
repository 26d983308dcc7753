"""The entry point registers OAR in every process that imports verl, Ray actors included."""

import sys

import pytest
import ray

pytestmark = pytest.mark.slow


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="verl.plugins") if e.name == "oar_verl"]
    assert entry.value == "oar_verl.plugin"


def test_registration_inside_a_ray_actor():
    @ray.remote(num_cpus=0)
    class Probe:
        def registered(self):
            import verl  # noqa: F401
            from verl.trainer.ppo.core_algos import get_adv_estimator_fn
            from verl.trainer.ppo.v1 import get_trainer_cls

            return get_adv_estimator_fn("oar_g").__name__, get_trainer_cls("sync").__name__

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.get(Probe.remote().registered.remote()) == ("compute_oar_outcome_advantage", "OARTrainerSync")
    finally:
        ray.shutdown()


def test_after_import_runs_once_on_import_and_at_once_when_loaded(tmp_path, monkeypatch):
    from oar_verl.integration.import_hooks import after_import

    (tmp_path / "oar_probe_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    after_import("oar_probe_module", lambda module: seen.append(module.VALUE))
    assert seen == []
    import oar_probe_module  # noqa: F401

    assert seen == [1]
    after_import("oar_probe_module", lambda module: seen.append(module.VALUE + 1))
    assert seen == [1, 2]
    sys.modules.pop("oar_probe_module")


def test_integration_modules_import_first_in_a_fresh_process():
    """Importing the trainer or worker module before verl's own (they import verl's, which
    fires the plugin's hooks that import them back) must still install the OAR step."""
    import subprocess

    for module in ("oar_verl.integration.worker", "oar_verl.integration.trainer"):
        code = f"import {module}; from verl.trainer.ppo.v1 import get_trainer_cls; print('TRAINER', get_trainer_cls('sync').__name__)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "TRAINER OARTrainerSync" in result.stdout
