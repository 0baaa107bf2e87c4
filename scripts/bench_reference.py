#!/usr/bin/env python3
"""The reference's CPU time beside the node's, one thread, in one run; and the reference profile's
parity per network precision.

    python scripts/bench_reference.py --reference /tmp/pixloc [--world DIR --map640 MAP] [--frames 12]
        [--precisions f32,bf16,int8] [--json OUT]

``--reference``: a checkout of cvg/pixloc (github.com/cvg/pixloc) OUTSIDE this repository; its code is
imported from there, never copied here. Two in-process shims let that 2021 code base import on
today's torch, as for the parity check (BENCHMARKS.md, "Parity with the reference"):
``torch._six.string_classes`` and a ``torchvision.models.vgg16`` that only lists the VGG16 layers
(the weights are loaded from the project's network: the same state-dict keys; nothing is downloaded,
nothing unpickled); and an import-only ``h5py`` where it is not installed.

1. KITTI (``shared/data/real/kitti00_first6``, the parity problem of test/parity_problems.py: 1241x376
   downscaled to 1024x310 by both, one reference image, 5 queries): per query, the reference's work
   (``FeatureExtractor`` on the reference image and the query, ``interp_sparse_observations``,
   ``refine_pose_using_features`` with its learned optimizer, 100 iterations, pad 3) against the node's
   ``Localizer.localize`` (reference profile) per precision, whose poses are compared with
   test/reference_equations.py (the parity oracle; f32 must stay within 1 mm / 0.01 deg).
2. A 640x480 synthetic query (``--world``: a `pixloc-ros synth --preset small` world, whose mapping images
   are 640x480; ``--map640``: its map built at full size): the node's pipeline (``process``, 2 keyframes,
   the shipped weights) over the overcast drive resized x2, per precision, and for three of its tracked
   frames the reference's per-query work on the same image, the same 2 keyframes (their points of track
   length >= 3) and the same initial pose.
Times are wall seconds of one thread (``torch.set_num_threads(1)``, OpenVINO one thread) and CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "pixloc_ros" / "assets" / "pixloc_synth_vgg16.safetensors"
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def install_shims() -> None:
    """``torch._six`` and a download-free ``torchvision.models.vgg16`` (layers only), in sys.modules."""
    six = types.ModuleType("torch._six")
    six.string_classes = (str, bytes)
    sys.modules["torch._six"] = six
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def vgg16(pretrained=False, **_):
        layers, c = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
                c = v
        net = torch.nn.Module()
        net.features = torch.nn.Sequential(*layers)
        return net

    models.vgg16 = vgg16
    tv.models = models
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, models
    # pixloc.localization's __init__ imports its batch localizer, which imports h5py for files this
    # benchmark never reads: an import-only stand-in when h5py is not installed.
    try:
        import h5py  # noqa: F401
    except ImportError:
        sys.modules["h5py"] = types.ModuleType("h5py")


class Reference:
    """cvg/pixloc's refiner pieces around one COLMAP model, built from the project's network weights."""

    def __init__(self, checkout: Path, model, conf: dict, sfm_dir: Path, num_dbs: int):
        sys.path.insert(0, str(checkout))
        from omegaconf import OmegaConf
        from pixloc.localization.base_refiner import BaseRefiner
        from pixloc.localization.feature_extractor import FeatureExtractor
        from pixloc.localization.model3d import Model3D
        from pixloc.pixlib.geometry import Camera, Pose
        from pixloc.pixlib.models import get_model

        self.Camera, self.Pose = Camera, Pose
        mconf = OmegaConf.create(conf["model"])
        mconf.optimizer.num_iters, mconf.optimizer.pad = 100, conf["model"]["optimizer"].get("pad", 3)
        pipeline = get_model(mconf.name)(mconf).eval()
        missing = pipeline.load_state_dict(model.state_dict(), strict=False)
        assert not [k for k in missing.missing_keys if "num_batches" not in k], missing
        self.model3d = Model3D(sfm_dir)
        optimizer = list(pipeline.optimizer) if isinstance(pipeline.optimizer, torch.nn.ModuleList) else pipeline.optimizer
        extractor = FeatureExtractor(pipeline.extractor, torch.device("cpu"), {"resize": 1024})
        self.refiner = BaseRefiner(torch.device("cpu"), optimizer, self.model3d, extractor, None,
                                   {"num_dbs": num_dbs, "min_track_length": 3, "point_selection": "all"})

    def localize(self, query_rgb: np.ndarray, camera: tuple, cam_from_world: np.ndarray, db_images: dict,
                 p3did_to_dbids: dict) -> tuple[np.ndarray | None, float, float]:
        """The reference's per-query work (``refine_query_pose`` without file reads): features of every
        reference image, their observations, the query's features, the refinement. camera: (fx, fy, cx,
        cy, w, h) pixel-centre origin. Returns (cam_from_world 4x4 or None, wall s, CPU s)."""
        r = self.refiner
        fx, fy, cx, cy, w, h = camera
        qcam = self.Camera(torch.tensor([w, h, fx, fy, cx, cy], dtype=torch.float64))
        T_init = self.Pose.from_Rt(torch.from_numpy(cam_from_world[:3, :3]), torch.from_numpy(cam_from_world[:3, 3]))
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            dbid_to_p3dids = self.model3d.get_dbid_to_p3dids(p3did_to_dbids)
            feats = {}
            for dbid, p3dids in dbid_to_p3dids.items():
                dense, scales = r.dense_feature_extraction(db_images[dbid], str(dbid))
                feats[dbid] = r.interp_sparse_observations(dense, scales, dbid, p3dids)
            p3did_to_feat = r.aggregate_features(p3did_to_dbids, feats)
            p3dids, p3did_to_feat = list(zip(*[(p, f) for p, fs in p3did_to_feat.items() for f in zip(*fs)]))
            fq, sq = r.dense_feature_extraction(query_rgb, "query")
            ret = r.refine_pose_using_features(fq, sq, qcam, T_init, p3did_to_feat, p3dids)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if not ret["success"]:
            return None, wall, cpu
        T = ret["T_refined"]
        return np.vstack([np.hstack([T.R.numpy(), T.t.numpy()[:, None]]), [0, 0, 0, 1]]), wall, cpu


def pose_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mm, deg) between two cam_from_world poses (camera centres, rotation angle)."""
    from scipy.spatial.transform import Rotation  # the rotation vector: arccos of the trace cannot resolve 1e-5 deg

    ca, cb = -a[:3, :3].T @ a[:3, 3], -b[:3, :3].T @ b[:3, 3]
    angle = Rotation.from_matrix(a[:3, :3] @ b[:3, :3].T).magnitude()
    return float(np.linalg.norm(ca - cb) * 1e3), float(np.degrees(angle))


