"""Engine profiles: the settings that change what the engine computes for given weights.

Weights are trained against one formulation of the LM (its Jacobian, its stopping rule, how the
reference features were sampled): the learned damping damps *that* system. A profile names
the formulation, travels with the weights (checkpoint ``conf``, safetensors metadata) and with
every map compiled from them (map header), and the engine refuses to mix two.

- ``reference``: what the released PixLoc checkpoints were trained and evaluated with (cvg/pixloc;
  see DESIGN.md and docs/architecture.md, "Settings that change the result"): central-difference
  image gradient, convergence tested at iterations 1, 11, 21, ... only (step < 5 mm and 0.05 deg,
  or gradient norm < 1e-4), a hypothesis with fewer than 10 valid points fails, reference features
  sampled from the raw feature map and then L2-normalised, an observation outside any level's
  pad dropped, the checkpoint's border pad at every level, the image cropped (not padded) to the
  network's stride, 100 iterations per level (the reference's CMU/RobotCar evaluation), images
  larger than 1024 px on their longer side downscaled to 1024 (``cv2.INTER_LINEAR``, as the
  reference's localizer does; CMU's 1024x768 and RobotCar's 1024x1024 are not resized).
- ``native``: this project's own formulation, which the shipped synthetic weights were trained
  with: the exact derivative of the bilinear interpolant, a stop at the first step under
  5 mm / 0.05 deg, reference features normalised, sampled and normalised again, border
  observations kept with zero confidence at the coarser levels only, per-level pads that shrink
  on small maps (``localizer.level_pads``), the image padded (replicate) to a multiple of 16,
  never resized unless asked (antialiased when it is).

Which profile a file gets when it does not say (``profile_for_weights``): an official-layout
checkpoint without this project's ``pixloc_ros`` section is a reference-trained one (the released
weights), and so is any other file that names no profile; files written by this project name theirs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Mapping

GRADIENTS = ("central", "analytic")  # image gradient dF/dp of the LM Jacobian
RESIZE_METHODS = ("linear", "area")  # downscaling of images above max_image_edge
STOPPING_RULES = ("reference", "native")
SAMPLING_ORDERS = ("raw_then_normalize", "normalize_twice")
PROFILE_NAMES = ("reference", "native")

# The reference's numbers (cvg/pixloc ``BaseOptimizer.default_conf`` and ``run_CMU.py``).
REFERENCE_CHECK_EVERY = 10  # convergence is tested when the 0-based iteration index is a multiple of this
REFERENCE_GRAD_STOP = 1e-4  # ... or stops when the norm of sum w J^T r falls below this
REFERENCE_MIN_VALID = 10  # a hypothesis with fewer valid points fails (its steps are zeroed from then on)
REFERENCE_EVAL_ITERATIONS = 100  # per level, the CMU / RobotCar / Cambridge / 7Scenes evaluation setting
REFERENCE_MAX_IMAGE_EDGE = 1024  # ``FeatureExtractor.default_conf.resize`` (by the longer side)
REFERENCE_DEFAULT_PAD = 4.0  # ``BaseOptimizer.default_conf.interpolation.pad`` when a conf names no pad
CMU_CHECKPOINT_PAD = 3.0  # ``pad`` of the released ``pixloc_cmu`` conf (train_pixloc_cmu.yaml)
NATIVE_ITERATIONS = 25


@dataclass(frozen=True)
class EngineProfile:
    """One formulation of the engine (see the module docstring). Levels are finest first."""

    name: str  # "reference" or "native" (a map refuses weights of another name)
    gradient: str  # "central": (F(p+1px) - F(p-1px)) / 2; "analytic": derivative of the bilinear interpolant
    stopping: str  # "reference": test at i % 10 == 0 with a gradient criterion; "native": every step
    reference_sampling: str  # map compile: "raw_then_normalize" (reference) or "normalize_twice"
    drop_partial_observations: bool  # map compile: drop an observation invalid at any level (else only at level 0)
    pad: float | None  # border pad of every level, level pixels; None: ``localizer.level_pads``' size rule
    network_pad_mode: str | None  # ``NetworkConfig.pad_mode``: None crops to the stride like the reference
    iterations: tuple[int, int, int]  # default maximum LM iterations per level
    # Images (queries and keyframes) whose longer side exceeds this are downscaled first; None: never.
    max_image_edge: int | None = None
    resize: str = "area"  # "linear": cv2.INTER_LINEAR like the reference; "area": antialiased (INTER_AREA)

    def __post_init__(self):
        for value, allowed, what in ((self.name, PROFILE_NAMES, "profile name"),
                                     (self.gradient, GRADIENTS, "gradient"),
                                     (self.stopping, STOPPING_RULES, "stopping rule"),
                                     (self.reference_sampling, SAMPLING_ORDERS, "reference sampling"),
                                     (self.resize, RESIZE_METHODS, "resize method")):
            if value not in allowed:
                raise ValueError(f"Unsupported {what} {value!r}, expected one of {allowed}")
        if self.max_image_edge is not None and int(self.max_image_edge) < 16:
            raise ValueError(f"max_image_edge must be >= 16 pixels or None, got {self.max_image_edge}")
        if self.pad is not None and not (float(self.pad) >= 0):
            raise ValueError(f"pad must be >= 0 level pixels or None, got {self.pad}")
        if len(self.iterations) != 3 or any(int(n) < 0 for n in self.iterations):
            raise ValueError(f"iterations needs 3 values >= 0 (finest first), got {self.iterations}")
        object.__setattr__(self, "iterations", tuple(int(n) for n in self.iterations))
        if self.pad is not None:
            object.__setattr__(self, "pad", float(self.pad))

    def to_json(self) -> dict:
        """Plain JSON-able dict (lists for tuples)."""
        d = asdict(self)
        d["iterations"] = list(self.iterations)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "EngineProfile":
        """Inverse of ``to_json``; ValueError naming what is wrong."""
        try:
            base = reference_profile() if d["name"] == "reference" else native_profile()
            return replace(base, **{k: (tuple(v) if k == "iterations" else v) for k, v in d.items()})
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed engine profile {dict(d)!r}: {err}") from err

    def dumps(self) -> str:
        """Compact JSON text (safetensors metadata values are strings)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> "EngineProfile":
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(f"engine profile is not JSON: {err}") from err


