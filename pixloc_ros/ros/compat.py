"""What differs between the ROS 2 distributions the node runs on (Humble, Jazzy, Kilted), in one place.

Every name here was checked against the humble and jazzy sources (test/data/ros_api_humble_jazzy.json
records the facts, test/test_ros_api_compat.py keeps the rest of the package inside them):

- QoS event callbacks live in ``rclpy.event_handler`` from Iron on; Humble has ``rclpy.qos_event``.
  ``qos_policy_name_from_kind`` is defined in ``rclpy.qos`` on all three.
- ``Subscription.get_publisher_count()`` arrived in rclpy 4.0 (Iron); Humble counts a topic's
  publishers through the node (``Node.count_publishers(topic)``).
- DDS discovery on loopback: Humble's rcl reads ``ROS_LOCALHOST_ONLY=1``; Iron and Jazzy read both
  (the old one deprecated, two warnings per process); Kilted only ``ROS_AUTOMATIC_DISCOVERY_RANGE``.
- Fast DDS XML profiles: Fast DDS 2.x (Humble, Jazzy) reads ``FASTRTPS_DEFAULT_PROFILES_FILE``,
  3.x (Kilted) ``FASTDDS_DEFAULT_PROFILES_FILE``.
- cv_bridge and tf2_ros are optional (the PyPI wheels have neither). An installed one can still fail
  to import: apt's cv_bridge under numpy 2 raises ``AttributeError: _ARRAY_API not found``, not an
  ImportError. Any such failure means "not available", said once in the log.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

try:  # Iron, Jazzy, Kilted
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.qos import qos_policy_name_from_kind

__all__ = ["SubscriptionEventCallbacks", "qos_policy_name_from_kind", "publisher_count", "optional_module",
           "warn_once", "loopback_dds_env", "fastdds_profile_env", "FASTDDS_PROFILE_VARIABLES"]

# Fast DDS 2.x name first (Humble, Jazzy), then 3.x (Kilted); each version ignores the other's.
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def publisher_count(subscription, node) -> int:
    """Publishers of ``subscription``'s topic: matched ones (rclpy >= 4.0's
    ``Subscription.get_publisher_count``), else on Humble all publishers the graph knows on the topic
    (``node.count_publishers``; they include publishers whose QoS does not match)."""
    count = getattr(subscription, "get_publisher_count", None)
    if count is not None:
        return int(count())
    return int(node.count_publishers(subscription.topic_name))


def loopback_dds_env(distro: str | None = None) -> dict[str, str]:
    """Environment variables that keep DDS discovery on this host, for every distro (module doc).

    distro: ``ROS_DISTRO`` (default: the environment's). ROS_LOCALHOST_ONLY is left out on Iron and
    Jazzy only: they honour ROS_AUTOMATIC_DISCOVERY_RANGE and would log two deprecation warnings per
    process for the old variable; Kilted and the PyPI wheels (no ROS_DISTRO) ignore it silently.
    """
    distro = os.environ.get("ROS_DISTRO", "") if distro is None else distro
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if distro.strip().lower() not in ("iron", "jazzy"):
        env["ROS_LOCALHOST_ONLY"] = "1"
    return env


def fastdds_profile_env(path: str) -> dict[str, str]:
    """Both Fast DDS profile variables set to ``path`` (an XML profile file)."""
    return {name: str(path) for name in FASTDDS_PROFILE_VARIABLES}


_reported: set[str] = set()  # keys of warn_once (once per process)


def warn_once(key: str, text: str) -> None:
    """Log ``text`` as a warning (logger ``pixloc_ros``) the first time ``key`` is seen in this process."""
    if key in _reported:
        return
    _reported.add(key)
    try:
        from rclpy.logging import get_logger
        get_logger("pixloc_ros").warning(text)
    except Exception:  # noqa: BLE001 - logging must never be the reason a fallback fails
        print(f"[WARN] [pixloc_ros]: {text}", file=sys.stderr)


def optional_module(name: str, fix: str = "") -> ModuleType | None:
    """``importlib.import_module(name)``, or None when it is not installed or fails to import in any
    way. Not installed: silent (the PyPI wheels). Installed but broken: one warning line per module and
    process naming the error and ``fix``; the caller then uses its built-in equivalent."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name.split(".")[0]:
            return None  # not installed at all
        reason = err
    except Exception as err:  # noqa: BLE001 - e.g. AttributeError from a numpy ABI mismatch
        reason = err
    warn_once(name, f"{name} is installed but failed to import ({type(reason).__name__}: {reason}); using "
                    f"pixloc_ros' built-in equivalent{'. ' + fix if fix else ''}")
    return None
