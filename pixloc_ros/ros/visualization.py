"""What RViz shows of a frame: markers of the 3D points used (coloured by their final weight) and
of the keyframes. The confidence heatmaps are rendered by ``core.engine.heatmap`` (ROS-free, shared
with the demo and the evaluation's plots) and re-exported here for the node: ``~/heatmap/fused``
carries the overview (the camera image beside every level's map, colour bar), the demo's
``heatmap.png``; ``~/heatmap/level{0,1,2}`` the camera image beside that level's map.
"""
from __future__ import annotations

import cv2
import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from pixloc_ros.core.engine.heatmap import Heatmaps, render_heatmaps  # noqa: F401  (re-exported for the node)
from pixloc_ros.ros.conversions import make_header


def weight_colors(weights: np.ndarray) -> np.ndarray:
    """(N,) weights -> (N, 3) RGB in [0, 1]: viridis over weight / max weight (dark = ignored)."""
    w = np.nan_to_num(np.asarray(weights, np.float64).reshape(-1), nan=0.0)
    if w.size == 0:
        return np.zeros((0, 3))
    top = float(w.max()) if w.size and w.max() > 0 else 1.0
    levels = np.clip(np.round(255.0 * w / top), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(levels[:, None], cv2.COLORMAP_VIRIDIS)[:, 0, :]
    return bgr[:, ::-1].astype(np.float64) / 255.0


def _points_marker(header, ns: str, points_xyz: np.ndarray, point_weights: np.ndarray | None,
                   point_size_m: float) -> Marker:
    xyz = np.asarray(points_xyz, np.float64).reshape(-1, 3)
    weights = np.ones(len(xyz)) if point_weights is None else np.asarray(point_weights).reshape(-1)
    if len(weights) != len(xyz):
        raise ValueError(f"{len(xyz)} points but {len(weights)} weights")
    points = Marker(header=header, ns=ns, id=0, type=Marker.POINTS, action=Marker.ADD)
    points.scale.x = points.scale.y = point_size_m
    points.pose.orientation.w = 1.0
    points.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in xyz]
    points.colors = [ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=1.0) for c in weight_colors(weights)]
    return points


def _axis_arrows(header, ns: str, map_from_cam: np.ndarray, length_m: float, color: ColorRGBA,
                 shaft_m: float) -> list[Marker]:
    """One ARROW per pose, ``length_m`` along its optical axis (camera z), ids 0.. in order."""
    arrows = []
    for i, T in enumerate(np.asarray(map_from_cam, np.float64).reshape(-1, 4, 4)):
        arrow = Marker(header=header, ns=ns, id=i, type=Marker.ARROW, action=Marker.ADD)
        tip = T[:3, 3] + length_m * T[:3, 2]
        arrow.points = [Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                        Point(x=float(tip[0]), y=float(tip[1]), z=float(tip[2]))]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = shaft_m, 2 * shaft_m, 2 * shaft_m  # shaft, head diameter, length
        arrow.pose.orientation.w = 1.0
        arrow.color = color
        arrows.append(arrow)
    return arrows


def frame_markers(stamp_ns: int, frame_id: str, points_xyz: np.ndarray, point_weights: np.ndarray | None,
                  keyframe_map_from_cam: np.ndarray, point_size_m: float = 0.15) -> MarkerArray:
    """MarkerArray for one frame: the points used (one POINTS marker, namespace "points") and the
    keyframes used (ARROWs 2 m along their optical axes, namespace "keyframes"; the previous
    frame's arrows are deleted first, as their number changes)."""
    header = make_header(stamp_ns, frame_id)
    markers = [Marker(header=header, ns="keyframes", action=Marker.DELETEALL),
               _points_marker(header, "points", points_xyz, point_weights, point_size_m)]
    markers += _axis_arrows(header, "keyframes", keyframe_map_from_cam, 2.0, ColorRGBA(r=0.2, g=0.6, b=1.0, a=1.0), 0.2)
    return MarkerArray(markers=markers)


def rig_markers(stamp_ns: int, frame_id: str, cameras: list, keyframe_map_from_cam: np.ndarray,
                map_from_base: np.ndarray | None, point_size_m: float = 0.15) -> MarkerArray:
    """MarkerArray for one rig instant: each camera's points in its own namespace "points/<camera>"
    (RViz toggles them per camera), the keyframes used as ``frame_markers``, and, when a pose is
    published (``map_from_base`` (4, 4)), each camera's pose on the rig (namespace "rig": ARROWs
    3 m along the optical axes, id = rig order). cameras: ``CameraView``s of the instant. Every
    earlier marker of this array is deleted first: the cameras taking part change."""
    header = make_header(stamp_ns, frame_id)
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    markers += [_points_marker(header, f"points/{c.name}", c.points_xyz, c.point_weights, point_size_m)
                for c in cameras]
    markers += _axis_arrows(header, "keyframes", keyframe_map_from_cam, 2.0, ColorRGBA(r=0.2, g=0.6, b=1.0, a=1.0), 0.2)
    if map_from_base is not None:
        poses = np.stack([np.asarray(map_from_base, np.float64) @ c.base_from_camera for c in cameras]) \
            if cameras else np.zeros((0, 4, 4))
        markers += _axis_arrows(header, "rig", poses, 3.0, ColorRGBA(r=1.0, g=0.4, b=0.1, a=1.0), 0.25)
    return MarkerArray(markers=markers)
