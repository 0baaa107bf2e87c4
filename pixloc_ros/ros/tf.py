"""tf: broadcasting transforms and looking up static ones (the camera extrinsic).

tf2_ros is used where it is installed (a ROS 2 install). The PyPI wheels have no tf2_ros, so
this module also holds small equivalents with tf2_ros' topics and QoS: a broadcaster is a
``tf2_msgs/TFMessage`` publisher on ``/tf`` (volatile, depth 100) or ``/tf_static``
(transient-local, depth 1, the whole set re-sent on each change); the listener only keeps
``/tf_static``, which is all the node looks up (the camera extrinsic). Both variants have one
interface: ``TransformBroadcaster.send``, ``StaticTransformBroadcaster.send``,
``StaticTransformLookup.lookup``.

Frame ids follow tf2's rules in both variants: a transform's frame ids may carry a leading '/'
(tf2 strips it when a transform is added), but a lookup with an empty or '/'-prefixed frame id is
invalid (tf2 raises InvalidArgumentException): ``lookup`` raises ValueError naming the frame, so
the node skips that frame with a status that says why.
"""
from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from pixloc_ros.data.bags import StaticTransform, static_transform_chain
from pixloc_ros.ros.compat import optional_module
from pixloc_ros.ros.conversions import transform_msg_to_matrix

tf2_ros = optional_module("tf2_ros")  # a ROS 2 install; absent from the PyPI wheels

TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
# tf2_ros listens to /tf_static with depth 100: one message per static broadcaster.
TF_STATIC_LISTENER_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)


def check_lookup_frames(target_frame: str, source_frame: str) -> None:
    """ValueError unless both frame ids are valid in a tf2 lookup: not empty, no leading '/'."""
    for frame_id in (target_frame, source_frame):
        reason = ("tf2 frame ids cannot be empty" if not frame_id else
                  "tf2 frame ids cannot start with a '/'" if frame_id.startswith("/") else None)
        if reason:
            raise ValueError(f"cannot look up the transform {target_frame!r} <- {source_frame!r}: {reason}")


def using_tf2_ros() -> bool:
    """True when tf2_ros is installed and used by the classes below."""
    return tf2_ros is not None


class TransformBroadcaster:
    """Sends TransformStamped messages on /tf (``tf2_ros.TransformBroadcaster`` when installed)."""

    def __init__(self, node):
        if tf2_ros is not None:
            self._impl = tf2_ros.TransformBroadcaster(node)
            self._pub = None
        else:
            self._impl = None
            self._pub = node.create_publisher(TFMessage, "/tf", TF_QOS)

    def send(self, transforms: TransformStamped | list[TransformStamped]) -> None:
        """Broadcast one transform or a list of them."""
        transforms = [transforms] if isinstance(transforms, TransformStamped) else list(transforms)
        if self._impl is not None:
            self._impl.sendTransform(transforms)
        else:
            self._pub.publish(TFMessage(transforms=transforms))

    def destroy(self, node) -> None:
        """Remove the /tf publisher from ``node`` (a lifecycle node's cleanup)."""
        node.destroy_publisher(self._impl.pub_tf if self._impl is not None else self._pub)


class StaticTransformBroadcaster:
    """Latches static transforms on /tf_static (``tf2_ros.StaticTransformBroadcaster`` when installed).

    Like tf2_ros, it remembers every transform sent (keyed by child frame) and re-publishes the
    whole set, so that one latched message holds all of this node's static transforms.
    """

    def __init__(self, node):
        if tf2_ros is not None:
            self._impl = tf2_ros.StaticTransformBroadcaster(node)
            self._pub = None
        else:
            self._impl = None
            self._pub = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self._by_child: dict[str, TransformStamped] = {}

    def send(self, transforms: TransformStamped | list[TransformStamped]) -> None:
        """Add (or replace) static transforms and publish the whole set."""
        transforms = [transforms] if isinstance(transforms, TransformStamped) else list(transforms)
        if self._impl is not None:
            self._impl.sendTransform(transforms)
            return
        for t in transforms:
            self._by_child[t.child_frame_id] = t
        self._pub.publish(TFMessage(transforms=list(self._by_child.values())))


class StaticTransformGraph:
    """The static tf tree; ``lookup`` chains its edges (``data.bags.static_transform_chain``). Thread-safe."""

    def __init__(self):
        self._by_child: dict[str, StaticTransform] = {}  # a frame has one parent, as in tf
        self._lock = threading.Lock()

    def add(self, parent: str, child: str, parent_from_child: np.ndarray) -> None:
        """Insert or replace the edge parent -> child (leading slashes ignored, as tf2 does)."""
        edge = StaticTransform.from_matrix(parent.lstrip("/"), child.lstrip("/"), parent_from_child)
        with self._lock:
            self._by_child[edge.child_frame] = edge

    def add_message(self, msg: TFMessage) -> None:
        """Insert every transform of a TFMessage; a malformed one raises ValueError (others kept)."""
        errors = []
        for t in msg.transforms:
            try:
                self.add(t.header.frame_id, t.child_frame_id, transform_msg_to_matrix(t.transform))
            except ValueError as err:
                errors.append(f"{t.header.frame_id}->{t.child_frame_id}: {err}")
        if errors:
            raise ValueError("; ".join(errors))

    def lookup(self, target_frame: str, source_frame: str) -> np.ndarray | None:
        """target_from_source (4, 4) through the static tree, or None when the frames are not connected.
        ValueError for a frame id tf2 would reject (module doc)."""
        check_lookup_frames(target_frame, source_frame)
        with self._lock:
            edges = list(self._by_child.values())
        try:
            return static_transform_chain(edges, target_frame, source_frame)
        except KeyError:
            return None


class StaticTransformLookup:
    """Looks up static transforms (``tf2_ros.Buffer`` + ``TransformListener`` when installed, else a
    /tf_static subscription feeding a StaticTransformGraph).

    ``on_error(text)`` receives malformed /tf_static content (fallback only).
    """

    def __init__(self, node, on_error=None):
        self._on_error = on_error
        if tf2_ros is not None:
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
            self._graph = None
        else:
            self._buffer = None
            self._graph = StaticTransformGraph()
            self._sub = node.create_subscription(TFMessage, "/tf_static", self._on_static, TF_STATIC_LISTENER_QOS)

    def destroy(self, node) -> None:
        """Remove the /tf_static (and tf2_ros' /tf) subscriptions from ``node`` (a lifecycle node's cleanup)."""
        if self._graph is not None:
            node.destroy_subscription(self._sub)
        else:
            self._listener.unregister()

    def _on_static(self, msg: TFMessage) -> None:
        try:
            self._graph.add_message(msg)
        except ValueError as err:
            if self._on_error is not None:
                self._on_error(f"ignored malformed /tf_static transforms: {err}")

    def lookup(self, target_frame: str, source_frame: str) -> np.ndarray | None:
        """target_from_source (4, 4) float64, latest available, or None when unknown (never waits).
        ValueError for an empty or '/'-prefixed frame id (module doc)."""
        if self._graph is not None:
            return self._graph.lookup(target_frame, source_frame)
        check_lookup_frames(target_frame, source_frame)
        from rclpy.time import Time
        try:
            t = self._buffer.lookup_transform(target_frame, source_frame, Time())
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException):
            return None
        except tf2_ros.InvalidArgumentException as err:  # any other id tf2 rejects
            raise ValueError(f"tf2 rejects the lookup {target_frame!r} <- {source_frame!r}: {err}") from err
        return transform_msg_to_matrix(t.transform)
