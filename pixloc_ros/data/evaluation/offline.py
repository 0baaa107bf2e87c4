"""Offline replay of a recorded drive through the relocalization pipeline (no DDS), scored
against the drive's ground truth: what `pixloc-ros evaluate` and the benchmarks run.

Messages are fed in stamp order, as the node receives them: odometry and GNSS up to an image's
stamp, then the image. The pipeline is the node's own (core/tracking/pipeline.py), so the figures are
what the node would publish.
"""
from __future__ import annotations

import json
import math
from bisect import bisect_left
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ...core.geometry.camera import Camera
from ...core.tracking.covariance_calibration import NEES_BOUND_95, CalibrationSample, nees, rotation_blocks
from pixloc_ros.core.geometry.transforms import pose_difference
from ...core.geometry.metrics import AccuracySummary, pose_errors, summarize
from ...core.tracking.frames import Estimate
from ...core.tracking.pipeline import RelocalizationPipeline
from ...core.tracking.reasons import Reason, Why
from pixloc_ros.core.tracking.frames import FrameInput, FrameOutput
from ..bags import Drive, PoseSample, read_drive


@dataclass
class FrameRecord:
    """One frame of the replay and its error against the ground truth."""

    stamp_ns: int
    state: int
    success: bool
    reason: str  # "ok" or "<key>: <detail>" (``core.tracking.reasons.Why.text``)
    map_from_base: list | None  # (4, 4) as nested lists (JSON), None when nothing was published
    gt_map_from_base: list | None
    reason_code: int = 0  # ``core.tracking.reasons.Reason`` (LocalizationStatus.REASON_*)
    translation_error_m: float = math.nan
    rotation_error_deg: float = math.nan
    # Error of the estimate before gating (``estimate``), published or not (NaN when PixLoc did not
    # run): what the gating saw, for tuning it.
    raw_translation_error_m: float = math.nan
    raw_rotation_error_deg: float = math.nan
    total_s: float = 0.0  # pipeline wall time of the frame
    network_s: float = 0.0
    optimizer_s: float = 0.0
    num_points: int = 0
    # The published 6x6 covariance of base_link in the map, ROS order (x y z rx ry rz), None when
    # nothing was published, and its NEES against the ground truth (6 dof).
    covariance: list | None = None
    nees: float = math.nan
    covariance_calibrated: bool = False
    # The estimate the decision was about, before gating (published or not; the pipeline's own
    # ``Estimate``: pose, the covariance it would have been published with, the uncalibrated
    # sigma^2 H^-1, the fine-level inlier ratio that ``pixloc-ros calibrate`` fits on), and its NEES.
    estimate: Estimate | None = None
    estimate_nees: float = math.nan
    # Gate statistics: d^2 of the estimate against its hypothesis' odometry prediction and the
    # gate's limit, live hypotheses, the leader's streak (frames, metres) and cost margin.
    gate: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record as JSON values; the estimate's fields flattened as ``estimate_<field>`` (``None``
        and NaN where there is no estimate)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "estimate"}
        est = self.estimate.to_json() if self.estimate is not None else dict.fromkeys(
            ("map_from_base", "covariance", "hessian_covariance", "inlier_ratio", "cost", "num_valid", "jitter_m"))
        if self.estimate is None:
            est.update(inlier_ratio=math.nan, cost=math.nan, num_valid=0)
        out.update({f"estimate_{k}": v for k, v in est.items()})
        return out


