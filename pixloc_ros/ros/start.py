"""`ros2 run pixloc_ros localizer_node` (also `python -m pixloc_ros.ros.start`): the node as a process.

``run`` builds the node and, unless its ``autostart`` parameter is false, configures and activates
it (ros/lifecycle.py) before spinning; with autostart false it waits, unconfigured, for a
lifecycle manager.

The one place that turns every start-up failure into one fatal log line and an exit status, and
every signal into a quiet exit. It imports nothing heavy at module level: start-up takes seconds
(rclpy, torch, the weights, the map check), and a Ctrl-C or SIGTERM at any moment of it must not
end in a traceback. SIGTERM is made to behave like SIGINT (a KeyboardInterrupt in the main
thread, wherever it is) until rclpy installs its own handlers, which chain to that one.

Before rclpy is initialised the params files named on the command line are checked here (rcl's
own error for a missing or malformed file is an exception with C source locations): that each
exists, is YAML, is a mapping of node names to ``ros__parameters``, and has a section that applies
to this node (a section for another name is silently ignored by rcl).

Exit status: 0 after a signal or a normal shutdown, 1 for a setup error (message says what to fix).
"""
from __future__ import annotations

import signal
import sys

NODE_NAME = "pixloc_localizer"


def _terminate(signum, frame):
    raise KeyboardInterrupt


def fatal(text: str) -> None:
    """One FATAL line in the ROS log format, under the node's name."""
    from rclpy.logging import get_logger

    get_logger(NODE_NAME).fatal(text)


def _node_name(ros_args: list[str]) -> str:
    """The node's name after ``-r __node:=...`` / ``__name:=`` remaps."""
    name = NODE_NAME
    for flag, value in zip(ros_args, ros_args[1:]):
        if flag in ("-r", "--remap") and value.split(":=")[0] in ("__node", "__name"):
            name = value.split(":=", 1)[1]
    return name


def check_params_files(argv: list[str]) -> str | None:
    """Why a ``--params-file`` on the command line cannot be used, or None when all are fine."""
    import yaml

    from pixloc_ros.ros.params import params_files, ros_arguments

    name = _node_name(ros_arguments(argv))
    for path in params_files(argv):
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            return f"params file {path!r} does not exist"
        except OSError as err:
            return f"cannot read params file {path!r}: {err.strerror}"
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            return f"params file {path!r} is not valid YAML{line}: {problem}"
        keys = _node_sections(data)
        if not keys:
            return (f"params file {path!r} must map node names to 'ros__parameters' (see config/localize.yaml: "
                    f"'/**:' then 'ros__parameters:')")
        if not any(k.endswith(("/**", "/*")) or k.rstrip("/").rsplit("/", 1)[-1] == name for k in keys):
            return (f"params file {path!r} has no section for this node (its sections are {keys}; use '/**' or "
                    f"'{name}')")
    return None


def _node_sections(data, prefix: str = "") -> list[str]:
    """The node names a params file holds parameters for: keys whose mapping has 'ros__parameters',
    nested namespaces joined with '/' (rcl accepts both ``/ns/node:`` and ``ns:`` then ``node:``).
    Empty when the file is not such a mapping at all."""
    if not isinstance(data, dict):
        return []
    names = []
    for key, value in data.items():
        name = f"{prefix}/{str(key).strip('/')}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            names.append(name)
        elif isinstance(value, dict):
            names += _node_sections(value, name)
    return names


def autostart(node) -> str | None:
    """Configure and activate ``node`` (a ros/lifecycle.py ManagedTransitions node) in this
    thread; None when it is active, else why not (its ``transition_error``; not logged here)."""
    from rclpy.lifecycle.node import TransitionCallbackReturn

    node.quiet_failures = True
    try:
        for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                return node.transition_error or f"{name} failed"
        return None
    finally:
        node.quiet_failures = False


def run(args: list[str] | None = None) -> int:
    """Initialise rclpy, build the node, configure and activate it unless ``autostart`` is false,
    and spin; the exit status (1 on a setup error). Called by ``main``, which also turns signals
    during the imports into a quiet exit."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    from pixloc_ros.ros.lifecycle import is_setup_error, rcl_message
    from pixloc_ros.ros.node import LocalizerNode

    node = None
    try:
        rclpy.init(args=args)
        node = LocalizerNode(sys.argv if args is None else args)
        if node.autostart:
            problem = autostart(node)
            if problem is not None:
                fatal(f"Cannot start: {problem}")
                return 1
        else:
            node.get_logger().info("unconfigured: waiting for a lifecycle manager (autostart is false)")
        rclpy.spin(node)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except RCLError as err:
        if rclpy.ok() is False and node is None and "context is invalid" in str(err):
            return 0  # a signal shut the context down while the node was being built
        fatal(f"Cannot start: {rcl_message(err)}")
        return 1
    except Exception as err:
        if not is_setup_error(err):
            raise  # a bug: its traceback is what a bug report needs
        fatal(f"Cannot start: {err}")
        return 1
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; the exit status (module doc)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started from a shell's background job, which ignores SIGINT: a node must still stop on
        # it (ros2 launch stops its processes so), as it does once rclpy's handler is in.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        problem = check_params_files(sys.argv if args is None else args)
        if problem is not None:
            fatal(f"Cannot start: {problem}")
            return 1
        return run(args)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