def reference_profile(pad: float = CMU_CHECKPOINT_PAD) -> EngineProfile:
    """The released weights' formulation, with the checkpoint's border ``pad`` (level pixels)."""
    return EngineProfile("reference", "central", "reference", "raw_then_normalize", True, pad, None,
                         (REFERENCE_EVAL_ITERATIONS,) * 3, REFERENCE_MAX_IMAGE_EDGE, "linear")


def native_profile() -> EngineProfile:
    """This project's formulation (the shipped synthetic weights)."""
    return EngineProfile("native", "analytic", "native", "normalize_twice", False, None, "replicate",
                         (NATIVE_ITERATIONS,) * 3, None, "area")


def named_profile(name: str, pad: float | None = None) -> EngineProfile:
    """``reference`` (with ``pad``, default the CMU checkpoint's) or ``native``."""
    if name == "reference":
        return reference_profile(CMU_CHECKPOINT_PAD if pad is None else pad)
    if name == "native":
        return native_profile() if pad is None else replace(native_profile(), pad=float(pad))
    raise ValueError(f"Unsupported engine profile {name!r}, expected one of {PROFILE_NAMES}")


def pad_from_official_conf(conf: Mapping | None) -> float:
    """The border pad an official checkpoint's ``conf`` trained with: ``model.optimizer.pad``
    (the reference's legacy spelling) or ``model.optimizer.interpolation.pad``; the reference's
    default (4) when it names none."""
    try:
        opt = conf["model"]["optimizer"]  # type: ignore[index]
    except (KeyError, TypeError):
        return REFERENCE_DEFAULT_PAD
    for getter in (lambda o: o["pad"], lambda o: o["interpolation"]["pad"]):
        try:
            value = getter(opt)
        except (KeyError, TypeError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise ValueError(f"checkpoint conf has an unusable optimizer pad {value!r}")
    return REFERENCE_DEFAULT_PAD


PROJECT_CONF_KEY = "pixloc_ros"  # top-level section of a checkpoint ``conf`` written by this project


def profile_for_weights(conf: Mapping | None = None, metadata: Mapping[str, str] | None = None) -> EngineProfile:
    """The profile weights were trained with, from what their file says.

    ``conf``: an official checkpoint's ``conf`` (plain containers) or None; ``metadata``: the
    safetensors metadata or None. A recorded profile wins (``conf["pixloc_ros"]["engine_profile"]``
    or ``metadata["engine_profile"]``); otherwise the weights are taken for reference-trained
    ones, with the conf's pad (see ``pad_from_official_conf``; the CMU checkpoint's 3 when there
    is no conf at all).
    """
    if metadata and "engine_profile" in metadata:
        return EngineProfile.loads(metadata["engine_profile"])
    if isinstance(conf, Mapping):
        section = conf.get(PROJECT_CONF_KEY)
        if isinstance(section, Mapping) and "engine_profile" in section:
            return EngineProfile.from_json(section["engine_profile"])
        return reference_profile(pad_from_official_conf(conf))
    return reference_profile()


__all__ = [
    "EngineProfile", "reference_profile", "native_profile", "named_profile", "profile_for_weights",
    "pad_from_official_conf", "GRADIENTS", "STOPPING_RULES", "SAMPLING_ORDERS", "PROFILE_NAMES",
    "PROJECT_CONF_KEY", "REFERENCE_CHECK_EVERY", "REFERENCE_GRAD_STOP", "REFERENCE_MIN_VALID",
    "REFERENCE_EVAL_ITERATIONS", "CMU_CHECKPOINT_PAD", "NATIVE_ITERATIONS", "RESIZE_METHODS",
    "REFERENCE_MAX_IMAGE_EDGE",
]
