"""Map compile on Ray: the tiles of a tiled compile as tasks of a Ray cluster (optional).

Ray (``pip install ray``, or ``pip install .[ray]``) is imported only here, and this module only
when ``build-map --ray`` asks for it. ``compile_tiles_on_ray`` starts a local Ray instance (one
worker per CPU core, or per GPU when CUDA is there) or connects to a cluster (``address``,
e.g. "auto" or "ray://head:10001"), creates one actor per worker (each loads the weights once,
on its own GPU or CPU, and checks their fingerprint against the driver's), and hands each actor
one tile at a time: an actor runs ``map_compile.compile_tile`` — the same per-keyframe step as
the single-process path — and writes the tile file itself, so tiles are written independently
and a tile finished before an interruption is not recomputed on the next run. The keyframes of
a tile are its batch: a tile (100-250 m of road) holds hundreds of keyframes, enough to keep a
worker busy, and writing per tile keeps each file in one writer's hands.

On a cluster every node must see ``image_dir`` and the output folder at the same paths (a
shared filesystem); the driver only plans the tiles and writes the index. With the same torch
build and thread count (Ray gives each actor one CPU thread; the single process uses one thread
when ``OMP_NUM_THREADS=1``), the tiles are byte-for-byte those of the single-process path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pixloc_ros.core.maps.compile_keyframes import CompileConfig, KeyframeSettings
from pixloc_ros.core.maps.compile_tiles import TileResult, TileTask, compile_tile
from pixloc_ros.core.maps.tiles import TiledMapWriter


@dataclass
class RayOptions:
    """Where and how wide ``compile_tiles_on_ray`` runs."""

    address: str | None = None  # None: start a local Ray instance; "auto" / "ray://host:port": join that cluster
    workers: int | None = None  # None: local: one per CPU core (per GPU with CUDA); cluster: per GPU, else per CPU
    device: str = "auto"  # torch device of each worker: "auto" (its GPU when it has one), "cuda" or "cpu"


class TileWorker:
    """A Ray actor: holds the model and a tile writer, compiles the tiles it is given."""

    def __init__(self, weights_path: str, device: str, fingerprint: str, image_dir: str, config: CompileConfig,
                 out_dir: str, grid, header):
        import torch

        from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_weights(weights_path, device)
        found = weights_fingerprint(self.model)
        if found != fingerprint:
            raise ValueError(f"worker on {os.uname().nodename}: {weights_path} holds weights {found[:16]}..., the "
                             f"driver's are {fingerprint[:16]}...: every node must see the same weights file")
        self.settings = KeyframeSettings.of(self.model, config)
        self.image_dir, self.config = image_dir, config
        self.writer = TiledMapWriter(out_dir, grid, header)

    def ready(self) -> bool:
        return True

    def compile(self, task: TileTask) -> TileResult:
        return compile_tile(task, self.image_dir, self.model, self.settings, self.config, self.writer)


def compile_tiles_on_ray(tasks: list[TileTask], image_dir: str | Path, weights_path: str | Path, fingerprint: str,
                         config: CompileConfig, writer: TiledMapWriter, options: RayOptions,
                         progress: bool = True) -> tuple[list[TileResult], str, float]:
    """Compile ``tasks`` on Ray (see the module docstring); returns (results, "ray: N workers",
    seconds of start-up: Ray's and the workers' (loading the weights)).
    ValueError when Ray is not installed or a worker fails (its message)."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as err:
        raise ValueError(f"--ray needs Ray ({err}): pip install ray (or pip install '.[ray]')") from None
    if not tasks:
        return [], "ray: nothing to compile", 0.0
    import time
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        if options.address is None:
            ray.init(num_cpus=options.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=options.address, log_to_driver=False, configure_logging=False)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if options.device != "cpu" else 0
        workers = options.workers or (gpus or int(resources.get("CPU", 1)))
        workers = max(1, min(workers, len(tasks)))
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(TileWorker)
        device = "cuda" if gpus else ("cpu" if options.device == "auto" else options.device)
        actors = [actor.remote(str(Path(weights_path).resolve()), device, fingerprint, str(Path(image_dir).resolve()),
                               config, str(writer.folder.resolve()), writer.grid, writer.header)
                  for _ in range(workers)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            raise ValueError(f"a Ray worker failed to start: {type(cause).__name__}: {cause}") from None
        startup = time.perf_counter() - t0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(len(t.image_ids) for t in tasks), desc=f"build-map (ray, {workers} workers)",
                       unit="image")
        results = []
        try:
            for result in ActorPool(actors).map_unordered(lambda a, t: a.compile.remote(t), tasks):
                results.append(result)
                if bar is not None:
                    bar.update(result.num_keyframes)
                    bar.set_postfix_str(f"tile {result.key} done")
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            raise ValueError(f"a Ray worker failed: {type(cause).__name__}: {cause}") from None
        finally:
            if bar is not None:
                bar.close()
            for a in actors:
                ray.kill(a)
        return results, f"ray: {workers} worker{'s' if workers > 1 else ''}", startup
    finally:
        if started:
            ray.shutdown()
