"""Pinhole cameras with OpenCV distortion, and the projection of LiDAR sweeps into them.

Conventions: a camera frame has x right, y down, z forward (OpenCV, ROS optical frames). ``lidar_to_camera``
is the 4x4 matrix T with p_cam = T @ [p_lidar, 1]. Pixel coordinates (u, v) = (column, row) follow OpenCV
and ROS CameraInfo: integer values at pixel centres, so pixel column i covers u in [i - 0.5, i + 0.5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraModel:
    """Intrinsics ``K`` (3x3), image size, OpenCV distortion (k1, k2, p1, p2, k3) and the LiDAR->camera transform."""

    name: str
    K: np.ndarray
    width: int
    height: int
    lidar_to_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.lidar_to_camera = np.asarray(self.lidar_to_camera, dtype=np.float64).reshape(4, 4)
        distortion = np.zeros(5)
        given = np.asarray(self.distortion, dtype=np.float64).ravel()
        if given.size > 5:
            raise ValueError(f"camera {self.name}: expected at most 5 distortion coefficients, got {given.size}")
        distortion[: given.size] = given
        self.distortion = distortion
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name}: image size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite(self.K).all() and np.isfinite(self.lidar_to_camera).all()):
            raise ValueError(f"camera {self.name}: calibration contains NaN or inf")

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.distortion))


@dataclass
class CameraProjection:
    """The points of a sweep that one camera sees.

    ``point_indices`` (M,) index the sweep; ``pixels`` (M, 2) float64 (u, v); ``depth`` (M,) metres along
    the optical axis.
    """

    camera: str
    point_indices: np.ndarray
    pixels: np.ndarray
    depth: np.ndarray

    def pixel_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer (row, column) of each visible point, ready to index an (H, W) image."""
        rows_cols = np.floor(self.pixels[:, ::-1] + 0.5).astype(np.int64)
        return rows_cols[:, 0], rows_cols[:, 1]


def distort(x: np.ndarray, y: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's radial-tangential model on normalised image coordinates (x = X/Z, y = Y/Z)."""
    k1, k2, p1, p2, k3 = coefficients
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    x_distorted = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    y_distorted = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return x_distorted, y_distorted


def project_points(
    xyz: np.ndarray, camera: CameraModel, min_depth: float = 0.1, fov_margin_deg: float = 10.0
) -> CameraProjection:
    """Project LiDAR points (N, 3) into ``camera``; keep depth > ``min_depth`` and pixels inside the image.

    With distortion, points more than ``fov_margin_deg`` outside the undistorted field of view are dropped
    before the polynomial is applied: far off-axis, the polynomial folds back and would map points behind
    the image border into it.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    in_camera = xyz @ camera.lidar_to_camera[:3, :3].T + camera.lidar_to_camera[:3, 3]
    depth = in_camera[:, 2]
    candidates = np.flatnonzero((depth > min_depth) & np.isfinite(in_camera).all(axis=1))
    x = in_camera[candidates, 0] / depth[candidates]
    y = in_camera[candidates, 1] / depth[candidates]
    if camera.distorted:
        fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
        margin = np.radians(fov_margin_deg)
        half_fov_x = np.arctan(max(cx, camera.width - cx) / fx) + margin
        half_fov_y = np.arctan(max(cy, camera.height - cy) / fy) + margin
        near_view = (np.abs(np.arctan(x)) <= half_fov_x) & (np.abs(np.arctan(y)) <= half_fov_y)
        candidates, x, y = candidates[near_view], x[near_view], y[near_view]
        x, y = distort(x, y, camera.distortion)
    u = camera.K[0, 0] * x + camera.K[0, 1] * y + camera.K[0, 2]
    v = camera.K[1, 1] * y + camera.K[1, 2]
    inside = (u >= -0.5) & (u < camera.width - 0.5) & (v >= -0.5) & (v < camera.height - 0.5)
    kept = candidates[inside]
    return CameraProjection(
        camera=camera.name,
        point_indices=kept,
        pixels=np.stack([u[inside], v[inside]], axis=1),
        depth=depth[kept],
    )


def project_to_cameras(
    xyz: np.ndarray, cameras: Sequence[CameraModel], min_depth: float = 0.1
) -> list[CameraProjection]:
    """One :class:`CameraProjection` per camera (a point may be seen by several cameras)."""
    return [project_points(xyz, camera, min_depth) for camera in cameras]


def seen_by_cameras(xyz: np.ndarray, cameras: Sequence[CameraModel], min_depth: float = 0.1) -> np.ndarray:
    """(N,) bool: the points that at least one of ``cameras`` sees (in front of it, inside its image)."""
    seen = np.zeros(len(xyz), dtype=bool)
    for projection in project_to_cameras(xyz, cameras, min_depth):
        seen[projection.point_indices] = True
    return seen


def pixel_cells(
    rows: np.ndarray, columns: np.ndarray, image_size: tuple[int, int], grid_size: tuple[int, int]
) -> np.ndarray:
    """Flat index (``i * w + j``) of the feature cell that pixel (row, column) of an H x W image falls in, on an
    h x w grid (a dense teacher's, :class:`clip_seg3d_ros.teacher.base.DenseTeacher`): cell (i, j) covers rows
    [i H/h, (i+1) H/h) and columns [j W/w, (j+1) W/w).

    ``image_size`` = (H, W), ``grid_size`` = (h, w); integer arithmetic, so it is exact for any sizes.
    """
    (height, width), (grid_height, grid_width) = image_size, grid_size
    return (np.asarray(rows) * grid_height // height) * grid_width + np.asarray(columns) * grid_width // width


def projection_cells(
    projection: CameraProjection, image_size: tuple[int, int], grid_size: tuple[int, int]
) -> np.ndarray:
    """(M,) flat feature cell of each point ``projection`` sees: its pixel's :func:`pixel_cells` on an h x w grid.

    The one transfer from points to a dense teacher's cells, for training (pseudo labels, MCFA's patches),
    camera fusion and the tests. ``image_size`` = (H, W) of the camera's image, ``grid_size`` = (h, w).
    """
    rows, columns = projection.pixel_indices()
    return pixel_cells(rows, columns, image_size, grid_size)


def camera_namespace(camera_name: str) -> str:
    """A valid ROS name for a camera, its topics' namespace and its frame's stem: lower case, anything but
    letters, digits and _ replaced by _."""
    name = re.sub(r"[^a-z0-9_]", "_", camera_name.lower()).strip("_") or "camera"
    return f"camera_{name}" if name[0].isdigit() else name


def check_camera_names(names: Sequence[str]) -> None:
    """ValueError unless every camera name is usable as a folder name and a ROS namespace: not empty, no path
    separator, not ``.`` or ``..`` (a dataset reads ``images/<camera>/``: a name must not leave the dataset), and
    no two names alike once made a ROS name (:func:`camera_namespace`: they would share topics and a frame)."""
    seen: dict[str, str] = {}
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"camera name {name!r} is not a plain name (no path separators, not . or ..)")
        namespace = camera_namespace(name)
        if namespace in seen:
            raise ValueError(f"camera names {seen[namespace]!r} and {name!r} both become {namespace!r} as ROS names")
        seen[namespace] = name