def kitti(args, out: dict) -> None:
    sys.path.insert(0, str(REPO / "test"))
    import reference_equations as ref_eq
    from parity_problems import KITTI, colmap_model, kitti_problem

    from pixloc_ros.core.engine.checkpoint import default_official_conf, load_weights, weights_fingerprint
    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
    from pixloc_ros.core.engine.network import PixLocModel
    from pixloc_ros.core.engine.network_int8 import quantize_unet
    from pixloc_ros.core.engine.profile import reference_profile
    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.geometry.pose import Pose
    from pixloc_ros.core.maps.colmap_io import write_model
    from pixloc_ros.core.maps.compile import compile_map
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.retrieval import MapIndex, RetrievalConfig
    import cv2

    if not KITTI.is_dir():
        print(f"KITTI: {KITTI} absent, skipped")
        return
    problem = kitti_problem()
    model = PixLocModel("vgg16", profile=reference_profile())
    model.load_state_dict(load_weights(WEIGHTS).state_dict())
    model.eval()
    conf = default_official_conf("vgg16")
    tmp = Path(tempfile.mkdtemp(prefix="bench_reference_"))
    (tmp / "images").mkdir()
    cv2.imwrite(str(tmp / "images" / "reference.png"), cv2.cvtColor(problem.reference_image, cv2.COLOR_RGB2BGR))
    sfm = colmap_model(problem)
    (tmp / "sfm").mkdir()
    write_model(sfm, tmp / "sfm")
    compile_map(sfm, tmp / "images", model, tmp / "k.pxmap", weights_fingerprint(model),
                config=CompileConfig(min_track_length=1), progress=False)
    index = MapIndex.open(tmp / "k.pxmap", expected_fingerprint=weights_fingerprint(model))
    points = index.retrieve(problem.reference_from_world, config=RetrievalConfig(
        num_keyframes=1, min_track_length=1, max_distance_m=1e6, max_heading_diff_deg=180.0)).points
    fx, fy, cx, cy, w, h = problem.camera
    camera = Camera.from_camera_info(w, h, [fx, 0, cx, 0, fy, cy, 0, 0, 1], [], "plumb_bob")
    # the oracle (float32 network): what test_reference_parity compares with
    ref_image, ref_cam = ref_eq.downscale(problem.reference_image, problem.camera)
    model.config.cpu_runtime, model.config.cpu_precision = "openvino", "f32"
    ref_pyr = model.extract(ref_image, keep_raw=True)
    pad = reference_profile(conf["model"]["optimizer"]["pad"]).pad
    obs = ref_eq.reference_observations([f[0] for f in ref_pyr.raw_features], [c[0] for c in ref_pyr.confidences],
                                        ref_cam, problem.reference_from_world, problem.xyz, pad)
    damping = model.damping().detach().double()
    oracle = []
    for image, init in zip(problem.query_images, problem.inits):
        pyr = model.extract(ref_eq.downscale(image, problem.camera)[0])
        oracle.append(ref_eq.refine([f[0] for f in pyr.features], [c[0] for c in pyr.confidences], problem.xyz,
                                    obs, ref_eq.downscale(image, problem.camera)[1], init, damping, pad)[0])
    rows = {}
    for precision in args.precisions:
        if precision == "int8":  # calibrated on the map's keyframe: here its one reference image
            graph = quantize_unet(model.extractor, [cv2.resize(problem.reference_image, (1024, 310),
                                                               interpolation=cv2.INTER_LINEAR)], None)
            model.set_int8_unet(graph, checked=False)
        loc = Localizer(model, LocalizerConfig(device="cpu", cpu_threads=1, cpu_precision=precision,
                                               return_confidences=False))
        loc.localize(problem.query_images[0], camera, points, Pose.from_4x4(torch.from_numpy(problem.inits[0])))
        times, cpus, gaps = [], [], []
        for rep in range(args.repeats):
            for q, (image, init) in enumerate(zip(problem.query_images, problem.inits)):
                w0, c0 = time.perf_counter(), time.process_time()
                res = loc.localize(image, camera, points, Pose.from_4x4(torch.from_numpy(init)))
                times.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                if rep == 0:
                    gaps.append(pose_gap(res.cam_from_world.to_4x4().numpy(), oracle[q]))
        rows[precision] = {"wall_s_p50": float(np.median(times)), "cpu_s_p50": float(np.median(cpus)),
                           "max_mm_vs_oracle": max(g[0] for g in gaps), "max_deg_vs_oracle": max(g[1] for g in gaps)}
        print(f"KITTI node {precision}: {rows[precision]}", flush=True)
    # the reference's code on the same queries
    install_shims()
    reference = Reference(Path(args.reference), model, conf, tmp / "sfm", num_dbs=1)
    db = {1: problem.reference_image}
    p3d = {int(i): [1] for i in range(len(problem.xyz))}
    times, cpus, gaps = [], [], []
    for rep in range(args.repeats):
        for q, (image, init) in enumerate(zip(problem.query_images, problem.inits)):
            pose, wall, cpu = reference.localize(image, problem.camera, init, db, p3d)
            times.append(wall)
            cpus.append(cpu)
            if rep == 0 and pose is not None:
                gaps.append(pose_gap(pose, oracle[q]))
    rows["reference"] = {"wall_s_p50": float(np.median(times)), "cpu_s_p50": float(np.median(cpus)),
                         "max_mm_vs_oracle": max((g[0] for g in gaps), default=float("nan")),
                         "max_deg_vs_oracle": max((g[1] for g in gaps), default=float("nan"))}
    print(f"KITTI cvg/pixloc: {rows['reference']}", flush=True)
    out["kitti"] = rows


