"""The supported verl range: a tested release runs; another runs (with a warning) only if
every internal the plugin relies on is identical to a tested release's; otherwise it is
refused before Ray, naming the internals that changed."""

import logging
import subprocess
import sys
import zipfile

import pytest
import verl

from oar_verl.integration import verl_internals
from oar_verl.integration.validation import oar_settings_errors

from .test_validation import config

pytestmark = pytest.mark.slow


def test_digests_ignore_formatting_but_not_code():
    source = "class A:\n    def f(self, x):\n        return x + 1\n"
    same = "class A:\n    # a comment\n    def f(self, x):  # trailing\n        return (x + 1)\n"
    changed = "class A:\n    def f(self, x):\n        return x + 2\n"
    assert verl_internals.digest_of(source, "A.f") == verl_internals.digest_of(same, "A.f")
    assert verl_internals.digest_of(source, "A.f") != verl_internals.digest_of(changed, "A.f")
    assert verl_internals.digest_of(source, "A.g") is None


def test_the_installed_verl_is_a_tested_release_and_its_internals_match():
    assert verl.__version__ in verl_internals.TESTED
    assert verl_internals.changed_internals() == []
    assert verl_internals.support_problem(verl.__version__) == (None, None)


def test_an_untested_release_with_identical_internals_runs_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(verl, "__version__", "0.9.7")
    logger = logging.getLogger("oar_verl")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.WARNING, logger="oar_verl"):
        errors = oar_settings_errors(config())
    assert not any("verl 0.9.7" in error for error in errors), errors
    assert {record.levelno for record in caplog.records if "verl 0.9.7" in record.getMessage()} == {logging.WARNING}


def test_an_untested_release_whose_internals_changed_is_refused(monkeypatch):
    monkeypatch.setattr(verl, "__version__", "0.10.0")
    installed = verl_internals.digests()
    installed["verl.trainer.ppo.v1.trainer_base:PPOTrainer._step_once"] = "0" * 16
    monkeypatch.setattr(verl_internals, "digests", lambda root=None: installed)
    errors = oar_settings_errors(config())
    assert errors == [
        "verl 0.10.0 is not a release oar_verl is tested against (0.9.1), and internals it relies on differ from every tested "
        "release's: verl.trainer.ppo.v1.trainer_base:PPOTrainer._step_once"
    ]


def test_verl_0_9_0_differs_where_oar_verl_depends_on_it(tmp_path):
    """verl 0.9.0 (PyPI's wheel): its trainer step, worker pool set-up, its three
    trainers, the FSDP engine's passes, how the Megatron engine builds its model
    and the config check differ
    from 0.9.1's, so it is outside the supported range."""
    command = [sys.executable, "-m", "pip", "download", "verl==0.9.0", "--no-deps", "--only-binary", ":all:", "-d", str(tmp_path), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("verl-0.9.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "tree", members=[name for name in archive.namelist() if name.startswith("verl/")])
    changed = verl_internals.changed_internals(verl_internals.digests(tmp_path / "tree"))
    assert changed == [
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer.step",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._init_resource_pool_mgr",
        "verl.trainer.ppo.v1.trainer_sync:PPOTrainerSync",
        "verl.trainer.ppo.v1.trainer_colocate_async:PPOTrainerColocateAsync",
        "verl.trainer.ppo.v1.trainer_separate_async:PPOTrainerSeparateAsync",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngine.forward_backward_batch",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_inputs",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_outputs",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.forward_step",
        "verl.utils.megatron_utils:make_megatron_module",
        "verl.utils.config:validate_config",
        "verl.workers.engine.fsdp.transformer_impl:_scale_logits_by_temperature",
    ]
