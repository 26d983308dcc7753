"""The architecture `docs/DESIGN.md` draws, checked on the source: no import cycles between
the package's modules (imports inside functions included), and a core that never imports
verl or Ray."""

import ast
from pathlib import Path

import oar_verl

PACKAGE = Path(oar_verl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The modules `name` imports, anywhere in its source: `from X import Y` counts as
    X.Y when that is a module, else as X; relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph found by depth-first search (each closed on its start)."""
    cycles, visiting, done = [], [], set()

    def visit(name: str) -> None:
        visiting.append(name)
        for other in sorted(graph[name]):
            if other in visiting:
                cycles.append(visiting[visiting.index(other) :] + [other])
            elif other not in done:
                visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return cycles


def test_the_package_has_no_import_cycles():
    graph = {name: {other for other in imported(name) if other in MODULES and other != name} for name in MODULES}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_core_never_imports_verl_or_ray():
    offending = {
        name: sorted(module for module in imported(name) if module.split(".")[0] in ("verl", "ray"))
        for name in MODULES
        if name.startswith("oar_verl.core")
    }
    assert not {name: modules for name, modules in offending.items() if modules}


def test_the_checker_sees_a_cycle_and_resolves_relative_imports(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from pkg.a import f\n")
    monkeypatch.setitem(MODULES, "pkg.a", tmp_path / "pkg" / "a.py")
    monkeypatch.setitem(MODULES, "pkg.b", tmp_path / "pkg" / "b.py")
    assert imported("pkg.a") == {"pkg.b"} and imported("pkg.b") == {"pkg.a"}
    assert find_cycles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert find_cycles({"x": {"y", "z"}, "y": {"z"}, "z": set()}) == []


def test_the_package_top_holds_entry_points_only():
    """Each top-level module is a command (a `main`) or a plugin entry point (verl's, vLLM's)."""
    top = [path for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    commands = {
        path.stem for path in top if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in ast.parse(path.read_text()).body)
    }
    assert {path.stem for path in top} - commands == {"plugin", "vllm_plugin"}