def synthetic(args, out: dict) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_pipeline import scaled_drive

    from pixloc_ros.core.engine.checkpoint import default_official_conf, load_weights, weights_fingerprint
    from pixloc_ros.core.engine.localizer import LocalizerConfig
    from pixloc_ros.core.maps.retrieval import RetrievalConfig
    from pixloc_ros.core.tracking.pipeline import PipelineConfig, load_pipeline
    from pixloc_ros.data.bags import read_drive
    from pixloc_ros.data.evaluation.offline import camera_from_info
    from pixloc_ros.core.tracking.frames import FrameInput
    import cv2

    world = Path(args.world)
    drive = scaled_drive(read_drive(world / "queries" / "overcast"), 2.0)
    frames = drive.frames[:args.frames]
    base_from_cam = drive.base_from_camera()
    rows, probes = {}, []
    for precision in args.precisions:
        config = PipelineConfig(retrieval=RetrievalConfig(num_keyframes=2))
        pipeline = load_pipeline(str(args.map640), str(WEIGHTS), "cpu", config,
                                 LocalizerConfig(cpu_threads=1, cpu_precision=precision))
        got = pipeline.summary().network_precision
        pipeline.localizer.warm_up(640, 480)
        from pixloc_ros.data.evaluation.offline import evaluate_drive
        ev = evaluate_drive(pipeline, drive, max_frames=args.frames, on_frame=(
            (lambda o, f: probes.append((f, o))) if precision == args.precisions[0] else None))
        ran = [f for f in ev.frames if f.network_s > 0]
        tracked = [f for f in ran if f.state == 2]
        rows[precision] = {"ran": got, "frames": len(ran), "total_ms_p50": 1e3 * float(np.median([f.total_s for f in ran])),
                           "tracked_total_ms_p50": 1e3 * float(np.median([f.total_s for f in tracked])) if tracked else None,
                           "network_ms_p50": 1e3 * float(np.median([f.network_s for f in ran])),
                           "lm_ms_p50": 1e3 * float(np.median([f.optimizer_s for f in ran])),
                           "localized": ev.summary.localized, "recall": ev.summary.recall}
        print(f"640x480 node {precision}: {rows[precision]}", flush=True)
        pipeline.close()
    # the reference on three tracked frames: same image, same 2 keyframes, same initial pose
    install_shims()
    model = load_weights(WEIGHTS, "cpu")
    conf = default_official_conf("vgg16")
    reference = Reference(Path(args.reference), model, conf, world / "sfm", num_dbs=2)
    m3d = reference.model3d
    name_to_id = {im.name: i for i, im in m3d.dbs.items()}
    times, cpus, errs = [], [], []
    chosen = [(f, o) for f, o in probes if o.state == 2 and o.result is not None and len(o.keyframe_ids) == 2][:3]
    for frame, o in chosen:
        ids = [int(k) for k in o.keyframe_ids]
        db = {}
        for i in ids:
            rgb = cv2.cvtColor(cv2.imread(str(world / "mapping" / "images" / m3d.dbs[i].name)), cv2.COLOR_BGR2RGB)
            db[i] = rgb
        p3d = {}
        for i in ids:
            for pid in m3d.dbs[i].point3D_ids:
                if pid >= 0 and len(m3d.points3D[pid].image_ids) >= 3:
                    p3d.setdefault(int(pid), []).append(i)
        cam_from_world = np.linalg.inv(o.prior_map_from_base @ base_from_cam)
        info = [f for f in frames if f.stamp_ns == frame.stamp_ns][0].camera_info
        fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
        pose, wall, cpu = reference.localize(frame.image_rgb, (fx, fy, cx, cy, info.width, info.height),
                                             cam_from_world, db, p3d)
        times.append(wall)
        cpus.append(cpu)
        node = np.linalg.inv(o.map_from_base @ base_from_cam) if o.map_from_base is not None else None
        if pose is not None and node is not None:
            errs.append(pose_gap(pose, node))
    rows["reference"] = {"frames": len(times), "total_ms_p50": 1e3 * float(np.median(times)) if times else None,
                         "cpu_ms_p50": 1e3 * float(np.median(cpus)) if cpus else None,
                         f"vs_node_{args.precisions[0]}_mm_deg": errs}
    print(f"640x480 cvg/pixloc: {rows['reference']}", flush=True)
    out["synthetic_640x480"] = rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="cvg/pixloc checkout (outside this repository)")
    p.add_argument("--world", default=None, help="synthetic world (pixloc-ros synth --preset small)")
    p.add_argument("--map640", default=None, help="its map built from the 640x480 mapping images at full size")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--precisions", default="f32,bf16,int8")
    p.add_argument("--skip-kitti", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.precisions = args.precisions.split(",")
    if Path(args.reference).resolve().is_relative_to(REPO):
        p.error("the reference checkout must live outside this repository")
    torch.set_num_threads(1)
    out = {"threads": 1, "machine": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")}
    if not args.skip_kitti:
        kitti(args, out)
    if args.world:
        synthetic(args, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
