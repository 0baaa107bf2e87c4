"""The project's synthetic world: a procedural street with seasons, its ray-cast renderer, car
drives with odometry and GNSS, and ``synthesize`` that writes a mapping set, an SfM map and query
drives as rosbags. ROS-free; imports ``core.geometry``, ``core.maps`` (COLMAP I/O) and ``data.bags``.

Public API (imported on first use): ``synthesize``: ``synth``; ``load_dataset``: ``dataset``;
``get_preset``: ``presets``;
``generate_world``: ``generate``; ``World``: ``world``; ``PinholeCamera``: ``raycast`` (and
``render.render`` and ``raycast.raycast``, which a package attribute cannot name: they share their
modules' names);
``CONDITIONS``, ``get_condition``: ``conditions``; ``route_path``, ``simulate_trajectory``: ``drive``;
``rig_mounts``, ``RigMount``: ``rig`` (the car's camera rig).
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "synthesize": "synth", "load_dataset": "dataset", "get_preset": "presets",
    "generate_world": "generate", "World": "world", "PinholeCamera": "raycast",
    "CONDITIONS": "conditions", "get_condition": "conditions",
    "route_path": "drive", "simulate_trajectory": "drive",
    "rig_mounts": "rig", "RigMount": "rig",
})
