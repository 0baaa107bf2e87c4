"""What the node shows of each frame besides its pose: confidence heatmaps and RViz markers.

One camera: ``~/heatmap/fused`` and ``~/heatmap/level{0,1,2}`` (``visualization``), markers of
the points and keyframes used. A rig (``rig_cameras``): the same topics carry the anchor camera
(the first in ``rig_cameras``), and every camera has its own ``~/heatmap/<camera>/fused`` and
``~/heatmap/<camera>/level{0,1,2}``; its points are marker namespace ``points/<camera>`` and, with
a published pose, namespace ``rig`` shows each camera's pose on the vehicle. Every publisher is a
lifecycle publisher created at configure (silent until activated), with depth 1: a display wants
the newest picture only. A camera's heatmaps are rendered only while one of its topics has a
subscriber (they cost the worker milliseconds per camera and frame), the markers likewise.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from pixloc_ros.ros import conversions as conv
from pixloc_ros.ros.visualization import frame_markers, render_heatmaps, rig_markers

LEVELS = 3


def heatmap_topics(camera: str | None = None) -> dict[str, str]:
    """Heatmap key -> topic relative to the node (``~/`` + it): "fused" and "level{k}"; under
    ``heatmap/<camera>/`` for a rig camera, else ``heatmap/``."""
    base = "heatmap" if camera is None else f"heatmap/{camera}"
    return {"fused": f"{base}/fused", **{f"level{k}": f"{base}/level{k}" for k in range(LEVELS)}}


class VisualOutputs:
    """Heatmap and marker publishers of the node, and what goes on them for one frame.

    create(msg_type, topic, depth): the node's ``create_lifecycle_publisher``; heatmaps / markers:
    the ``publish_heatmaps`` / ``publish_markers`` parameters; rig_cameras: the rig's camera names
    (empty: one camera); heatmap_scale: the tiles' size against the camera image.
    """

    def __init__(self, create: Callable, heatmaps: bool, markers: bool, rig_cameras: Sequence[str] = (),
                 heatmap_scale: float = 0.5, map_frame: str = "map"):
        self._scale, self._map_frame = heatmap_scale, map_frame
        self.heatmaps: dict[str | None, dict[str, object]] = {}  # camera (None: the single / anchor camera) -> key -> pub
        if heatmaps:
            for camera in (None, *rig_cameras):
                self.heatmaps[camera] = {key: create(Image, "~/" + topic, 1)
                                         for key, topic in heatmap_topics(camera).items()}
        self.markers = create(MarkerArray, "~/markers", 1) if markers else None

    @property
    def publishers(self) -> list:
        """Every publisher (the node destroys them at cleanup)."""
        pubs = [p for per_camera in self.heatmaps.values() for p in per_camera.values()]
        return pubs + ([self.markers] if self.markers is not None else [])

    def _heatmaps(self, camera: str | None, rgb: np.ndarray, confidences, stamp_ns: int, frame_id: str,
                  rendered: dict) -> None:
        pubs = self.heatmaps.get(camera)
        if not confidences or pubs is None:
            return
        # Rendering costs the worker milliseconds per camera: only for a topic somebody listens to.
        if not any(p.get_subscription_count() > 0 for p in pubs.values()):
            return
        key = id(confidences)  # a rig's anchor is on both its own and the plain topics: rendered once
        if key not in rendered:
            rendered[key] = render_heatmaps(rgb, confidences, scale=self._scale)
        maps = rendered[key]
        pubs["fused"].publish(conv.rgb_to_image(maps.fused, stamp_ns, frame_id))
        for level, image in enumerate(maps.levels):
            pubs[f"level{level}"].publish(conv.rgb_to_image(image, stamp_ns, frame_id))

    def publish(self, out, rgb: np.ndarray, frame_id: str, keyframe_poses: Callable[[list[int]], np.ndarray],
                rig_images: dict[str, tuple[np.ndarray, str]] | None = None) -> None:
        """One frame's pictures. out: the pipeline's ``FrameOutput``; rgb (H, W, 3) uint8 and
        frame_id: the single (or anchor) camera's image and optical frame; rig_images: camera ->
        (rgb, frame_id) for a rig instant's cameras; keyframe_poses(ids) -> (K, 4, 4) map_from_cam."""
        result = out.result
        if self.heatmaps and result is not None:
            rendered: dict = {}
            self._heatmaps(None, rgb, result.confidences, out.stamp_ns, frame_id, rendered)
            for view in out.cameras or ():
                if rig_images is not None and view.name in rig_images:
                    image, camera_frame = rig_images[view.name]
                    self._heatmaps(view.name, image, view.confidences, out.stamp_ns, camera_frame, rendered)
        if self.markers is None or self.markers.get_subscription_count() == 0:
            return
        if out.cameras is not None:
            if any(len(v.points_xyz) for v in out.cameras):
                self.markers.publish(rig_markers(out.stamp_ns, self._map_frame, out.cameras,
                                                 keyframe_poses(out.keyframe_ids),
                                                 out.map_from_base if out.success else None))
        elif out.points_xyz is not None and len(out.points_xyz):
            self.markers.publish(frame_markers(out.stamp_ns, self._map_frame, out.points_xyz, out.point_weights,
                                               keyframe_poses(out.keyframe_ids)))


__all__ = ["VisualOutputs", "heatmap_topics"]
