"""A covariance the EKF can use: the Hessian-based estimate calibrated on drives with ground truth.

Why a calibration: ``sigma^2 H^-1`` (core/engine/covariance.py) is the covariance of the estimate
under independent residuals and a perfect map. Neither holds: neighbouring pixels and the
channels of one descriptor are correlated, the SfM points and the reference features carry
their own errors, and the features of a snowy or dark image match the summer map worse in ways
the residuals only partly show. Published as it was (plus a fixed floor), it gave a mean NEES
of 4.9 in overcast, 35 in autumn and 90 in snow (BENCHMARKS.md, "A pose the EKF can trust").
The model:

    Sigma_base = inflation * m(z) * (hessian_scale * shape(Sigma_H,base) + diag(floor_std)^2)
    shape(S) = S / trace(S_position) (m^2: the Hessian's shape, unit total position variance)
    m(z) = exp(slopes . (z - z_ref)),  z = (1 - inlier ratio, log(jitter + 0.02 m))

in base_link axes (x forward, y left, z up; rotations about them), where ``Sigma_H,base`` is
``sigma^2 H^-1`` moved to base_link. Only its shape is used (which directions the points
constrain, how rotation and translation trade off): its scale is what the correlated residuals
make wrong, and it misleads across seasons (in an exploration on the calibration drives, fitted
with its scale the autumn drives came out 2-15x over-covered and snow under-covered; with the
shape alone the drives' mean NEES spread less, at the same likelihood). The floor holds what the
Hessian cannot see (map and feature errors, strongest along the road); ``m(z)`` widens
everything when the images match the map badly, by two residual statistics: the frame's
fine-level inlier ratio, and the *jitter* of the hypothesis, the RMS distance of its last few
results from their odometry predictions (consecutive snow or dusk frames disagree by decimetres
where the odometry is good to centimetres: median gate d^2 0.1-0.3 in overcast, 2.6-4.2 in snow
and dusk on the calibration drives, while the inlier ratio alone misorders seasons between
worlds); ``inflation`` is a final scale for what the frame's figures do not show (heavy tails,
conditions that differ between drives), fitted so that every calibration drive is covered
(``fit_calibration``). The parameters belong to one set of weights: they are fitted by
``pixloc-ros calibrate`` on drives held out from any evaluation and stored next to the weights
(``<weights>.covariance.json``) with the weights' fingerprint, never hard-coded.

Errors and covariances in ROS order (x, y, z, rot_x, rot_y, rot_z), see core/engine/covariance.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.stats import chi2

from .inlier_gates import InlierGates

FORMAT = "pixloc_ros.covariance_calibration/1"
NEES_DOF = 6
JITTER_FLOOR_M = 0.02  # odometry error over one frame: jitter below this is noise
NEES_BOUND_95 = float(chi2.ppf(0.95, NEES_DOF))  # 12.59: 95 % of consistent 6-DoF errors fall below


def calibration_path_for(weights: str | Path) -> Path:
    """Where the calibration of ``weights`` is stored: ``<weights without suffix>.covariance.json``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".covariance.json")


def rotation_blocks(R_map_base: np.ndarray) -> np.ndarray:
    """(6, 6) blockdiag(R, R): maps a base_link-axes 6-vector (position, rotation vector) to map axes."""
    A = np.zeros((6, 6))
    A[:3, :3] = A[3:, 3:] = np.asarray(R_map_base, np.float64).reshape(3, 3)
    return A


def nees(error: np.ndarray, covariance: np.ndarray) -> float:
    """Normalised estimation error squared ``e^T Sigma^-1 e`` of one (6,) error, inf when Sigma is singular."""
    e = np.asarray(error, np.float64).reshape(-1)
    try:
        return float(e @ np.linalg.solve(np.asarray(covariance, np.float64), e))
    except np.linalg.LinAlgError:
        return math.inf


