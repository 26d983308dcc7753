"""The mbridge patches (patches/mbridge-0.15.1/) apply to the installed mbridge 0.15.1, and
on the patched mbridge the CPU backend's mbridge shims step aside while the model builds
and loads the same weights as with the shims."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.slow

mbridge = pytest.importorskip("mbridge", reason="the megatron extra: pip install 'oar_verl[megatron]'")
PATCHES = sorted((Path(__file__).parents[1] / "patches" / "mbridge-0.15.1").glob("*.patch"))


def test_patched_mbridge_needs_no_shim(tmp_path):
    source = tmp_path / "site"
    shutil.copytree(Path(mbridge.__file__).parent, source / "mbridge", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in PATCHES:
        result = subprocess.run(["git", "apply", "--directory=site", str(patch)], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, (
            f"{patch.name} does not apply to mbridge {mbridge.__version__ if hasattr(mbridge, '__version__') else ''}: {result.stderr}"
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    root = Path(__file__).parents[1]
    run_ranks("tests.ranks.mbridge_patches", run_dir, 1, env={"PYTHONPATH": f"{source}:{root}", "PATCHED": str(source)})
