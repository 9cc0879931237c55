"""Vectorised shape primitives and smooth random fields for the procedural CT phantom.

Everything here works on coordinate arrays in millimetres. Point arrays and vectors are
given as (x, y, z) triples because that is how anatomy is described (lateral, antero-
posterior, cranio-caudal); the arrays they are evaluated on are indexed (z, y, x) like every
volume in the project. Shapes return a *normalised distance* ``q`` (``q < 1`` is inside) so
callers can build shells (``q < 1`` and ``q > 1 - t``) and soft orderings without a second
geometric pass.
"""

from __future__ import annotations

import math

import numpy as np


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """3x3 rotation acting on (x, y, z) vectors: about z (yaw), then y (pitch), then x (roll)."""
    a, b, c = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(b), 0.0, math.sin(b)], [0.0, 1.0, 0.0], [-math.sin(b), 0.0, math.cos(b)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(c), -math.sin(c)], [0.0, math.sin(c), math.cos(c)]])
    return rz @ ry @ rx


def ellipsoid(x, y, z, center, radii, rot: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius of an (optionally rotated) ellipsoid; ``< 1`` inside.

    ``x, y, z`` are broadcastable arrays in mm; ``center`` and ``radii`` are (x, y, z) in mm;
    ``rot`` maps the ellipsoid's own axes to world axes (columns are its axes).
    """
    dx, dy, dz = x - center[0], y - center[1], z - center[2]
    if rot is not None:
        # Local coordinates = rot^T @ d.
        dx, dy, dz = (
            rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz,
            rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz,
            rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz,
        )
    q2 = (dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2
    return np.sqrt(q2, out=q2)


def superellipse(x, y, center_xy, radii_xy, power: float) -> np.ndarray:
    """Normalised radius of an axial super-ellipse (a boxier ellipse, like a torso); ``< 1`` inside."""
    ux = np.abs(x - center_xy[0]) / radii_xy[0]
    uy = np.abs(y - center_xy[1]) / radii_xy[1]
    return (ux**power + uy**power) ** (1.0 / power)


def densify_path(points: np.ndarray, radii: np.ndarray, per_segment: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom resampling of a polyline so tubes bend smoothly instead of at kinks.

    ``points`` is (K, 3) in mm (x, y, z), ``radii`` (K,) in mm; returns the finer pair.
    """
    points = np.asarray(points, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    if len(points) < 3 or per_segment <= 1:
        return points, radii
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for k in range(len(points) - 1):
        p0, p1, p2, p3 = padded[k], padded[k + 1], padded[k + 2], padded[k + 3]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(points[-1:])
    fine = np.vstack(out)
    r_fine = np.interp(np.linspace(0, len(radii) - 1, len(fine)), np.arange(len(radii)), radii)
    return fine, r_fine


def tube(x, y, z, points, radii, scale=(1.0, 1.0, 1.0), per_segment: int = 3, wall: float | None = None):
    """Normalised distance to a tapered tube along a smooth path; ``< 1`` inside.

    ``points`` (K, 3) and ``radii`` (K,) are in mm; the radius varies linearly along each
    segment. ``scale`` (x, y, z) squeezes the cross-section (e.g. y 0.6 flattens a vessel or the
    pancreas antero-posteriorly). The result is min over segments of distance / local radius.
    With ``wall`` (mm) a second field for the lumen (radius minus ``wall``) comes back too, from
    the same pass: ``(outer, lumen)``.
    """
    pts, rad = densify_path(points, radii, per_segment)
    sx, sy, sz = (float(s) for s in scale)
    px, py, pz = x / sx, y / sy, z / sz
    q = q_in = None
    for k in range(len(pts) - 1):
        a = pts[k] / (sx, sy, sz)
        v = (pts[k + 1] - pts[k]) / (sx, sy, sz)
        vv = float(v @ v) or 1e-12
        t = ((px - a[0]) * v[0] + (py - a[1]) * v[1] + (pz - a[2]) * v[2]) / vv
        np.clip(t, 0.0, 1.0, out=t)
        d2 = (px - a[0] - t * v[0]) ** 2 + (py - a[1] - t * v[1]) ** 2 + (pz - a[2] - t * v[2]) ** 2
        d = np.sqrt(d2, out=d2)
        r = rad[k] + t * (rad[k + 1] - rad[k])
        qk = d / r
        q = qk if q is None else np.minimum(q, qk, out=q)
        if wall is not None:
            r -= wall
            np.maximum(r, 1.0, out=r)
            qk = np.divide(d, r, out=r)
            q_in = qk if q_in is None else np.minimum(q_in, qk, out=q_in)
    return q if wall is None else (q, q_in)


def path_bounds(points, radii, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) corners, (x, y, z) in mm, of a tube's bounding box plus ``margin``."""
    pts, rad = densify_path(points, radii)
    r = float(np.max(rad)) + margin
    return pts.min(axis=0) - r, pts.max(axis=0) + r


def _bspline_weights(nodes: np.ndarray, samples: np.ndarray, spacing: float) -> np.ndarray:
    """(len(samples), len(nodes)) cubic B-spline weights: a smooth, C2 interpolation matrix."""
    u = np.abs(samples[:, None] - nodes[None, :]) / spacing
    w = np.zeros_like(u)
    near = u < 1
    far = (u >= 1) & (u < 2)
    w[near] = 2.0 / 3.0 - u[near] ** 2 + 0.5 * u[near] ** 3
    w[far] = (2.0 - u[far]) ** 3 / 6.0
    return w


def smooth_field(
    rng: np.random.Generator,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    half_extent_mm: tuple[float, float, float],
    node_spacing_mm: float,
    count: int = 1,
) -> np.ndarray:
    """``count`` smooth random fields with unit standard deviation on a (z, y, x) grid.

    Random coefficients live on a node lattice defined by the physical field of view
    (``half_extent_mm``, z, y, x) and the node spacing, never by the voxel count, so the same
    generator state gives the same field at any resolution of the same field of view. Returns
    an array (count, z, y, x), float32.
    """
    node_axes = []
    for half in half_extent_mm:
        n = int(math.ceil(half / node_spacing_mm)) + 2
        node_axes.append(np.arange(-n, n + 1) * node_spacing_mm)
    coeffs = rng.standard_normal((count,) + tuple(len(a) for a in node_axes))
    # Each node of a 3D cubic B-spline has weights whose squares sum to (151/315)^3 over space.
    coeffs /= (151.0 / 315.0) ** 1.5
    wz, wy, wx = (_bspline_weights(n, s, node_spacing_mm).astype(np.float32) for n, s in zip(node_axes, axes_mm))
    # Separable B-spline evaluation: three small matrix products (x, then y, then z).
    out = coeffs.astype(np.float32) @ wx.T  # (count, nz, ny, X)
    out = np.matmul(wy, out)  # (count, nz, Y, X)
    out = np.tensordot(wz, out, axes=([1], [1]))  # (Z, count, Y, X)
    return np.ascontiguousarray(np.moveaxis(out, 1, 0))