@dataclass
class CalibrationSample:
    """One localized frame of a calibration drive (everything in base_link axes)."""

    hessian_covariance: np.ndarray  # (6, 6) sigma^2 H^-1 of map_from_base, base_link axes
    inlier_ratio: float  # fine-level inlier ratio of the frame's result
    jitter_m: float | None  # the hypothesis' jitter before this frame (None: no history yet)
    error: np.ndarray  # (6,) estimate minus ground truth, base_link axes (ROS error convention)


@dataclass
class CovarianceCalibration:
    """Fitted parameters of the module's model, tied to one set of weights."""

    hessian_scale: float  # m^2: multiplies the shape of sigma^2 H^-1 (unit position trace)
    floor_std: tuple[float, ...]  # (6,) std added per base_link axis: metres (x y z), radians (roll pitch yaw)
    slopes: tuple[float, float]  # log-scale change per unit of z = (1 - inlier ratio, log(jitter + floor))
    z_reference: tuple[float, float]  # z at which m(z) = 1 (the calibration data's median)
    default_jitter_m: float = 0.3  # jitter assumed for a hypothesis without history (fitted: a high quantile)
    inflation: float = 1.0  # final scale for the spread between conditions
    weights_fingerprint: str = ""  # sha256 of the weights' state dict (checkpoint.weights_fingerprint)
    fitted_on: dict = field(default_factory=dict)  # drives, sample count, figures of the fit
    inlier_gates: InlierGates | None = None  # the gating thresholds fitted for the same weights (None: defaults)

    def __post_init__(self):
        if isinstance(self.inlier_gates, dict):
            self.inlier_gates = InlierGates.from_json(self.inlier_gates)
        if len(self.floor_std) != 6 or len(self.slopes) != 2 or len(self.z_reference) != 2:
            raise ValueError(f"covariance calibration needs 6 floor_std values and 2 slopes and z_reference values, "
                             f"got floor_std={self.floor_std}, slopes={self.slopes}")
        values = [self.hessian_scale, self.inflation, self.default_jitter_m, *self.slopes, *self.z_reference,
                  *self.floor_std]
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"covariance calibration parameters must be finite, got {values}")
        if self.hessian_scale < 0 or self.inflation <= 0 or min(self.floor_std) < 0:
            raise ValueError("covariance calibration: hessian_scale and floor_std must be >= 0, inflation > 0")
        self.floor_std = tuple(float(v) for v in self.floor_std)
        self.slopes = tuple(float(v) for v in self.slopes)
        self.z_reference = tuple(float(v) for v in self.z_reference)

    def covariance_base(self, hessian_covariance_base: np.ndarray, inlier_ratio: float,
                        jitter_m: float | None) -> np.ndarray:
        """(6, 6) calibrated covariance in base_link axes from sigma^2 H^-1 (base_link axes), the
        frame's fine-level inlier ratio and the hypothesis' jitter (m; None: ``default_jitter_m``)."""
        jitter = self.default_jitter_m if jitter_m is None else jitter_m
        z = features(inlier_ratio, jitter) - np.asarray(self.z_reference)
        m = self.inflation * math.exp(float(np.dot(self.slopes, z)))
        return m * (self.hessian_scale * hessian_shape(hessian_covariance_base) + np.diag(np.square(self.floor_std)))

    def covariance_ros(self, hessian_covariance_ros: np.ndarray, R_map_base: np.ndarray,
                       inlier_ratio: float, jitter_m: float | None) -> np.ndarray:
        """(6, 6) calibrated ROS covariance (map axes) from the Hessian-based ROS covariance (map axes)."""
        A = rotation_blocks(R_map_base)
        base = A.T @ np.asarray(hessian_covariance_ros, np.float64) @ A
        out = A @ self.covariance_base(base, inlier_ratio, jitter_m) @ A.T
        return 0.5 * (out + out.T)

    # ---- files ---------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str | None = None) -> "CovarianceCalibration":
        """Read a calibration; ValueError when the file is malformed or belongs to other weights."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the covariance calibration {path}: {err}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a covariance calibration (expected format {FORMAT!r})")
        names = {"hessian_scale", "floor_std", "slopes", "z_reference", "default_jitter_m", "inflation",
                 "weights_fingerprint", "fitted_on", "inlier_gates"}
        missing = {"hessian_scale", "floor_std", "slopes", "z_reference"} - set(doc)
        if missing:
            raise ValueError(f"{path}: covariance calibration lacks {sorted(missing)}")
        try:
            calib = cls(**{k: v for k, v in doc.items() if k in names})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
        if expected_fingerprint and calib.weights_fingerprint and calib.weights_fingerprint != expected_fingerprint:
            raise ValueError(f"{path} was fitted for other weights (fingerprint {calib.weights_fingerprint[:12]}..., "
                             f"these weights are {expected_fingerprint[:12]}...): run pixloc-ros calibrate "
                             f"for these weights or remove the file")
        return calib


def quantile_higher(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q, method="higher")`` for numpy < 1.22 too (Ubuntu 22.04 has 1.21, where
    the keyword is ``interpolation``): the smallest sample at or above the q-quantile's position
    q * (n - 1) of the sorted samples. values: (n,) with n >= 1, q in [0, 1]. Same arithmetic as
    numpy (1.21's ``interpolation="higher"`` and 2.x's ``method="higher"``), so the same sample."""
    v = np.sort(np.asarray(values, np.float64).ravel())
    if v.size == 0 or not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile_higher needs samples and q in [0, 1], got {v.size} samples, q={q}")
    return float(v[min(math.ceil((v.size - 1) * q), v.size - 1)])


