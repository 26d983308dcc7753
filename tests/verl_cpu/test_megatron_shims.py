"""The CPU Megatron shims refuse megatron-core / mbridge releases they were not written for
(the shims themselves run in the Megatron tests' own processes: they patch torch)."""

import importlib.metadata

import pytest

pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")

from oar_verl.verl_cpu import megatron  # noqa: E402
from oar_verl.verl_cpu.shims import ShimError  # noqa: E402


def test_installed_releases_pass():
    megatron.check_versions()


@pytest.mark.parametrize("package, version", [("megatron-core", "0.17.0"), ("mbridge", "0.16.0")])
def test_other_releases_are_refused_by_name(monkeypatch, package, version):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version if name == package else real(name))
    with pytest.raises(ShimError, match=f"written for {package} {megatron.TESTED_RELEASES[package]}x, found {version}"):
        megatron.check_versions()
