"""Every rclpy / tf2_ros / cv_bridge / message_filters name the package uses exists in Humble's and
Jazzy's releases, by the facts recorded from their sources in test/data/ros_api_humble_jazzy.json
(scripts/ros_api_facts.py): a new API use that Humble lacks fails here, not on a user's robot.

The package's source (pixloc_ros/, scripts/) is read with ``ast``:
- imported names (``from rclpy.qos import QoSProfile``, ``import tf2_ros``) and attributes of those
  modules (``rclpy.spin_once``, ``tf2_ros.InvalidArgumentException``, also on a module bound by
  ``compat.optional_module("tf2_ros")``) must be in both distros' lists; in ros/compat.py, where the
  distro differences are handled, in either one's;
- attribute names used in a file that uses these packages (``sub.get_publisher_count()``) must not
  be a member that the installed rclpy's classes define but Humble's or Jazzy's same class lacks
  (types are not inferred: a name is suspect whatever object it is read from); ros/compat.py is
  where such uses belong.
Not checked: keyword arguments, and members of classes these packages do not define.
"""
import ast
import importlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACTS = json.loads((REPO / "test" / "data" / "ros_api_humble_jazzy.json").read_text())
TRACKED = ("rclpy", "tf2_ros", "tf2_py", "cv_bridge", "message_filters")
COMPAT = REPO / "pixloc_ros" / "ros" / "compat.py"


def distro_facts(distro: str) -> tuple[dict[str, set], dict[str, set]]:
    modules, classes = {}, {}
    for package in FACTS["distros"][distro].values():
        modules.update({m: set(names) for m, names in package["modules"].items()})
        classes.update({c: set(members) for c, members in package["classes"].items()})
    return modules, classes


HUMBLE, JAZZY = distro_facts("humble"), distro_facts("jazzy")


def combine(op) -> tuple[dict[str, set], dict[str, set]]:
    return tuple({k: op(a.get(k, set()), b.get(k, set())) for k in set(a) | set(b)
                  if (k in a and k in b) or op is set.union}
                 for a, b in zip(HUMBLE, JAZZY))


BOTH, EITHER = combine(set.intersection), combine(set.union)


def sources() -> list[Path]:
    return sorted([*(REPO / "pixloc_ros").rglob("*.py"), *(REPO / "scripts").glob("*.py")])


def tracked(module: str) -> bool:
    return module.split(".")[0] in TRACKED


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def module_uses(path: Path, known_modules: set[str]) -> set[tuple[str, str, int]]:
    """(module, name, line) for every tracked module's name the file uses: imports, and attribute
    chains on the names those imports (or ``optional_module("pkg")``) bind; a chain is followed
    through submodules (``rclpy.qos.QoSProfile`` -> ("rclpy.qos", "QoSProfile"))."""
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}  # local name -> what it stands for (a module, or module.name)
    uses = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if tracked(alias.name):
                    parts = alias.name.split(".")
                    uses.add((alias.name, "", node.lineno))  # the module itself must exist
                    uses.update((".".join(parts[:i]), parts[i], node.lineno) for i in range(1, len(parts)))
                    bound[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and tracked(node.module):
            for alias in node.names:
                uses.add((node.module, alias.name, node.lineno))
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args
              and isinstance(node.value.args[0], ast.Constant) and isinstance(node.value.args[0].value, str)
              and tracked(node.value.args[0].value) and ast.unparse(node.value.func).endswith("optional_module")):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound[target.id] = node.value.args[0].value
    for node in ast.walk(tree):
        chain = dotted(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] not in bound:
            continue
        module = bound[chain[0]]
        if module not in known_modules:
            continue  # a class or function imported from a module (its attributes: the member scan)
        for part in chain[1:]:
            if f"{module}.{part}" in known_modules:
                module = f"{module}.{part}"
                continue
            uses.add((module, part, node.lineno))
            break
    return uses


