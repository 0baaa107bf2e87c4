"""One module per ``pixloc-ros`` sub-command; each exposes ``register(subparsers)``."""

# Module names in the order they are listed by ``pixloc-ros --help``.
COMMAND_MODULES = (
    "synth",
    "build_map",
    "play",
    "evaluate",
    "calibrate",
    "quantize",
    "train",
    "import_data",
    "weights",
    "bench",
    "demo",
)