def hessian_shape(hessian_covariance: np.ndarray) -> np.ndarray:
    """(..., 6, 6) ``sigma^2 H^-1`` scaled to a unit trace of its position block (m^2)."""
    C = np.asarray(hessian_covariance, np.float64)
    trace = np.trace(C[..., :3, :3], axis1=-2, axis2=-1)[..., None, None]
    return C / np.maximum(trace, 1e-300)


def features(inlier_ratio: float, jitter_m: float) -> np.ndarray:
    """(2,) the figures the model scales with: (1 - inlier ratio, log(jitter + JITTER_FLOOR_M))."""
    return np.array([1.0 - float(np.clip(inlier_ratio, 0.0, 1.0)),
                     math.log(max(float(jitter_m), 0.0) + JITTER_FLOOR_M)])


# ---- fitting -------------------------------------------------------------------------------
def _unpack(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    return math.exp(theta[0]), np.exp(theta[1:7]), np.asarray(theta[7:9])


def _negative_log_likelihood(theta: np.ndarray, covs: np.ndarray, z: np.ndarray, errors: np.ndarray) -> float:
    """Gaussian NLL (up to a constant) of the errors under the model, summed over samples; z (N, 2)."""
    k, floor, slopes = _unpack(theta)
    S = k * covs + np.diag(floor ** 2)[None]
    S = S * np.exp(z @ slopes)[:, None, None]
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return 1e30
    y = np.linalg.solve(L, errors[..., None])[..., 0]
    logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
    return float(0.5 * np.sum(np.sum(y * y, -1) + logdet))


def fit_calibration(samples: list[CalibrationSample], groups: list[str] | None = None,
                    fingerprint: str = "", coverage: float = 0.85, min_group: int = 10) -> CovarianceCalibration:
    """Fit the model to calibration samples by maximum likelihood, then the spread inflation.

    samples: localized frames of drives with ground truth (correct locks only: a wrong lock is
    the state machine's job, not a covariance's); groups: one label per sample (its drive), or
    None for one group. The likelihood fit makes the pooled NEES consistent (mean 6). The errors
    are heavier-tailed than a Gaussian and the drives' conditions differ in ways the frame's
    figures do not show, so the inflation then widens every covariance until, in every group of
    at least ``min_group`` frames, a share ``coverage`` of the frames lies inside the 95 % chi^2
    bound (never narrows: inflation >= 1). Needs at least 12 samples (9 parameters).
    """
    if len(samples) < 12:
        raise ValueError(f"covariance calibration needs at least 12 localized frames, got {len(samples)}")
    if not (0.5 <= coverage < 1.0):
        raise ValueError(f"coverage must be in [0.5, 1), got {coverage}")
    groups = ["all"] * len(samples) if groups is None else list(groups)
    if len(groups) != len(samples):
        raise ValueError(f"{len(groups)} group labels for {len(samples)} samples")
    covs = np.stack([np.asarray(s.hessian_covariance, np.float64) for s in samples])
    errors = np.stack([np.asarray(s.error, np.float64).reshape(6) for s in samples])
    known = np.array([float(s.jitter_m) for s in samples if s.jitter_m is not None])
    if not (np.isfinite(covs).all() and np.isfinite(errors).all() and np.isfinite(known).all()
            and all(math.isfinite(float(s.inlier_ratio)) for s in samples)):
        raise ValueError("covariance calibration samples hold NaN/inf")
    # A hypothesis without history could be anything: assume it jitters like the worst quarter.
    default_jitter = float(np.quantile(known, 0.75)) if known.size else 0.3
    jitters = [default_jitter if s.jitter_m is None else float(s.jitter_m) for s in samples]
    z_raw = np.stack([features(s.inlier_ratio, j) for s, j in zip(samples, jitters)])
    z_ref = np.median(z_raw, 0)
    # Start: Hessian shape with the position errors' variance, floor = the errors' RMS per axis, no slopes.
    rms = np.sqrt(np.mean(errors ** 2, 0)) + 1e-9
    theta0 = np.concatenate([[math.log(float(np.sum(rms[:3] ** 2)))], np.log(rms), [0.0, 0.0]])
    res = minimize(_negative_log_likelihood, theta0, args=(hessian_shape(covs), z_raw - z_ref, errors),
                   method="L-BFGS-B",
                   bounds=[(-12, 12)] + [(-14, 3)] * 6 + [(-40, 40)] * 2)
    k, floor, slopes = _unpack(res.x)
    calib = CovarianceCalibration(k, tuple(floor), tuple(slopes), tuple(z_ref), default_jitter, 1.0, fingerprint)
    values = np.array([nees(e, calib.covariance_base(c, s.inlier_ratio, j))
                       for e, c, s, j in zip(errors, covs, samples, jitters)])
    labels = sorted(set(groups))
    members = {g: np.array([i for i, x in enumerate(groups) if x == g]) for g in labels}
    # "higher": the sample at or above the quantile, so that at least a share ``coverage`` of each
    # group ends inside (interpolating between samples left 23 of 28 inside where 24 were asked).
    needed = [quantile_higher(values[idx], coverage) / NEES_BOUND_95
              for idx in members.values() if len(idx) >= min_group]
    if not needed:  # every group is small: judge them pooled
        needed = [quantile_higher(values, coverage) / NEES_BOUND_95]
    calib.inflation = max(1.0, max(needed))
    inflated = values / calib.inflation
    calib.fitted_on = {
        "samples": len(samples), "nll": float(res.fun), "converged": bool(res.success), "coverage": coverage,
        "pooled_mean_nees_before_inflation": float(np.mean(values)),
        "pooled_mean_nees": float(np.mean(inflated)),
        "pooled_share_inside_95": float(np.mean(inflated <= NEES_BOUND_95)),
        "groups": {g: {"samples": int(len(idx)), "mean_nees": float(np.mean(inflated[idx])),
                       "share_inside_95": float(np.mean(inflated[idx] <= NEES_BOUND_95))}
                   for g, idx in members.items()}}
    return calib
