"""Every entry point's `--help`: usage and every option with its default (or "required") on
stdout, exit status 0, quickly, and nothing else done (no file or directory written in the
working directory or in TMPDIR); and `ENTRY_POINTS` lists every entry point there is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Bounds of one `--help`, generous for a loaded 2-core machine (measured on one, load average ~1.5):
LIGHT_S = 5.0  # arguments parsed before any heavy import: 0.07-0.2 s measured
HEAVY_S = 30.0  # modules imported before parsing (hydra and verl; torch and transformers; quickstart's pandas): 1-10.4 s measured
TIMEOUT_S = 60
MAIN_GUARD = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)
SEARCHED = ("oar_verl", "benchmarks", "recipes", "tests/fixtures")  # where `python -m` modules and scripts live


@dataclass(frozen=True)
class EntryPoint:
    """One way to start the project: `kind` is "module" (`python -m target`), "script"
    (`python target`, a path under the repository) or "console" (the installed script
    `target`); `args` come before `--help`; `defaults`: it has options with defaults;
    `unstated`: the help items that need not state a default, each with its reason."""

    kind: str
    target: str
    bound_s: float
    defaults: bool = True
    args: tuple[str, ...] = ()
    prog: str | None = None  # what the usage line names, when not the invocation itself
    unstated: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        """The start of the help's first line."""
        invocation = {"module": f"python -m {self.target}", "script": f"python {self.target}", "console": self.target}[self.kind]
        return f"usage: {self.prog or ' '.join((invocation, *self.args))}"

    def command(self) -> list[str]:
        """The command line of `--help`."""
        start = {"module": [sys.executable, "-m", self.target], "script": [sys.executable, str(ROOT / self.target)],
                 "console": [str(BIN / self.target)]}[self.kind]  # fmt: skip
        return [*start, *self.args, "--help"]


ENTRY_POINTS = (
    EntryPoint("module", "oar_verl.cli", LIGHT_S, prog="oar-verl"),
    EntryPoint("module", "oar_verl.explain", LIGHT_S, prog="oar-verl explain"),
    EntryPoint("module", "oar_verl.demo", LIGHT_S),
    EntryPoint("module", "oar_verl.dry_run", HEAVY_S),
    EntryPoint("module", "oar_verl.main_ppo", HEAVY_S),
    EntryPoint("module", "oar_verl.quickstart", HEAVY_S, unstated=("overrides",)),  # optional hydra overrides: none when omitted
    EntryPoint("module", "oar_verl.study", LIGHT_S),
    EntryPoint("module", "oar_verl.study.stage0", LIGHT_S),
    EntryPoint("module", "oar_verl.integration.verl_internals", LIGHT_S),
    EntryPoint("module", "oar_verl.tiny.warmstart", LIGHT_S),
    EntryPoint("module", "oar_verl.tiny.widen", HEAVY_S),
    EntryPoint("module", "tests.fixtures.models.build", LIGHT_S, defaults=False),
    EntryPoint("script", "recipes/prepare_data.py", LIGHT_S),
    EntryPoint("script", "benchmarks/attribution.py", HEAVY_S),
    EntryPoint("script", "benchmarks/attribution_memory.py", HEAVY_S, defaults=False),
    EntryPoint("script", "benchmarks/bf16_fidelity.py", LIGHT_S, defaults=False),
    EntryPoint("script", "benchmarks/gpu_check.py", HEAVY_S),
    EntryPoint("script", "benchmarks/mixed_lengths.py", HEAVY_S),
    EntryPoint("script", "benchmarks/pivot_spread.py", LIGHT_S),
    EntryPoint("script", "benchmarks/recipe_shapes.py", LIGHT_S),
    EntryPoint("script", "benchmarks/segmentation.py", LIGHT_S),
    EntryPoint("script", "benchmarks/taylor_fidelity.py", LIGHT_S, defaults=False),
    EntryPoint("script", "benchmarks/verl_pass.py", LIGHT_S),
    EntryPoint("console", "oar-verl", LIGHT_S),
    EntryPoint("console", "oar-verl", LIGHT_S, args=("explain",), prog="oar-verl explain"),
    EntryPoint("console", "oar-verl", LIGHT_S, args=("demo",), prog="python -m oar_verl.demo"),
)
HYDRA_ENTRY_POINTS = ("oar_verl.main_ppo", "oar_verl.dry_run")  # hydra entry points: their --help would dump verl's config


