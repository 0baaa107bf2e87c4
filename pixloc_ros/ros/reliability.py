"""A subscription whose reliability follows its publishers: how camera frames of any size arrive.

Why (measured with the Fast DDS 3.2 of the Kilted wheels, README "QoS"): a best-effort link
loses every frame larger than the *publisher's* shared-memory segment (512 KiB by default;
640x480 rgb8 is 900 kB), because the fragments of one sample overrun the segment and best effort
never resends one; over UDP the same happens when the fragments overrun the socket buffer. A
reliable link resends lost fragments: 1920x1080 bgr8 at 10 Hz arrived 50 of 50 with Fast DDS's
defaults. But a reliable subscription does not match a best-effort publisher at all (no data,
only an "incompatible QoS" event), and sensor drivers publish either.

So ``auto`` subscribes reliable unless a best-effort publisher is already on the topic, and
re-subscribes best effort when one appears later: on the ``incompatible_qos`` event, and, should
that event be missed, when a once-a-second look at the graph (steady time: /clock may be stopped)
lists a best-effort publisher. A best-effort subscription matches every publisher, so there is
at most one switch. ``reliable`` and ``best_effort`` fix the policy (an incompatible publisher is
then reported, not followed).
"""
from __future__ import annotations

from collections.abc import Callable

from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from pixloc_ros.ros.compat import SubscriptionEventCallbacks, qos_policy_name_from_kind

MODES = ("auto", "reliable", "best_effort")


def _profile(reliable: bool, depth: int) -> QoSProfile:
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


class AdaptiveSubscription:
    """``node.create_subscription(msg_type, topic, callback, ...)`` with the reliability of ``mode``
    (module doc). ``log(text)`` is told about every switch and every incompatible publisher."""

    def __init__(self, node, msg_type, topic: str, callback: Callable, mode: str = "auto", depth: int = 5,
                 log: Callable[[str], None] | None = None, callback_group=None):
        if mode not in MODES:
            raise ValueError(f"Unsupported reliability mode {mode!r}, expected one of {MODES}")
        self._node, self._type, self._topic, self._callback = node, msg_type, topic, callback
        self._mode, self._depth, self._group = mode, depth, callback_group
        self._log = log or (lambda text: node.get_logger().warning(text))
        reliable = mode == "reliable" or (mode == "auto" and not self._best_effort_publishers())
        self.subscription = self._subscribe(reliable)
        self._timer = None
        if mode == "auto" and reliable:
            self._timer = node.create_timer(1.0, self._poll, callback_group=callback_group,
                                            clock=Clock(clock_type=ClockType.STEADY_TIME))

    @property
    def reliable(self) -> bool:
        """Whether the subscription is reliable now."""
        return self.subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE

    @property
    def topic_name(self) -> str:
        return self.subscription.topic_name

    def _best_effort_publishers(self) -> bool:
        infos = self._node.get_publishers_info_by_topic(self._node.resolve_topic_name(self._topic))
        return any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)

    def _subscribe(self, reliable: bool):
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible) if reliable else None
        return self._node.create_subscription(self._type, self._topic, self._callback, _profile(reliable, self._depth),
                                              callback_group=self._group, event_callbacks=events)

    def _on_incompatible(self, info) -> None:
        """A publisher our reliable subscription cannot match (a best-effort one) was discovered."""
        topic = self.subscription.topic_name
        if self._mode != "auto":
            self._log(f"{topic}: a publisher offers QoS this reliable subscription cannot match "
                      f"({qos_policy_name_from_kind(info.last_policy_kind)}); no data comes from it. "
                      f"Set image_reliability to auto or best_effort, or publish reliable")
            return
        self._switch_to_best_effort()

    def _poll(self) -> None:
        """The graph lists a best-effort publisher: switch even if its event never came."""
        if self.reliable and self._best_effort_publishers():
            self._switch_to_best_effort()

    def _switch_to_best_effort(self) -> None:
        if not self.reliable:  # the event and the poll can both see one publisher
            return
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        topic = self.subscription.topic_name
        self._node.destroy_subscription(self.subscription)
        self.subscription = self._subscribe(reliable=False)
        self._log(f"{topic}: a best-effort publisher appeared: subscribing best effort from now on. Frames larger "
                  f"than the publisher's transport can carry best effort (about 0.5 MB with Fast DDS's defaults) "
                  f"will not arrive: publish reliable or give the publisher a larger shared-memory segment "
                  f"(README, QoS)")

    def destroy(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        self._node.destroy_subscription(self.subscription)