@dataclass
class DriveEvaluation:
    """Result of ``evaluate_drive``: per-frame records and the summary figures."""

    bag: str
    frames: list[FrameRecord]
    summary: AccuracySummary
    latency_s: dict[str, float] = field(default_factory=dict)  # p50 / p90 / max of frames that ran PixLoc

    def consistency(self, max_translation_m: float = 1.0, max_rotation_deg: float = 5.0) -> dict:
        """What an EKF would get from the published poses: how many are wrong (worse than
        ``max_translation_m`` or ``max_rotation_deg``) and how consistent their covariances are
        (NEES, 6 dof: mean, median and the share inside the 95 % chi-square bound)."""
        published = [f for f in self.frames if f.success and f.gt_map_from_base is not None]
        wrong = [f for f in published if not (f.translation_error_m <= max_translation_m
                                              and f.rotation_error_deg <= max_rotation_deg)]
        values = np.array([f.nees for f in published if math.isfinite(f.nees)])
        return {"published": len(published), "published_wrong": len(wrong),
                "wrong_thresholds": [max_translation_m, max_rotation_deg],
                "nees_count": int(values.size),
                "nees_mean": float(values.mean()) if values.size else math.nan,
                "nees_median": float(np.median(values)) if values.size else math.nan,
                "nees_share_inside_95": float(np.mean(values <= NEES_BOUND_95)) if values.size else math.nan,
                "nees_bound_95": NEES_BOUND_95}

    def consistency_text(self) -> str:
        """One line: wrong published poses and NEES."""
        c = self.consistency()
        line = (f"published poses worse than {c['wrong_thresholds'][0]:g} m / {c['wrong_thresholds'][1]:g} deg: "
                f"{c['published_wrong']} of {c['published']}")
        if c["nees_count"]:
            line += (f"; NEES (6 dof) mean {c['nees_mean']:.2f}, median {c['nees_median']:.2f}, "
                     f"{100 * c['nees_share_inside_95']:.0f}% inside the 95% bound ({c['nees_bound_95']:.1f})")
        return line

    def to_json(self) -> dict:
        """The JSON report; keys ``recall`` (3 fractions), ``median_translation_m``,
        ``median_rotation_deg``, ``frames``, ``localized``, ``consistency`` (wrong poses, NEES)
        at the top level, ``per_frame`` records (``FrameRecord``)."""
        s = self.summary
        return {
            "bag": self.bag,
            "frames": s.frames,
            "localized": s.localized,
            "recall": s.recall,
            "thresholds": [list(t) for t in s.thresholds],
            "median_translation_m": s.median_translation_m,
            "median_rotation_deg": s.median_rotation_deg,
            "max_translation_m": s.max_translation_m,
            "max_rotation_deg": s.max_rotation_deg,
            "latency_s": self.latency_s,
            "consistency": self.consistency(),
            "per_frame": [f.to_json() for f in self.frames],
        }

    def save_json(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=True) + "\n")


class GroundTruth:
    """Ground-truth ``map_from_base`` looked up by stamp (exact, or the nearest within a tolerance)."""

    def __init__(self, samples: list[PoseSample], tolerance_s: float = 0.02):
        self.stamps = [s.stamp_ns for s in samples]
        self.samples = samples
        self.tolerance_ns = int(tolerance_s * 1e9)

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """(4, 4) or None when no sample lies within the tolerance."""
        if not self.stamps:
            return None
        i = bisect_left(self.stamps, stamp_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)), key=lambda j: abs(self.stamps[j] - stamp_ns))
        if abs(self.stamps[best] - stamp_ns) > self.tolerance_ns:
            return None
        return self.samples[best].matrix


def camera_from_info(info) -> Camera:
    """Engine camera from a recorded CameraInfo (``data.bags.CameraInfoData``)."""
    return Camera.from_camera_info(info.width, info.height, info.k, info.d, info.distortion_model)


class _NetworkAhead:
    """``pipeline.extract`` of frame i+1 on a second thread while frame i is processed (overlap)."""

    def __init__(self, pipeline: RelocalizationPipeline, items: list, make_frame: Callable):
        from concurrent.futures import ThreadPoolExecutor

        self.pipeline, self.items, self.make_frame = pipeline, items, make_frame
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixloc-network")
        self.futures: dict = {}

    def _extract(self, i: int):
        frame = self.make_frame(self.items[i])
        return frame, self.pipeline.extract(frame)

    def take(self, i: int):
        """Frame i and its features (ValueError as ``make_frame`` or ``extract`` raise it); frame
        i+1's start now."""
        future = self.futures.pop(i, None) or self.pool.submit(self._extract, i)
        if i + 1 < len(self.items) and i + 1 not in self.futures:
            self.futures[i + 1] = self.pool.submit(self._extract, i + 1)
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def evaluate_drive(pipeline: RelocalizationPipeline, drive: Drive | str | Path, *, max_frames: int | None = None,
                   use_gnss: bool = True, on_frame: Callable[[FrameOutput, FrameInput], None] | None = None,
                   progress: bool = False, overlap: bool = False) -> DriveEvaluation:
    """Replay ``drive`` (a ``Drive`` or a bag folder) through ``pipeline`` and score it.

    max_frames: stop after this many images; use_gnss: feed the GNSS fixes (the relocalization
    prior); on_frame: called with each output (plots, heatmaps). Frames the pipeline refuses
    as malformed count as not localized, with the error as reason. overlap: the network of the
    next frame runs on a second thread while this frame's LM runs (as the node's worker does with
    ``overlap_network``); the results are the same, the latencies include the wait between the two.
    """
    if not isinstance(drive, Drive):
        drive = read_drive(drive)
    frames = drive.frames[:max_frames] if max_frames else drive.frames
    base_from_cam = drive.base_from_camera()
    cameras: dict[int, Camera] = {}  # CameraInfo object id -> engine camera (converted once per info)

    def single(item) -> FrameInput:
        if item.camera_info is None:
            raise ValueError("no CameraInfo for this image")
        camera = cameras.get(id(item.camera_info))
        if camera is None:
            camera = cameras[id(item.camera_info)] = camera_from_info(item.camera_info)
        return FrameInput(item.stamp_ns, item.image, camera, base_from_cam)

    return replay_frames(pipeline, drive, [(f.stamp_ns, f) for f in frames], single, use_gnss=use_gnss,
                         on_frame=on_frame, progress=progress, overlap=overlap)


