"""Reading a generated synthetic dataset back (``load_dataset``: its world, cameras, preset and
paths), and the mapping poses it wrote (text and TUM formats).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.sim.raycast import PinholeCamera
from pixloc_ros.data.sim.world import World, WorldConfig
from pixloc_ros.data.sim.generate import generate_world
from .presets import FORMAT


@dataclass
class MappingPose:
    name: str
    stamp_ns: int
    cam_from_world: np.ndarray  # (4, 4)


def read_mapping_poses(path: str | Path) -> list[MappingPose]:
    """Read ``mapping/poses.txt`` (see ``_write_mapping_poses``)."""
    from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, stamp, *vals = line.split()
        if len(vals) != 7:
            raise ValueError(f"{path}: expected 'name stamp_ns qx qy qz qw tx ty tz', got {line!r}")
        v = np.array([float(x) for x in vals])
        out.append(MappingPose(name, int(stamp), make_transform(matrix_from_quat_xyzw(v[:4]), v[4:])))
    return out


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory file -> (stamps_ns (N,) int64, frame_from_base (N, 4, 4))."""
    from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw
    stamps, poses = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        sec, _, frac = parts[0].partition(".")
        stamps.append(int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]))
        v = np.array([float(x) for x in parts[1:8]])
        poses.append(make_transform(matrix_from_quat_xyzw(v[3:7]), v[:3]))
    return np.array(stamps, np.int64), np.array(poses).reshape(-1, 4, 4)


@dataclass
class SynthDataset:
    """A generated dataset opened again: the world (regenerated from its seed), cameras, extrinsic."""

    root: Path
    world: World
    camera: PinholeCamera  # of the query images
    base_from_cam: np.ndarray  # (4, 4)
    georef: Georeference
    info: dict  # world.json
    mapping_camera: PinholeCamera | None = None  # of the keyframes and sfm/; None: same as ``camera``

    def __post_init__(self):
        if self.mapping_camera is None:
            self.mapping_camera = self.camera

    @property
    def query_conditions(self) -> list[str]:
        return list(self.info["query_conditions"])

    def bag_dir(self, condition: str) -> Path:
        return self.root / "queries" / condition


def load_dataset(root: str | Path) -> SynthDataset:
    """Open a ``pixloc-ros synth`` output folder (for rendering more views, training, tests)."""
    root = Path(root)
    info = json.loads((root / "world.json").read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{root}/world.json has format {info.get('format')!r}, expected {FORMAT!r}")
    world = generate_world(int(info["seed"]), WorldConfig(**info["world_config"]))
    c = info["camera"]
    camera = PinholeCamera(int(info["image"]["width"]), int(info["image"]["height"]), c["fx"], c["fy"], c["cx"], c["cy"])
    mapping_camera = None
    if "mapping_camera" in info:  # absent from datasets written before mapping_scale existed
        m = info["mapping_camera"]
        mapping_camera = PinholeCamera(int(info["mapping_image"]["width"]), int(info["mapping_image"]["height"]),
                                       m["fx"], m["fy"], m["cx"], m["cy"])
    return SynthDataset(root, world, camera, np.array(info["base_from_cam"]["matrix"]),
                        Georeference.load(root / "georef.json"), info, mapping_camera)
