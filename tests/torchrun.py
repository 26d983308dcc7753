"""Runs a test script on several local processes with `torch.distributed.run` (gloo)."""

import os
import subprocess
import sys


def run_ranks(script: str, tmp_path, world_size: int, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Writes `script` under `tmp_path` and runs it on `world_size` processes; each rank
    that finishes writes `rank{r}.ok` into `OK_DIR` (= `tmp_path`). Asserts that all did.
    The rendezvous takes a free port (`--standalone`): tests run side by side (pytest -n 2)."""
    path = tmp_path / "script.py"
    path.write_text(script)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", str(path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OK_DIR": str(tmp_path), **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    assert result.returncode == 0, result.stderr[-6000:]
    assert sorted(p.name for p in tmp_path.glob("*.ok")) == [f"rank{r}.ok" for r in range(world_size)]
    return result
