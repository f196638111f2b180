"""Nearest hits of a grid of rays against :class:`Primitives`, vectorised over (ray, primitive) pairs.

Testing every ray against every primitive would cost rays x primitives. A sensor knows, for each primitive,
the window of its ray grid that can possibly hit it (from the primitive's bounding box); only those pairs are
tested, all at once per primitive kind, and a ray keeps its nearest hit. Windows wrap around in columns, which a
spinning LiDAR's azimuth needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_seg3d_ros.synthetic.primitives import BOX, CYLINDER, ELLIPSOID, Primitives

NEAR = 1e-3  # hits closer than this (in units of the ray parameter) are ignored


@dataclass
class RayWindows:
    """Per primitive, the rays that may hit it: rows ``row0 .. row0 + rows - 1`` of the grid and columns
    ``(col0 + k) % width`` for ``k < cols``; (K,) int64 each, ``rows`` or ``cols`` 0 for none."""

    row0: np.ndarray
    rows: np.ndarray
    col0: np.ndarray
    cols: np.ndarray


@dataclass
class Hits:
    """Per ray of a grid (flattened row-major): ``distance`` (R,), the ray parameter t of the nearest hit (inf
    for none; metres for unit directions), and ``primitive`` (R,), its index (-1 for none)."""

    distance: np.ndarray
    primitive: np.ndarray


def _pairs(windows: RayWindows, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All (ray, primitive) pairs the windows name, primitives in ascending order."""
    rows, cols = np.maximum(windows.rows, 0), np.maximum(windows.cols, 0)
    counts = rows * cols
    primitive = np.repeat(np.arange(len(counts)), counts)
    # Position of each pair within its primitive's window, then its row and column there.
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    window_cols = cols[primitive]
    row = windows.row0[primitive] + local // window_cols
    col = (windows.col0[primitive] + local % window_cols) % width
    return row * width + col, primitive


def _box(o: tuple, d: tuple, h: tuple) -> np.ndarray:
    """Slab test: enter at the last of the three slab entries, if before the first exit."""
    with np.errstate(divide="ignore", invalid="ignore"):
        enter, leave = [], []
        for o_i, d_i, h_i in zip(o, d, h, strict=True):
            inverse = 1.0 / d_i
            t1, t2 = (-h_i - o_i) * inverse, (h_i - o_i) * inverse
            enter.append(np.minimum(t1, t2))
            leave.append(np.maximum(t1, t2))
    t_enter = np.maximum(np.maximum(enter[0], enter[1]), enter[2])
    t_leave = np.minimum(np.minimum(leave[0], leave[1]), leave[2])
    return np.where((t_enter <= t_leave) & (t_enter > NEAR), t_enter, np.inf)


def _cylinder(o: tuple, d: tuple, h: tuple) -> np.ndarray:
    """Vertical cylinder: the nearer of the side (a quadratic in x, y) and the cap that faces the ray."""
    (ox, oy, oz), (dx, dy, dz), (radius, _, half_height) = o, d, h
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - radius * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(b * b - a * c)) / a
        side = (t_side > NEAR) & (np.abs(oz + t_side * dz) <= half_height)
        t_cap = (np.where(dz < 0, half_height, -half_height) - oz) / dz
        cap_x, cap_y = ox + t_cap * dx, oy + t_cap * dy
        cap = (t_cap > NEAR) & (cap_x * cap_x + cap_y * cap_y <= radius * radius)
    return np.minimum(np.where(side, t_side, np.inf), np.where(cap, t_cap, np.inf))


def _ellipsoid(o: tuple, d: tuple, h: tuple) -> np.ndarray:
    """Ellipsoid: scaled to the unit sphere, where it is a quadratic in t."""
    os_ = [o_i / h_i for o_i, h_i in zip(o, h, strict=True)]
    ds = [d_i / h_i for d_i, h_i in zip(d, h, strict=True)]
    a = ds[0] * ds[0] + ds[1] * ds[1] + ds[2] * ds[2]
    b = os_[0] * ds[0] + os_[1] * ds[1] + os_[2] * ds[2]
    c = os_[0] * os_[0] + os_[1] * os_[1] + os_[2] * os_[2] - 1.0
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(b * b - a * c)) / a
    return np.where(t > NEAR, t, np.inf)


