#!/usr/bin/env python3
"""Record which rclpy / tf2_ros / cv_bridge names Humble's and Jazzy's releases provide, read from
their sources, into test/data/ros_api_humble_jazzy.json (test/test_ros_api_compat.py checks the
package's uses against it).

    python scripts/ros_api_facts.py --rclpy MIRROR --geometry2 MIRROR --vision-opencv MIRROR

Each MIRROR is a bare git clone (or snapshot) of ros2/rclpy, ros2/geometry2 and
ros-perception/vision_opencv; nothing is checked out, files are read with ``git show REF:PATH``.
What is recorded (facts only, no code): per module, the public names bound at its top level
(``from X import *`` resolved, ``__all__`` honoured; for C/C++ extension modules the names their
sources register: pybind11 ``m.def``/``class_``/``register_exception``/``enum_``, CPython
``PyModule_AddObject``/``PyDict_SetItemString``), and per class its public members with those of
its base classes from the same sources (methods, class attributes, and
instance attributes its methods assign to ``self``). Each fact set names its repository, ref, commit and
package version.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "test" / "data" / "ros_api_humble_jazzy.json"

# (package, repository, python source root -> module prefix, C/C++ sources -> extension module, package.xml)
SOURCES = {
    "rclpy": ("ros2/rclpy", {"rclpy/rclpy": "rclpy"},
              {"rclpy/src/rclpy": "rclpy._rclpy_pybind11"}, "rclpy/package.xml"),
    "tf2_ros": ("ros2/geometry2", {"tf2_ros_py/tf2_ros": "tf2_ros", "tf2_py/tf2_py": "tf2_py"},
                {"tf2_py/src": "tf2_py._tf2_py"}, "tf2_ros_py/package.xml"),
    "cv_bridge": ("ros-perception/vision_opencv", {"cv_bridge/python/cv_bridge": "cv_bridge"}, {},
                  "cv_bridge/package.xml"),
}
# The ref read for each distro. vision_opencv's snapshot has no jazzy branch: its newest rolling
# (Jazzy's cv_bridge was released from rolling after it) stands in, and the test uses the
# intersection with Humble's anyway.
REFS = {"humble": {"rclpy": "humble", "tf2_ros": "humble", "cv_bridge": "humble"},
        "jazzy": {"rclpy": "jazzy", "tf2_ros": "jazzy", "cv_bridge": "rolling"}}

PYBIND = [re.compile(r'\bm\.def\(\s*"(\w+)"'),
          re.compile(r'(?:register_exception<[^;]*?>|class_<[^;]*?>|enum_<[^;]*?>)\s*\(\s*m\s*,\s*"(\w+)"', re.S),
          re.compile(r'PyModule_AddObject\(\s*m\s*,\s*"(\w+)"'), re.compile(r'PyDict_SetItemString\(\s*d\s*,\s*"(\w+)"')]


def git(mirror: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True, text=True).stdout


def module_name(path: str, root: str, prefix: str) -> str:
    rel = path[len(root) + 1:-3].split("/")
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join([prefix, *rel])


class ModuleFacts:
    """Top-level bindings of one module: names, star imports, classes (members and bases)."""

    def __init__(self, name: str, source: str, is_package: bool = False):
        self.name, self.is_package, self.names, self.stars, self.all = name, is_package, {}, [], None
        self.classes: dict[str, tuple[set, list[str]]] = {}
        for node in ast.parse(source).body:
            self._bind(node)

    def _resolve(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        parts = self.name.split(".")
        base = parts[: len(parts) - level + (1 if self.is_package else 0)]
        return ".".join(base + ([module] if module else []))

    def _bind(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.names[node.name] = None
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                    # instance attributes: self.<name> = ... in any method
                    members.update(t.attr for a in ast.walk(item) if isinstance(a, (ast.Assign, ast.AnnAssign))
                                   for t in (a.targets if isinstance(a, ast.Assign) else [a.target])
                                   if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                   and t.value.id == "self")
                elif isinstance(item, ast.ClassDef):
                    members.add(item.name)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            self.classes[node.name] = (members, [ast.unparse(b) for b in node.bases])
            self.names[node.name] = None
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        self.names[name.id] = None
                if isinstance(target, ast.Name) and target.id == "__all__":
                    try:
                        self.all = list(ast.literal_eval(node.value))
                    except ValueError:
                        pass
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            self.names[node.target.id] = None
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self.names[alias.asname or alias.name.split(".")[0]] = ("module", alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = self._resolve(node.module, node.level)
            for alias in node.names:
                if alias.name == "*":
                    self.stars.append(source)
                else:
                    self.names[alias.asname or alias.name] = ("from", source, alias.name)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # names bound under version checks too
            for body in (getattr(node, "body", []), getattr(node, "orelse", []), getattr(node, "finalbody", []),
                         *[h.body for h in getattr(node, "handlers", [])]):
                for child in body:
                    self._bind(child)


def read_sources(mirror: Path, ref: str, roots: dict[str, str], natives: dict[str, str]) -> dict[str, ModuleFacts]:
    files = git(mirror, "ls-tree", "-r", "--name-only", ref).splitlines()
    modules: dict[str, ModuleFacts] = {}
    for root, prefix in roots.items():
        for path in files:
            if path.startswith(root + "/") and path.endswith(".py"):
                name = module_name(path, root, prefix)
                modules[name] = ModuleFacts(name, git(mirror, "show", f"{ref}:{path}"), path.endswith("__init__.py"))
    for root, name in natives.items():
        native = ModuleFacts(name, "")
        for path in files:
            if path.startswith(root + "/") and path.endswith((".cpp", ".c", ".hpp")):
                text = git(mirror, "show", f"{ref}:{path}")
                for pattern in PYBIND:
                    native.names.update((n, None) for n in pattern.findall(text))
        modules[name] = native
    return modules


def exported(modules: dict[str, ModuleFacts], name: str, seen=()) -> set[str]:
    """Public names of module ``name`` (star imports followed)."""
    facts = modules.get(name)
    if facts is None or name in seen:
        return set()
    names = set(facts.names)
    for star in facts.stars:
        names |= exported(modules, star, (*seen, name))
    if facts.all is not None:
        return set(facts.all)
    return {n for n in names if not n.startswith("_")}


def find_class(modules: dict[str, ModuleFacts], module: str, name: str, depth: int = 0):
    """(module, class name) where ``module.name`` is defined, following imports; None if elsewhere."""
    facts = modules.get(module)
    if facts is None or depth > 8:
        return None
    if name in facts.classes:
        return module, name
    binding = facts.names.get(name)
    if isinstance(binding, tuple) and binding[0] == "from":
        return find_class(modules, binding[1], binding[2], depth + 1)
    for star in facts.stars:
        found = find_class(modules, star, name, depth + 1)
        if found:
            return found
    return None


def class_members(modules: dict[str, ModuleFacts], module: str, name: str, depth: int = 0) -> set[str]:
    members, bases = modules[module].classes[name]
    out = {m for m in members if not m.startswith("_")}
    for base in bases:
        base_module, _, base_name = base.rpartition(".")
        target = find_class(modules, module, base) if not base_module else None
        if target is None and base_module:  # e.g. enum.IntEnum: outside these sources, not recorded
            continue
        if target is not None and depth < 8:
            out |= class_members(modules, *target, depth + 1)
    return out


def facts_for(mirror: Path, ref: str, package: str) -> dict:
    repo, roots, natives, package_xml = SOURCES[package]
    modules = read_sources(mirror, ref, roots, natives)
    version = re.search(r"<version>([^<]+)</version>", git(mirror, "show", f"{ref}:{package_xml}")).group(1)
    commit = git(mirror, "rev-parse", ref).strip()
    date = git(mirror, "log", "-1", "--format=%cs", ref).strip()
    skip = ("test", "tests")
    public = {m: f for m, f in modules.items() if not any(part in skip for part in m.split("."))}
    return {
        "source": {"repository": repo, "ref": ref, "commit": commit, "commit_date": date,
                   "package_version": version},
        "modules": {m: sorted(exported(modules, m)) for m in sorted(public)},
        "classes": {f"{m}.{c}": sorted(class_members(modules, m, c))
                    for m in sorted(public) for c in sorted(public[m].classes) if not c.startswith("_")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rclpy", type=Path, required=True, help="git mirror of ros2/rclpy")
    p.add_argument("--geometry2", type=Path, required=True, help="git mirror of ros2/geometry2")
    p.add_argument("--vision-opencv", type=Path, required=True, help="git mirror of ros-perception/vision_opencv")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    mirrors = {"rclpy": args.rclpy, "tf2_ros": args.geometry2, "cv_bridge": args.vision_opencv}
    data = {
        "about": "Names each package's Humble and Jazzy releases provide, read from their sources by "
                 "scripts/ros_api_facts.py (facts, no code); test/test_ros_api_compat.py keeps the package's "
                 "uses inside the intersection. message_filters: the package uses none, so none are recorded.",
        "distros": {distro: {package: facts_for(mirrors[package], ref, package) for package, ref in refs.items()}
                    for distro, refs in REFS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