def entry_id(entry: EntryPoint) -> str:
    return " ".join((entry.target, *entry.args))


def help_items(text: str) -> dict[str, str]:
    """name -> text of each item of a help page: a line indented by two spaces (an option, a
    positional, an OAR setting) with its more indented continuation lines."""
    items, name = {}, None
    for line in text.splitlines():
        if re.match(r"  \S", line):
            name = line.split()[0]
            items[name] = line.strip()
        elif name is not None and re.match(r"   +\S", line):
            items[name] += " " + line.strip()
        else:
            name = None
    return items


def unstated_defaults(entry: EntryPoint, text: str) -> list[str]:
    """The help items of `text` that state neither a default nor "required", but those `entry` allows."""
    allowed = {"-h,", *entry.unstated}
    return [item for name, item in help_items(text).items() if name not in allowed and "default" not in item and "required" not in item]


def run_help(entry: EntryPoint, cwd: Path, tmpdir: Path) -> tuple[subprocess.CompletedProcess, float]:
    """(the finished `--help`, its wall time in seconds), run in `cwd` with TMPDIR `tmpdir` and
    the repository on the path, as from its root (where `python -m tests...` finds the tests)."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    start = time.perf_counter()
    result = subprocess.run(entry.command(), cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=entry_id)
def test_help_prints_help_and_does_nothing_else(entry: EntryPoint, tmp_path: Path):
    if entry.kind == "console" and not (BIN / entry.target).exists():
        pytest.skip(f"console script {entry.target} is not installed beside {sys.executable} (pip install -e .)")
    cwd, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmpdir.mkdir()
    result, seconds = run_help(entry, cwd, tmpdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.startswith(entry.usage), result.stdout[:300]
    if entry.defaults:
        assert "default" in result.stdout, result.stdout
    assert not unstated_defaults(entry, result.stdout)
    assert not list(cwd.iterdir()) and not list(tmpdir.iterdir()), "--help wrote files"
    assert seconds < entry.bound_s, f"--help took {seconds:.1f} s (bound {entry.bound_s} s)"
    if entry.target in HYDRA_ENTRY_POINTS:
        assert "algorithm.oar.quantile" in result.stdout
        assert "actor_rollout_ref:" not in result.stdout  # not hydra's dump of verl's whole config


def discovered_entry_points() -> set[tuple[str, str]]:
    """(kind, target) of every `__main__.py` and every file with a main guard under `SEARCHED`:
    modules in packages (oar_verl, tests), scripts elsewhere."""
    found = set()
    for folder in SEARCHED:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "__main__.py" or MAIN_GUARD.search(path.read_text(encoding="utf-8")):
                relative = path.relative_to(ROOT)
                if relative.parts[0] in ("oar_verl", "tests"):
                    found.add(("module", ".".join(relative.with_suffix("").parts).removesuffix(".__main__")))
                else:
                    found.add(("script", relative.as_posix()))
    return found


def console_scripts() -> set[str]:
    """The names in pyproject.toml's `[project.scripts]` table, read as text (tomllib is
    Python 3.11's; the project supports 3.10)."""
    table = (ROOT / "pyproject.toml").read_text().split("\n[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w.-]+)\s*=", table, re.MULTILINE))


def test_every_entry_point_is_listed():
    listed = {(entry.kind, entry.target) for entry in ENTRY_POINTS}
    assert {target for kind, target in listed if kind == "console"} == console_scripts()
    assert {(kind, target) for kind, target in listed if kind != "console"} == discovered_entry_points()
