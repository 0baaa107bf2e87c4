"""The layering rules of docs/architecture.md, enforced on the source tree.

- pixloc_ros.core and pixloc_ros.data never import rclpy or a ROS message package;
- pycolmap is imported by pixloc_ros/core/maps/colmap_io.py alone (its API moves between releases);
- each package imports only the packages its row of ``ALLOWED`` names (one-way: the table has no
  circle), no module imports itself back through others (no import circle, late imports inside
  functions included), and no module imports another module's private (``_``) names.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pixloc_ros"
ROS_FREE = [PKG / "core", PKG / "data"]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module imported by the Python file at ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def is_ros_module(name: str) -> bool:
    return name in {"rclpy", "rosidl_runtime_py", "tf2_ros", "message_filters", "cv_bridge",
                    "launch", "launch_ros"} or name.endswith("_msgs")


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


@pytest.mark.parametrize("path", python_files(*ROS_FREE), ids=lambda p: str(p.relative_to(PKG)))
def test_core_and_data_are_ros_free(path):
    offending = sorted(n for n in imported_modules(path) if is_ros_module(n))
    assert not offending, f"{path} imports ROS modules {offending}; keep it in pixloc_ros/ros/"


def test_pycolmap_only_in_colmap_io():
    users = [p.relative_to(PKG) for p in python_files(PKG) if "pycolmap" in imported_modules(p)]
    assert [str(p) for p in users] == ["core/maps/colmap_io.py"]


def test_importing_the_core_loads_no_ros():
    """Importing every core/data module in a fresh interpreter must not pull rclpy in indirectly."""
    modules = [".".join(p.relative_to(PKG.parent).with_suffix("").parts) for p in python_files(*ROS_FREE)]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.split('.')[0].endswith('_msgs'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- the package table and import circles ----------------------------------------------------

# Package -> the packages of the project it may import (besides itself and ``pixloc_ros.lazy``,
# the lazy-export helper of the packages' __init__). docs/architecture.md draws this table.
ALLOWED = {
    "core.geometry": set(),
    "core.engine": {"core.geometry"},
    "core.maps": {"core.geometry", "core.engine", "version"},
    "core.tracking": {"core.geometry", "core.engine", "core.maps"},
    "core.training": {"core.geometry", "core.engine", "core.maps"},
    "data.bags": {"core.geometry"},
    "data.sim": {"core.geometry", "core.maps", "data.bags"},
    "data.importers": {"core.geometry", "core.maps", "data.bags"},
    "data.evaluation": {"core.geometry", "core.engine", "core.maps", "core.tracking", "data.bags"},
    "ros": {"core.geometry", "core.engine", "core.maps", "core.tracking", "data.bags", "msg"},
    "commands": {"core.geometry", "core.engine", "core.maps", "core.tracking", "core.training", "data.bags",
                 "data.sim", "data.importers", "data.evaluation", "ros", "version"},
    "cli": {"commands"},
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in python_files(PKG)}


def package_of(module: str) -> str:
    """The row of ``ALLOWED`` a module belongs to ("core.maps", "ros", ...); "version" for the
    package root (``pixloc_ros.__version__``), "msg" for the generated messages."""
    parts = module.split(".")[1:]
    if not parts:
        return "version"
    if parts[0] in ("core", "data"):
        return ".".join(parts[:2]) if len(parts) > 1 else parts[0]
    return parts[0]


def project_imports(module: str) -> set[str]:
    """Modules (or packages) of the project that ``module`` imports anywhere in its file, late
    imports inside functions included; ``from pkg import name`` counts as ``pkg.name`` when that
    is a module."""
    path = MODULES[module]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out.update(subs or [target])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "pixloc_ros" and m != module}


def test_every_package_imports_only_what_its_row_allows():
    bad = []
    for module in MODULES:
        own = package_of(module)
        if own not in ALLOWED:
            continue  # the package root, lazy.py
        for target in project_imports(module):
            other = package_of(target)
            if other != own and other not in ALLOWED[own] and target != "pixloc_ros.lazy":
                bad.append(f"{module} imports {target} ({own} may import {sorted(ALLOWED[own])})")
    assert not bad, "\n".join(bad)


def test_the_table_is_one_way():
    assert not find_cycle({p: ALLOWED[p] & set(ALLOWED) for p in ALLOWED})


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (node -> successors) as a list of nodes, or [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_circle_between_modules():
    graph = {m: {t for t in project_imports(m) if t in MODULES} for m in MODULES}
    cycle = find_cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_circle_check_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_across_modules():
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level == 0 and not source.startswith("pixloc_ros"):
                    continue
                bad += [f"{module}: from {'.' * node.level}{source} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)