def replay_frames(pipeline: RelocalizationPipeline, drive: Drive, frames: list, make_frame: Callable, *,
                  use_gnss: bool = True, on_frame: Callable | None = None, progress: bool = False,
                  overlap: bool = False) -> DriveEvaluation:
    """The replay behind ``evaluate_drive``: ``drive``'s odometry, GNSS and ground truth, and
    ``frames`` ((stamp_ns, item) in stamp order), each turned into the pipeline's input by
    ``make_frame(item)`` (a ``FrameInput`` or a rig's ``RigFrameInput``; ValueError: a malformed
    frame, recorded as not localized). ``on_frame(output, frame input)``. overlap: as
    ``evaluate_drive``'s (``pipeline.extract`` of the next frame on a second thread)."""
    truth = GroundTruth(drive.ground_truth)
    events = [(o.stamp_ns, 0, o) for o in drive.odometry]
    if use_gnss:
        events += [(g.stamp_ns, 1, g) for g in drive.gnss]
    events += [(stamp, 2, item) for stamp, item in frames]
    events.sort(key=lambda e: (e[0], e[1]))

    iterator = events
    if progress:
        from tqdm import tqdm
        iterator = tqdm(events, desc="evaluate", unit="msg")
    records: list[FrameRecord] = []
    ahead = _NetworkAhead(pipeline, [e[2] for e in events if e[1] == 2], make_frame) if overlap else None
    try:
        _replay(pipeline, iterator, truth, records, ahead, on_frame, make_frame)
    finally:
        if ahead is not None:
            ahead.close()
    scored = [r for r in records if r.success and r.gt_map_from_base is not None]
    summary = summarize([r.translation_error_m for r in scored], [r.rotation_error_deg for r in scored],
                        frames=sum(r.gt_map_from_base is not None for r in records))
    ran = np.array([r.total_s for r in records if r.network_s > 0])
    latency = {} if ran.size == 0 else {"p50": float(np.percentile(ran, 50)), "p90": float(np.percentile(ran, 90)),
                                        "max": float(ran.max()), "count": int(ran.size)}
    return DriveEvaluation(str(drive.bag_dir), records, summary, latency)


