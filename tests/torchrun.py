"""Runs a rank script (a module of `tests/ranks/`) on several local processes with
`torch.distributed.run` (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_ranks(module: str, tmp_path, world_size: int, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `module` (e.g. "tests.ranks.fsdp_attribution") on `world_size` processes; each
    rank that finishes writes `rank{r}.ok` into `OK_DIR` (= `tmp_path`). Asserts that all did.
    The rendezvous takes a free port (`--standalone`): tests run side by side (pytest -n 2).
    `env` adds to the environment; the repository root is appended to `PYTHONPATH`."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OK_DIR": str(tmp_path), **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [environment.get("PYTHONPATH"), str(ROOT)]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", "--module", module]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-6000:]
    assert sorted(p.name for p in tmp_path.glob("*.ok")) == [f"rank{r}.ok" for r in range(world_size)]
    return result
