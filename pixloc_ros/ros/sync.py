"""Pair each image with the CameraInfo of the same stamp, and say which images found none.

Why not message_filters' TimeSynchronizer, even where it is installed: it drops an image that
never finds a partner silently, and the node must log "image at t has no CameraInfo" (a
misconfigured camera_info topic is the most common set-up error). This is the same algorithm
(per-topic queues, match on stamp, bounded queue) plus drop reports, and runs where
message_filters is absent (the PyPI wheels). An image is reported unmatched as soon as it can no
longer be matched: a CameraInfo newer than it arrived (CameraInfo streams arrive in order), or
``queue_size`` newer images are waiting (no CameraInfo at all).

``tolerance_ns`` = 0 is exact matching (image_transport's CameraSubscriber); a positive value pairs
the nearest CameraInfo within it, for drivers that stamp the two slightly apart.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixloc_ros.ros.conversions import stamp_to_ns


@dataclass(frozen=True)
class Unmatched:
    """An image dropped by the synchroniser, with the reason."""

    stamp_ns: int
    image: Any
    reason: str


class StampSynchronizer:
    """Pure (ROS-free apart from message headers) image/CameraInfo pairing; thread-safe.

    ``add_image`` / ``add_info`` return the pairs completed by that message, oldest first, and
    hand images that can no longer be paired to ``on_unmatched``.
    """

    def __init__(self, queue_size: int = 10, tolerance_ns: int = 0,
                 on_unmatched: Callable[[Unmatched], None] | None = None):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        self.queue_size = queue_size
        self.tolerance_ns = tolerance_ns
        self._on_unmatched = on_unmatched
        self._images: list[tuple[int, Any]] = []  # sorted by stamp
        self._infos: list[tuple[int, Any]] = []  # sorted by stamp
        self._newest_info_ns: int | None = None  # newest CameraInfo stamp seen (matched ones included)
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every waiting message (after a clock jump)."""
        with self._lock:
            self._images.clear()
            self._infos.clear()
            self._newest_info_ns = None

    def add_image(self, image) -> list[tuple[Any, Any]]:
        """Queue an Image/CompressedImage; returns the (image, info) pairs it completes."""
        return self._add(image, is_image=True)

    def add_info(self, info) -> list[tuple[Any, Any]]:
        """Queue a CameraInfo; returns the (image, info) pairs it completes."""
        return self._add(info, is_image=False)

    def _add(self, msg, is_image: bool) -> list[tuple[Any, Any]]:
        stamp = stamp_to_ns(msg.header.stamp)
        dropped: list[Unmatched] = []
        with self._lock:
            queue = self._images if is_image else self._infos
            queue.append((stamp, msg))
            queue.sort(key=lambda item: item[0])
            if not is_image:
                self._newest_info_ns = max(stamp, self._newest_info_ns or stamp)
            pairs = self._match()
            if self._newest_info_ns is not None:
                # Infos arrive in stamp order: an image older than the newest info (beyond the
                # tolerance) whose own info is not queued will never be paired.
                newest_info = self._newest_info_ns
                while self._images and self._images[0][0] < newest_info - self.tolerance_ns:
                    s, img = self._images.pop(0)
                    dropped.append(Unmatched(s, img, f"no CameraInfo with stamp {s * 1e-9:.9f} "
                                                     f"(the latest is {newest_info * 1e-9:.9f})"))
            while len(self._images) > self.queue_size:
                s, img = self._images.pop(0)
                dropped.append(Unmatched(s, img, f"no CameraInfo received for {self.queue_size} newer images"))
            del self._infos[:-self.queue_size]
        if self._on_unmatched is not None:
            for item in dropped:
                self._on_unmatched(item)
        return pairs

    def _match(self) -> list[tuple[Any, Any]]:
        pairs, remaining = [], []
        for stamp, img in self._images:
            best = None
            for j, (info_stamp, _) in enumerate(self._infos):
                gap = abs(info_stamp - stamp)
                if gap <= self.tolerance_ns and (best is None or gap < best[0]):
                    best = (gap, j)
            if best is None:
                remaining.append((stamp, img))
            else:
                pairs.append((img, self._infos[best[1]][1]))
                # Infos up to the matched one are spent (later images have later stamps).
                del self._infos[: best[1] + 1]
        self._images = remaining
        return pairs


class CameraSubscriber:
    """Subscribes an image topic and its CameraInfo topic and calls ``callback(image, info)`` for
    each pair with equal stamps; unmatched images go to ``on_unmatched(Unmatched)``.

    compressed: the image topic carries sensor_msgs/CompressedImage.
    image_reliability: None subscribes the image topic with ``qos`` like the CameraInfo; "auto",
    "reliable" or "best_effort" make it an ``AdaptiveSubscription`` (ros/reliability.py) with
    ``qos``'s depth: how frames larger than about 0.5 MB arrive.
    admit(msg, is_image): called first for every message; False keeps it out of the pairing (a
    stamp the caller rejected, e.g. one far ahead of the clock, must not reach the queues).
    """

    def __init__(self, node, image_topic: str, info_topic: str, qos, callback: Callable[[Any, Any], None],
                 on_unmatched: Callable[[Unmatched], None] | None = None, compressed: bool = False,
                 queue_size: int = 10, tolerance_ns: int = 0, callback_group=None,
                 image_reliability: str | None = None, admit: Callable[[Any, bool], bool] | None = None,
                 log: Callable[[str], None] | None = None):
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self._callback = callback
        self._admit = admit
        self.sync = StampSynchronizer(queue_size, tolerance_ns, on_unmatched)
        image_type = CompressedImage if compressed else Image
        if image_reliability is None:
            self.image_sub = node.create_subscription(image_type, image_topic, self._on_image, qos,
                                                      callback_group=callback_group)
        else:
            from pixloc_ros.ros.reliability import AdaptiveSubscription

            depth = qos if isinstance(qos, int) else qos.depth
            self.image_sub = AdaptiveSubscription(node, image_type, image_topic, self._on_image, image_reliability,
                                                  depth, log=log, callback_group=callback_group)
        self.info_sub = node.create_subscription(CameraInfo, info_topic, self._on_info, qos,
                                                 callback_group=callback_group)
        self._node = node

    def destroy(self) -> None:
        """Remove both subscriptions (a lifecycle node's deactivate) and forget queued messages."""
        from pixloc_ros.ros.reliability import AdaptiveSubscription

        if isinstance(self.image_sub, AdaptiveSubscription):
            self.image_sub.destroy()
        else:
            self._node.destroy_subscription(self.image_sub)
        self._node.destroy_subscription(self.info_sub)
        self.sync.reset()

    def reset(self) -> None:
        """Forget queued messages (a restart of the data)."""
        self.sync.reset()

    def _on_image(self, msg) -> None:
        if self._admit is not None and not self._admit(msg, True):
            return
        for image, info in self.sync.add_image(msg):
            self._callback(image, info)

    def _on_info(self, msg) -> None:
        if self._admit is not None and not self._admit(msg, False):
            return
        for image, info in self.sync.add_info(msg):
            self._callback(image, info)
