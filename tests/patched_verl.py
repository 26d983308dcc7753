"""verl 0.9.1's sources (PyPI's sdist: the package and verl's tests) with the project's
upstream patches applied: the tree the patch tests and the patched-verl training run use."""

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

SERIES = Path(__file__).parents[1] / "patches"
PATCHES = sorted((SERIES / "verl-0.9.1").glob("*.patch"))
# verl's source distribution on PyPI: the package plus verl's tests (the wheel has no tests).
VERL_SDIST = ("verl==0.9.1", "verl-0.9.1.tar.gz", "3e03d8816b2546b2c5580705671b8d0bb3f79b8364e7b5c56dbfc1245536ba22")


def verl_sources(directory: Path) -> Path:
    """verl 0.9.1's source tree (verl/ and tests/), from PyPI's sdist, checked by sha256."""
    requirement, name, sha256 = VERL_SDIST
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-binary", ":all:", "--no-deps", "-q", "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    archive = directory / name
    assert result.returncode == 0 and archive.exists(), f"could not download verl's sdist from PyPI: {result.stderr[-2000:]}"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha256, f"{name}: unexpected sha256"
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return directory / name.removesuffix(".tar.gz")


def patched_verl_tree(directory: Path) -> Path:
    """verl's sources under `directory` with `PATCHES` applied in order (each checked first)."""
    root = verl_sources(directory)
    assert (root / "verl" / "__init__.py").exists() and (root / "tests").is_dir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for patch in PATCHES:
        result = subprocess.run(["git", "apply", "--check", str(patch)], cwd=root, capture_output=True, text=True)
        assert result.returncode == 0, f"{patch.name} does not apply to verl 0.9.1: {result.stderr}"
        subprocess.run(["git", "apply", str(patch)], cwd=root, check=True)
    return root