_INTERSECT = {BOX: _box, CYLINDER: _cylinder, ELLIPSOID: _ellipsoid}


def _local_rays(origin: np.ndarray, directions: np.ndarray, primitives: Primitives,
                ray: np.ndarray, primitive: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """Origins, directions and half sizes of the pairs' rays in their primitives' frames, as x, y, z arrays."""
    local_origin = primitives.to_local(origin[None, :] - primitives.center)[primitive]
    cos, sin = np.cos(primitives.yaw)[primitive], np.sin(primitives.yaw)[primitive]
    dx, dy, dz = directions[ray, 0], directions[ray, 1], directions[ray, 2]
    half = primitives.half_size[primitive]
    return (
        (local_origin[:, 0], local_origin[:, 1], local_origin[:, 2]),
        (cos * dx + sin * dy, -sin * dx + cos * dy, dz),
        (half[:, 0], half[:, 1], half[:, 2]),
    )


def cast(origin: np.ndarray, directions: np.ndarray, primitives: Primitives, windows: RayWindows) -> Hits:
    """Nearest hit of each ray ``origin + t * directions[row, col]`` (directions (rows, cols, 3))."""
    width = directions.shape[1]
    flat = directions.reshape(-1, 3)
    ray, primitive = _pairs(windows, width)
    t = np.full(len(ray), np.inf)
    pair_kind = primitives.kind[primitive]
    for kind, intersect in _INTERSECT.items():
        selected = np.flatnonzero(pair_kind == kind)
        if selected.size:
            t[selected] = intersect(*_local_rays(origin, flat, primitives, ray[selected], primitive[selected]))
    hit = np.isfinite(t)
    ray, primitive, t = ray[hit], primitive[hit], t[hit]
    distance = np.full(len(flat), np.inf)
    np.minimum.at(distance, ray, t)
    nearest = t == distance[ray]
    nearest_primitive = np.full(len(flat), -1, dtype=np.int64)
    nearest_primitive[ray[nearest]] = primitive[nearest]
    return Hits(distance=distance, primitive=nearest_primitive)


def surface_normals(origin: np.ndarray, directions: np.ndarray, primitives: Primitives, hits: Hits) -> np.ndarray:
    """(R, 3) unit outward normals at the hits (zeros where a ray hit nothing)."""
    flat = directions.reshape(-1, 3)
    ray = np.flatnonzero(hits.primitive >= 0)
    primitive = hits.primitive[ray]
    o, d, h = _local_rays(origin, flat, primitives, ray, primitive)
    t = hits.distance[ray]
    point = np.stack([o_i + t * d_i for o_i, d_i in zip(o, d, strict=True)], axis=1)
    half = np.stack(h, axis=1)
    scaled = point / half  # each shape's surface is where this reaches 1 in its own measure
    kind = primitives.kind[primitive]
    normal = np.zeros_like(point)
    # Box: the face whose slab the point is most outside of.
    box = kind == BOX
    axis = np.argmax(np.abs(scaled[box]), axis=1)
    normal[np.flatnonzero(box), axis] = np.sign(scaled[box, axis])
    # Cylinder: the cap if the point is nearer a cap than the side (in relative terms), else radial.
    cylinder = kind == CYLINDER
    radial = np.hypot(scaled[:, 0], scaled[:, 1])
    on_cap = cylinder & (np.abs(scaled[:, 2]) > radial)
    on_side = cylinder & ~on_cap
    normal[on_cap, 2] = np.sign(scaled[on_cap, 2])
    normal[on_side, :2] = scaled[on_side, :2] / radial[on_side, None]
    # Ellipsoid: the gradient of (x/a)^2 + (y/b)^2 + (z/c)^2.
    ellipsoid = kind == ELLIPSOID
    normal[ellipsoid] = scaled[ellipsoid] / half[ellipsoid]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # Back to the world frame: turn by +yaw about z.
    cos, sin = np.cos(primitives.yaw)[primitive], np.sin(primitives.yaw)[primitive]
    world = np.stack([cos * normal[:, 0] - sin * normal[:, 1], sin * normal[:, 0] + cos * normal[:, 1],
                      normal[:, 2]], axis=1)
    normals = np.zeros_like(flat, dtype=np.float64)
    normals[ray] = world
    return normals
