"""Procedural texture building blocks: hashed value noise and box-filtered patterns (numpy).

Every function takes surface coordinates in metres (world or object-local, never pixels) so a
texture is the same surface whichever camera looks at it. Patterns take ``fw``, the pixel
footprint on the surface in metres (per pixel), and return the pattern *averaged over that
footprint* (an analytic box filter): a brick wall seen from far is the mean brick colour, not
aliasing noise that changes from view to view. That keeps SIFT and learned features stable.

Hand-written: no maintained numpy library offers filtered procedural textures (noise
libraries such as ``noise``/``opensimplex`` are per-point Python or lack filtering).
"""
from __future__ import annotations

import numpy as np

_M = (np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F))
_MIX1, _MIX2 = np.uint32(0x2C1B3C6D), np.uint32(0x297A2D39)

# Value-noise lattices: fixed random tables (part of the texture definition, not of the seed).
# A seed shifts the lattice, so different seeds give different, unrelated patterns.
_T2_BITS = 8
_T2 = np.random.default_rng(0x5EED).random(1 << (2 * _T2_BITS), dtype=np.float32)
_T3_BITS = 6
_T3 = np.random.default_rng(0x5EED3).random(1 << (3 * _T3_BITS), dtype=np.float32)


def hash_uint(*ints, seed=0) -> np.ndarray:
    """Deterministic 32-bit hash of integer arrays (broadcast together) and a seed -> uint32 array."""
    h = np.uint32((int(seed) * 0x165667B1 + 0x9E3779B9) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        for k, value in enumerate(ints):
            h = h ^ (np.asarray(value).astype(np.uint32) * _M[k % 3])
            h = h ^ (h >> np.uint32(15))
            h = h * _MIX1
        h = h ^ (h >> np.uint32(12))
        h = h * _MIX2
        h = h ^ (h >> np.uint32(15))
    return np.asarray(h, np.uint32)


def hash01(*ints, seed=0) -> np.ndarray:
    """Hash of integer arrays -> float32 uniform in [0, 1)."""
    return (hash_uint(*ints, seed=seed) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (3.0 - 2.0 * f)


def _seed_offsets(seed, n) -> list[int]:
    h = int(hash_uint(np.arange(n), seed=seed).astype(np.int64).sum() % (1 << 31))
    rng = np.random.default_rng(h)
    return [int(v) for v in rng.integers(0, 1 << 16, n)]


_OFFSETS: dict = {}


def _offsets(seed, n):
    key = (int(seed), n)
    if key not in _OFFSETS:
        _OFFSETS[key] = _seed_offsets(seed, n)
    return _OFFSETS[key]


def value_noise2(u: np.ndarray, v: np.ndarray, seed=0) -> np.ndarray:
    """2D value noise with a unit lattice: (N,) u, v -> (N,) float32 in [0, 1], mean 0.5.

    The lattice values come from a 256 x 256 table shifted by the seed (period 256 lattice
    units; octaves of ``fbm2`` are rotated against each other so the period never shows)."""
    ou, ov = _offsets(seed, 2)
    fu, fv = np.floor(u), np.floor(v)
    su, sv = _smooth((u - fu).astype(np.float32)), _smooth((v - fv).astype(np.float32))
    mask = (1 << _T2_BITS) - 1
    iu = fu.astype(np.int32) + ou
    iv = fv.astype(np.int32) + ov
    i0, i1 = iu & mask, (iu + 1) & mask
    j0, j1 = (iv & mask) << _T2_BITS, ((iv + 1) & mask) << _T2_BITS
    a, b, c, d = _T2[i0 | j0], _T2[i1 | j0], _T2[i0 | j1], _T2[i1 | j1]
    ab = a + (b - a) * su
    return ab + ((c + (d - c) * su) - ab) * sv


def value_noise3(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed=0) -> np.ndarray:
    """3D value noise with a unit lattice: (N,) x, y, z -> (N,) float32 in [0, 1], mean 0.5."""
    ox, oy, oz = _offsets(seed, 3)
    mask = (1 << _T3_BITS) - 1
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    sx, sy, sz = (_smooth((w - f).astype(np.float32)) for w, f in ((x, fx), (y, fy), (z, fz)))
    ix, iy, iz = fx.astype(np.int32) + ox, fy.astype(np.int32) + oy, fz.astype(np.int32) + oz
    xs = (ix & mask, (ix + 1) & mask)
    ys = ((iy & mask) << _T3_BITS, ((iy + 1) & mask) << _T3_BITS)
    zs = ((iz & mask) << (2 * _T3_BITS), ((iz + 1) & mask) << (2 * _T3_BITS))
    out = None
    for dz in (0, 1):
        plane = None
        for dy in (0, 1):
            a, b = _T3[xs[0] | ys[dy] | zs[dz]], _T3[xs[1] | ys[dy] | zs[dz]]
            row = a + (b - a) * sx
            plane = row if plane is None else plane + (row - plane) * sy
        out = plane if out is None else out + (plane - out) * sz
    return out


_ROT = [(np.cos(a), np.sin(a)) for a in np.radians([0.0, 37.0, 71.0, 113.0, 157.0, 199.0, 241.0, 283.0, 331.0, 19.0])]


def _octave_weight(freq: float, fw: np.ndarray | float) -> np.ndarray | float:
    """Weight of a noise octave of ``freq`` cycles/metre given the footprint ``fw`` (metres):
    1 when well resolved, fading to 0 at the Nyquist limit (freq * fw = 0.5)."""
    return np.clip((0.5 - freq * np.asarray(fw, np.float32)) * 4.0, 0.0, 1.0)


def fbm2(u, v, seed=0, base_freq=1.0, octaves=4, gain=0.5, fw=0.0) -> np.ndarray:
    """Fractal 2D value noise: ``octaves`` octaves from ``base_freq`` (cycles/metre), doubling.

    Octaves finer than the pixel footprint ``fw`` (metres, scalar or (N,)) fade to their mean,
    so the result is band-limited per pixel. Returns (N,) float32 with mean 0.5, range ~[0, 1].
    """
    total = np.zeros(np.shape(u), np.float32)
    norm = 0.0
    amp, freq = 1.0, base_freq
    for k in range(octaves):
        w = _octave_weight(freq, fw)
        if not np.any(w):  # every pixel too coarse for this octave: it averages to its mean
            total += amp * 0.5
            norm += amp
            amp *= gain
            freq *= 2.0
            continue
        c, sn = _ROT[k % len(_ROT)]
        n = value_noise2((c * u - sn * v) * freq, (sn * u + c * v) * freq, seed=seed * 131 + k)
        total += amp * (0.5 + (n - 0.5) * w)
        norm += amp
        amp *= gain
        freq *= 2.0
    return total / norm


def fbm3(x, y, z, seed=0, base_freq=1.0, octaves=3, gain=0.5, fw=0.0) -> np.ndarray:
    """Fractal 3D value noise (see ``fbm2``): (N,) coordinates in metres -> (N,) float32 ~[0, 1]."""
    total = np.zeros(np.shape(x), np.float32)
    norm = 0.0
    amp, freq = 1.0, base_freq
    for k in range(octaves):
        w = _octave_weight(freq, fw)
        if not np.any(w):
            total += amp * 0.5
            norm += amp
            amp *= gain
            freq *= 2.0
            continue
        n = value_noise3(x * freq, y * freq, z * freq, seed=seed * 131 + k)
        total += amp * (0.5 + (n - 0.5) * w)
        norm += amp
        amp *= gain
        freq *= 2.0
    return total / norm


def box_1d(x, a, b, fw) -> np.ndarray:
    """Fraction of the footprint [x - fw/2, x + fw/2] inside the interval [a, b] (all metres)."""
    fw = np.maximum(fw, 1e-4)
    return np.clip((np.minimum(x + fw / 2, b) - np.maximum(x - fw / 2, a)) / fw, 0.0, 1.0).astype(np.float32)


def rect(u, v, u0, u1, v0, v1, fw) -> np.ndarray:
    """Box-filtered indicator of the rectangle [u0, u1] x [v0, v1]; (N,) float32 in [0, 1]."""
    return box_1d(u, u0, u1, fw) * box_1d(v, v0, v1, fw)


def pulse_train(x, period, duty, fw) -> np.ndarray:
    """Box-filtered periodic pulses: 1 on [k * period, k * period + duty * period), else 0.

    Exact integral of the square wave over the footprint, so stripes finer than a pixel
    average to ``duty`` instead of aliasing. ``period``, ``duty``, ``fw`` broadcast with ``x``.
    """
    fw = np.maximum(fw, 1e-4)

    def integral(t):
        tp = t / period
        fl = np.floor(tp)
        return (fl * duty + np.clip(tp - fl, 0.0, duty)) * period

    return np.clip((integral(x + fw / 2) - integral(x - fw / 2)) / fw, 0.0, 1.0).astype(np.float32)


def smoothstep(e0, e1, x) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (float32)."""
    t = np.clip((x - e0) / np.maximum(e1 - e0, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def mix(a, b, t) -> np.ndarray:
    """Blend colours ``a + (b - a) * t``: ``a``, ``b`` are (3,) or (N, 3), ``t`` a scalar or (N,)."""
    t = np.asarray(t, np.float32)
    if t.ndim:
        t = t[..., None]
    return np.asarray(a, np.float32) + (np.asarray(b, np.float32) - np.asarray(a, np.float32)) * t
