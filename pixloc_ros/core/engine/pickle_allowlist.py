"""The allow-list of the restricted unpickler that opens PixLoc training checkpoints (core/engine/checkpoint.py).

Kept apart from the loader so that it imports no torch: the numpy-version handling here is checked
under the numpy releases of Ubuntu 22.04 and 24.04 (1.21, 1.26) by test/test_numpy_compat.py, in
environments without torch (scripts/check_distro_pythons.sh).
"""
from __future__ import annotations

import collections
import typing

import numpy as np


def checkpoint_safe_globals() -> list:
    """Types a PixLoc checkpoint may reference besides tensors and plain containers.

    All are value holders whose reconstruction runs no user code: OmegaConf's config and node
    classes (the ``conf`` entry), ``typing.Any`` (OmegaConf's default ref type), ``defaultdict``
    (OmegaConf's resolver cache), builtin types referenced by OmegaConf metadata, and numpy
    scalars (the reference trainer stores its ``eval`` metrics as numpy floats). Seen working on
    the official layout with omegaconf 2.4; extend only with types of the same kind.

    Works with numpy 1.21 (Ubuntu 22.04's) to 2.x: the scalar reconstructor is registered under the
    names numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) write, whichever numpy reads it; the
    DType classes exist from numpy 1.25 on (before, a dtype's class is ``np.dtype`` itself).
    """
    from omegaconf import DictConfig, ListConfig, base, nodes

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2 (no deprecation warning)
    except ImportError:
        from numpy.core.multiarray import scalar  # numpy 1.x
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    dtype_classes = [] if dtypes is None else [getattr(dtypes, name) for name in (
        "BoolDType", "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
        "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType")]
    return [
        DictConfig, ListConfig, base.ContainerMetadata, base.Metadata,
        nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
        typing.Any, dict, list, tuple, int, float, str, bool, collections.defaultdict,
        (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        # dtype pickles are rebuilt through their DType class; numeric ones only (no object dtype).
        *dtype_classes,
    ]
