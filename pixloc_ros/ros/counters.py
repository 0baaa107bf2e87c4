"""What the node counts since start (shown in its diagnostics): frames, published poses, and each
kind of frame without one. Counted from typed events, never from reason texts."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class NodeCounters:
    """Counts since the node started (diagnostics keys are the field names)."""

    frames: int = 0  # camera frames the worker took up
    poses: int = 0  # poses published
    rejected: int = 0  # frames the pipeline ran without publishing a pose
    bad_input: int = 0  # images, CameraInfo, odometry, GNSS or initial poses refused as malformed
    bad_stamps: int = 0  # messages refused for their stamps (ros/stamps.py)
    errors: int = 0  # frames that failed with an unexpected error (logged with the exception)
    map_errors: int = 0  # frames that needed a damaged part of the map
    unmatched_images: int = 0  # images that found no CameraInfo in time
    dropped: int = 0  # frames dropped because the worker was busy
    resets: int = 0  # localization resets (clock jumped back, bag restarted)
    wrong_locks: int = 0  # a challenger beat the tracked pose (FrameOutput.wrong_lock)
    lost: int = 0  # the tracked pose was dropped (FrameOutput.lost)

    def count_output(self, out) -> None:
        """Count one pipeline output (``core.tracking.frames.FrameOutput``)."""
        if out.success:
            self.poses += 1
        else:
            self.rejected += 1
        self.wrong_locks += bool(out.wrong_lock)
        self.lost += bool(out.lost)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
