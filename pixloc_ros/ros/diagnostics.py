"""The node's /diagnostics content: the localization's health with its counters, and a tiled map's
tiles. Pure functions of what the node knows (the node publishes the array once a second)."""
from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from pixloc_ros.msg import LocalizationStatus
from pixloc_ros.ros.health import InputMonitor, assess

STATE_NAMES = {
    LocalizationStatus.STATE_NOT_INITIALIZED: "not_initialized",
    LocalizationStatus.STATE_RELOCALIZING: "relocalizing",
    LocalizationStatus.STATE_TRACKING: "tracking",
    LocalizationStatus.STATE_LOST: "lost",
}


def localization_status(node_name: str, map_file: str, last: LocalizationStatus | None, monitor: InputMonitor,
                        window_s: float, stale_s: float, idle_s: float | None, *, map_error: str | None,
                        skip_reason: str, counters: dict[str, int], calibrated: bool, covariance_scale: float,
                        lm, latency_s: float, image_reliable: bool, extra: dict | None = None) -> DiagnosticStatus:
    """The "<node>: localization" status: level and message from ``health.assess`` over the camera
    events of the last ``window_s`` seconds, values = counters, state, last reason and timing, LM
    path (``lm``: the pipeline's ``lm_status()``), the covariance's source and online scale. ``idle_s``: seconds since the last frame (None: none yet).
    extra: more key-values (a rig's cameras in and out of the group, ``rig_input.RigInput.diagnostics``)."""
    state = STATE_NAMES.get(last.state, str(last.state)) if last is not None else "not_initialized"
    counts = monitor.counts()
    health = assess(counts, window_s, state=state, reason=last.reason if last is not None else "",
                    tracking=last is not None and last.state == LocalizationStatus.STATE_TRACKING and last.success,
                    idle_s=idle_s, stale_s=stale_s, map_error=map_error, skip_reason=skip_reason)
    values = {**counters, "state": state, "last_reason": last.reason if last is not None else "",
              "last_time_total_s": f"{last.time_total:.3f}" if last is not None else "",
              "hypotheses": last.hypotheses if last is not None else 0,
              "covariance": "calibrated" if calibrated else "uncalibrated (conservative)",
              "covariance_scale": f"{covariance_scale:.2f}",
              "last_latency_s": f"{latency_s:.3f}",
              "image_reliability": "reliable" if image_reliable else "best_effort",
              "lm_path": lm.path, "lm_path_requested": lm.requested, "lm_path_fallback": lm.reason,
              **{f"recent_{event}": n for event, n in counts.items()}, **(extra or {})}
    return DiagnosticStatus(level=bytes([health.level]), name=f"{node_name}: localization",
                            message=health.message, hardware_id=map_file,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def map_tiles_status(node_name: str, map_file: str, health, reported: set,
                     log_error: Callable[[str], None]) -> list[DiagnosticStatus]:
    """A tiled map's tiles (``health``: the pipeline's ``map_health()``; loaded, loading, failed:
    ERROR), each failure logged once (``reported`` holds the keys already logged); [] for one file."""
    if health is None:
        return []
    for failure in health.failed:
        if failure.key not in reported:
            reported.add(failure.key)
            log_error(f"Map tile skipped: {failure.message}")
    level = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN}.get(health.level, DiagnosticStatus.ERROR)
    return [DiagnosticStatus(level=level, name=f"{node_name}: map tiles", message=health.message,
                             hardware_id=map_file, values=[KeyValue(key=k, value=v) for k, v in health.values.items()])]