def _replay(pipeline, iterator, truth, records: list, ahead: _NetworkAhead | None, on_frame, make_frame) -> None:
    """The events of a drive, in order, through the pipeline; one ``FrameRecord`` per image into ``records``."""
    index = -1
    for stamp, kind, item in iterator:
        if kind == 0:
            pipeline.add_odometry(stamp, item.matrix)
            continue
        if kind == 1:
            if item.status >= 0:
                pipeline.add_gnss(stamp, item.latitude_deg, item.longitude_deg, item.altitude_m, item.covariance)
            continue
        gt = truth.at(stamp)
        index += 1
        try:
            # Sequential: process(frame) as before the overlap (callers may wrap process with that
            # signature); overlapped: the frame and its features as the other thread made them.
            if ahead is None:
                frame = make_frame(item)
                out = pipeline.process(frame)
            else:
                frame, features = ahead.take(index)
                out = pipeline.process(frame, features)
        except ValueError as err:
            why = Why(Reason.BAD_INPUT, str(err))
            records.append(FrameRecord(stamp, int(pipeline.state), False, why.text, None,
                                       None if gt is None else gt.tolist(), reason_code=int(why.code)))
            continue
        if on_frame is not None:
            on_frame(out, frame)
        rec = FrameRecord(stamp, int(out.state), out.success, out.reason,
                          None if out.map_from_base is None else out.map_from_base.tolist(),
                          None if gt is None else gt.tolist(), reason_code=int(out.why.code),
                          total_s=out.timings.total_s, network_s=out.timings.network_s,
                          optimizer_s=out.timings.optimizer_s,
                          num_points=0 if out.result is None else int(out.result.num_valid),
                          covariance_calibrated=out.covariance_calibrated, gate=asdict(out.gate),
                          estimate=out.estimate)
        if out.success:
            rec.covariance = out.covariance_ros.tolist()
        if out.success and gt is not None:
            dt, dr = pose_errors(out.map_from_base[:3, :3], out.map_from_base[:3, 3], gt[:3, :3], gt[:3, 3])
            rec.translation_error_m, rec.rotation_error_deg = float(dt), float(dr)
            rec.nees = nees(pose_difference(out.map_from_base, gt), out.covariance_ros)
        est = out.estimate
        if est is not None and gt is not None:
            dt, dr = pose_errors(est.map_from_base[:3, :3], est.map_from_base[:3, 3], gt[:3, :3], gt[:3, 3])
            rec.raw_translation_error_m, rec.raw_rotation_error_deg = float(dt), float(dr)
            if est.covariance is not None:
                rec.estimate_nees = nees(pose_difference(est.map_from_base, gt), est.covariance)
        records.append(rec)


def calibration_samples(records: list[dict], max_translation_m: float = 1.0,
                        max_rotation_deg: float = 5.0) -> list[CalibrationSample]:
    """Covariance calibration samples from per-frame records (``FrameRecord`` as dicts, e.g. the
    ``per_frame`` list of ``pixloc-ros evaluate --json``).

    A frame counts when its estimate has a Hessian covariance and ground truth, and is a correct
    lock (within ``max_translation_m`` and ``max_rotation_deg``): a wrong lock is the state
    machine's to catch, and a Gaussian fitted to it would only widen every covariance. Errors
    and covariances are moved to base_link axes (the model's, see core/tracking/covariance_calibration.py).
    """
    samples = []
    for r in records:
        if r.get("estimate_hessian_covariance") is None or r.get("gt_map_from_base") is None:
            continue
        if not (r["raw_translation_error_m"] <= max_translation_m and r["raw_rotation_error_deg"] <= max_rotation_deg):
            continue
        est, gt = np.asarray(r["estimate_map_from_base"], np.float64), np.asarray(r["gt_map_from_base"], np.float64)
        A = rotation_blocks(est[:3, :3])
        samples.append(CalibrationSample(A.T @ np.asarray(r["estimate_hessian_covariance"], np.float64) @ A,
                                         float(r["estimate_inlier_ratio"]), r.get("estimate_jitter_m"),
                                         A.T @ pose_difference(est, gt)))
    return samples


def inlier_ratio_samples(records: list[dict], correct_m: float = 0.25, correct_deg: float = 2.0,
                         wrong_m: float = 1.0, wrong_deg: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """The fine-level inlier ratios of correct (within ``correct_m`` / ``correct_deg``) and wrong
    (beyond ``wrong_m`` or ``wrong_deg``) estimates in per-frame records with ground truth: (N,), (M,).

    The estimate (published or not, the frame's best result) is what a gate sees, so both kinds
    count: what the inlier gates of the weights are fitted on (core/tracking/inlier_gates.py)."""
    correct, wrong = [], []
    for r in records:
        t, a, ratio = (r.get(k) for k in ("raw_translation_error_m", "raw_rotation_error_deg", "estimate_inlier_ratio"))
        if r.get("gt_map_from_base") is None or t is None or a is None or ratio is None:
            continue
        if not (math.isfinite(t) and math.isfinite(a) and math.isfinite(ratio)):
            continue
        if t <= correct_m and a <= correct_deg:
            correct.append(ratio)
        elif t > wrong_m or a > wrong_deg:
            wrong.append(ratio)
    return np.array(correct, np.float64), np.array(wrong, np.float64)