def missing_names(facts_modules: dict[str, set], uses) -> list[str]:
    out = []
    for module, name, line in sorted(uses):
        if f"{module}.{name}" in facts_modules:  # a submodule (from rclpy import qos)
            continue
        if module not in facts_modules:
            out.append(f"{module}{'.' + name if name else ''} (line {line}): no facts recorded for {module}")
        elif not name:
            continue
        elif name not in facts_modules[module]:
            out.append(f"{module}.{name} (line {line})")
    return out


def test_the_facts_say_where_they_came_from():
    for distro, packages in FACTS["distros"].items():
        assert set(packages) == {"rclpy", "tf2_ros", "cv_bridge"}
        for package, facts in packages.items():
            src = facts["source"]
            assert len(src["commit"]) == 40 and src["repository"] and src["ref"] and src["package_version"]
    assert FACTS["distros"]["humble"]["rclpy"]["source"]["package_version"].startswith("3.3.")
    assert FACTS["distros"]["jazzy"]["rclpy"]["source"]["package_version"].startswith("7.1.")
    # The differences this project met are in the facts (else the test below could not see them).
    (h_mod, h_cls), (j_mod, j_cls) = HUMBLE, JAZZY
    assert "rclpy.event_handler" not in h_mod and "SubscriptionEventCallbacks" in h_mod["rclpy.qos_event"]
    assert "SubscriptionEventCallbacks" in j_mod["rclpy.event_handler"]
    assert "get_publisher_count" not in h_cls["rclpy.subscription.Subscription"]
    assert "get_publisher_count" in j_cls["rclpy.subscription.Subscription"]
    assert "count_publishers" in h_cls["rclpy.node.Node"] and "count_publishers" in j_cls["rclpy.node.Node"]
    assert "InvalidArgumentException" in BOTH[0]["tf2_ros"]


def test_every_ros_name_the_package_uses_is_in_humble_and_jazzy():
    problems, seen = [], 0
    for path in sources():
        uses = module_uses(path, set(EITHER[0]))
        seen += len(uses)
        facts = EITHER[0] if path == COMPAT else BOTH[0]
        problems += [f"{path.relative_to(REPO)}: {p}" for p in missing_names(facts, uses)]
    assert seen > 50, "the scan found almost no ROS names: is it still reading the package?"
    assert not problems, ("not in both Humble's and Jazzy's releases (use ros/compat.py, or record a fact "
                          "with scripts/ros_api_facts.py):\n" + "\n".join(problems))


def test_the_scan_catches_a_name_humble_lacks(tmp_path):
    """The check itself: the uses this project had to fix are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from rclpy.event_handler import SubscriptionEventCallbacks\nimport tf2_ros\n"
                   "tf2_ros.NoSuchException\nimport message_filters\n")
    problems = missing_names(BOTH[0], module_uses(bad, set(EITHER[0])))
    assert any("rclpy.event_handler.SubscriptionEventCallbacks" in p for p in problems), problems
    assert any("tf2_ros.NoSuchException" in p for p in problems), problems
    assert any("message_filters" in p and "no facts" in p for p in problems), problems
    assert len(problems) == 3, problems


def newer_members() -> dict[str, str]:
    """{member: class} of the installed (newer) rclpy's recorded classes that Humble or Jazzy lacks."""
    out = {}
    for qualified, members in BOTH[1].items():
        module, _, name = qualified.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue  # not installed here (tf2_ros, cv_bridge) or gone from the newer release
        for member in dir(cls):
            if member.startswith("_") or member in members:
                continue
            # Only what these packages define: int's, tuple's or Exception's members are no API news.
            owner = next((k for k in cls.__mro__ if member in vars(k)), None)
            if owner is not None and tracked(owner.__module__ or ""):
                out.setdefault(member, qualified)
    return out


def test_no_method_or_attribute_only_newer_releases_have():
    pytest.importorskip("rclpy")
    newer = newer_members()
    assert newer.get("get_publisher_count") == "rclpy.subscription.Subscription"  # the scan sees the gap
    problems = []
    for path in sources():
        # Files that use these packages; ros/compat.py is where newer members may be used.
        if path == COMPAT or not module_uses(path, set(EITHER[0])):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in newer:
                problems.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr} "
                                f"({newer[node.attr]} has it only after Humble/Jazzy)")
    assert not problems, "\n".join(problems)
