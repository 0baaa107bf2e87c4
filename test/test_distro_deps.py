"""What the package asks of numpy, OpenCV and scipy exists in the versions ROS users have from apt:
Ubuntu 22.04 (Humble: numpy 1.21.5, OpenCV 4.5.4, scipy 1.8.0) and 24.04 (Jazzy: numpy 1.26.4,
OpenCV 4.6.0, scipy 1.11.4). Needs no torch and no rclpy: scripts/check_distro_pythons.sh runs this
module (with the other ROS-free ones) under those versions; here it runs with the project's own.
"""
import ast
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixloc_ros.core.tracking.covariance_calibration import quantile_higher
from pixloc_ros.core.engine.pickle_allowlist import checkpoint_safe_globals

PACKAGE = Path(__file__).resolve().parents[1] / "pixloc_ros"
NUMPY_VERSION = tuple(int(v) for v in np.__version__.split(".")[:2])


def numpy_quantile_higher(values, q):
    """numpy's own 'higher' quantile under the keyword this numpy knows (``method`` from 1.22)."""
    if NUMPY_VERSION >= (1, 22):
        return float(np.quantile(values, q, method="higher"))
    return float(np.quantile(values, q, interpolation="higher"))


def test_quantile_higher_picks_the_sample_numpy_picks():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 28, 101):
        values = rng.normal(size=n)
        for q in np.r_[np.linspace(0, 1, 41), 0.95, 0.68, 0.99]:
            assert quantile_higher(values, q) == numpy_quantile_higher(values, q), (n, q)
    assert quantile_higher([3.0, 1.0, 2.0], 0.5) == 2.0 and quantile_higher([3.0, 1.0, 2.0], 0.51) == 3.0
    with pytest.raises(ValueError):
        quantile_higher([], 0.5)
    with pytest.raises(ValueError):
        quantile_higher([1.0], 1.5)


class AllowListUnpickler(pickle.Unpickler):
    """Resolves a global only through the allow-list, by the name the pickle names it with, as
    torch's weights-only unpickler does (an entry is an object, named by its module and qualname,
    or an (object, name) pair). ``_codecs.encode`` (how protocol 2 writes bytes) is on torch's own
    built-in list."""

    def __init__(self, data: bytes, allowed: list):
        import io
        super().__init__(io.BytesIO(data))
        import _codecs
        self.allowed = {"_codecs.encode": _codecs.encode}
        for entry in allowed:
            obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
            self.allowed[name] = obj

    def find_class(self, module, name):
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise pickle.UnpicklingError(f"{key} is not allowed")
        return self.allowed[key]


@pytest.mark.parametrize("writer", ["numpy 1.x", "numpy 2.x"])
def test_checkpoint_allow_list_reads_numpy_scalars_of_either_numpy(writer):
    """The reference trainer's ``eval`` metrics are numpy scalars; the pickle names their
    reconstructor ``numpy.core...`` (written by numpy 1.x) or ``numpy._core...`` (2.x). Both must
    load under this numpy (the allow-list used to touch np._core/np.dtypes, absent from numpy 1.21)."""
    allowed = checkpoint_safe_globals()
    metrics = {"loss": np.float64(0.25), "count": np.int64(7), "recall": np.float32(0.5), "dtype": np.dtype("f4")}
    data = pickle.dumps(metrics, protocol=2)  # torch.save's protocol: module names are plain text
    here = b"numpy._core.multiarray" if b"numpy._core.multiarray" in data else b"numpy.core.multiarray"
    data = data.replace(here, b"numpy.core.multiarray" if writer == "numpy 1.x" else b"numpy._core.multiarray")
    loaded = AllowListUnpickler(data, allowed).load()
    assert loaded == metrics and type(loaded["count"]) is np.int64 and loaded["dtype"] == np.dtype("f4")
    # Nothing else gets through: an arbitrary callable is refused by name.
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        AllowListUnpickler(pickle.dumps(np.ones(2), protocol=2), allowed).load()


def test_every_source_file_compiles_under_this_python():
    """Python 3.10 (Humble's) is the oldest the package runs on: its parser must accept every file
    (under 3.11+ this only repeats what importing does)."""
    repo = PACKAGE.parent
    files = [*PACKAGE.rglob("*.py"), *(repo / "scripts").glob("*.py"), *(repo / "launch").glob("*.py"),
             repo / "scripts" / "localizer_node", repo / "scripts" / "pixloc-ros"]
    for path in files:
        compile(path.read_text(), str(path), "exec", dont_inherit=True)
    assert len(files) > 50


def _used_attributes(module_name: str) -> dict[str, str]:
    """{attribute: first file:line} of every ``<module_name>.<attribute>`` in the package's source."""
    used = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == module_name:
                used.setdefault(node.attr, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return used


def test_every_opencv_name_the_package_uses_exists_in_this_opencv():
    """Run under OpenCV 4.5.4 by check_distro_pythons.sh: a constant added later (the RGGB Bayer
    aliases are 4.5.5+) fails here instead of at a Humble user's import."""
    used = _used_attributes("cv2")
    assert "cvtColor" in used  # the scan sees the package's uses
    missing = {name: where for name, where in used.items() if not hasattr(cv2, name)}
    assert not missing, f"not in OpenCV {cv2.__version__}: {missing}"


def test_every_numpy_name_the_package_uses_exists_in_this_numpy():
    used = _used_attributes("np")
    assert "asarray" in used
    missing = {name: where for name, where in used.items() if not hasattr(np, name)}
    assert not missing, f"not in numpy {np.__version__}: {missing}"
