"""A pinhole camera rigidly mounted near the LiDAR, rendering :class:`Primitives` by ray casting.

The camera's rays go through pixel centres with an optical-axis component of 1, so a hit's ray parameter is
its depth along the optical axis: the depth image and :func:`project_points` measure the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_seg3d_ros.geometry.camera import CameraModel
from clip_seg3d_ros.sample import IGNORE_INDEX, CameraFrame
from clip_seg3d_ros.synthetic.primitives import Primitives
from clip_seg3d_ros.synthetic.raycast import RayWindows, cast, surface_normals
from clip_seg3d_ros.synthetic.shading import shade

# LiDAR axes (x forward, y left, z up) to optical axes (x right, y down, z forward).
LIDAR_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
NEAR_PLANE = 0.05  # metres: bounding boxes are clipped here before they are projected
# The 12 edges of a box whose corner i has sign bits 0, 1, 2 of i on x, y, z (see Primitives.corners).
BOX_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])


@dataclass
class CameraConfig:
    """Image size, horizontal field of view and mounting in the LiDAR frame.

    The default is KITTI-like: a forward camera 0.27 m ahead of and 8 cm below the LiDAR, 90 deg wide.
    ``yaw_deg`` turns the camera about the LiDAR z axis (90: looking left); ``pixel_noise_std`` is in 0-255 levels.
    """

    name: str = "front"
    width: int = 640
    height: int = 384
    horizontal_fov_deg: float = 90.0
    position: tuple[float, float, float] = (0.27, 0.0, -0.08)
    yaw_deg: float = 0.0
    pixel_noise_std: float = 2.0


class PinholeCamera:
    """The calibration as a :class:`CameraModel`, the ray of each pixel, and rendering."""

    def __init__(self, config: CameraConfig) -> None:
        if not 0.0 < config.horizontal_fov_deg < 180.0:
            raise ValueError(f"camera {config.name}: horizontal field of view must be in (0, 180) deg")
        self.config = config
        focal = config.width / 2 / np.tan(np.radians(config.horizontal_fov_deg) / 2)
        intrinsics = np.array([[focal, 0.0, (config.width - 1) / 2], [0.0, focal, (config.height - 1) / 2],
                               [0.0, 0.0, 1.0]])
        yaw = np.radians(config.yaw_deg)
        turn = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        rotation = LIDAR_TO_OPTICAL @ turn.T  # LiDAR frame -> optical frame
        self.origin = np.asarray(config.position, dtype=np.float64)
        lidar_to_camera = np.eye(4)
        lidar_to_camera[:3, :3] = rotation
        lidar_to_camera[:3, 3] = -rotation @ self.origin
        self.model = CameraModel(name=config.name, K=intrinsics, width=config.width, height=config.height,
                                 lidar_to_camera=lidar_to_camera)
        self.rotation = rotation
        u, v = np.meshgrid(np.arange(config.width), np.arange(config.height))
        optical = np.stack([(u - intrinsics[0, 2]) / focal, (v - intrinsics[1, 2]) / focal, np.ones(u.shape)], axis=-1)
        self.directions = optical @ rotation  # rows of R^T applied: optical -> LiDAR frame, z_optical stays 1

    def windows(self, primitives: Primitives) -> RayWindows:
        """Pixel rectangle of each bounding box: the projections of its corners in front of the camera and of
        its edges' crossings of the near plane (the exact bounds of the clipped convex box)."""
        corners = (primitives.corners() - self.origin) @ self.rotation.T  # (K, 8, 3) in the optical frame
        a, b = corners[:, BOX_EDGES[:, 0]], corners[:, BOX_EDGES[:, 1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (NEAR_PLANE - a[..., 2]) / (b[..., 2] - a[..., 2])
        crossing = (s > 0) & (s < 1)
        crossings = a + np.where(crossing, s, 0.0)[..., None] * (b - a)
        points = np.concatenate([corners, crossings], axis=1)
        valid = np.concatenate([corners[..., 2] >= NEAR_PLANE, crossing], axis=1)
        depth = np.where(valid, points[..., 2], 1.0)
        intrinsics = self.model.K
        u = intrinsics[0, 0] * points[..., 0] / depth + intrinsics[0, 2]
        v = intrinsics[1, 1] * points[..., 1] / depth + intrinsics[1, 2]
        seen = valid.any(axis=1)
        margin = 1e-6
        col0 = np.ceil(np.where(valid, u, np.inf).min(axis=1) - margin)
        col1 = np.floor(np.where(valid, u, -np.inf).max(axis=1) + margin)
        row0 = np.ceil(np.where(valid, v, np.inf).min(axis=1) - margin)
        row1 = np.floor(np.where(valid, v, -np.inf).max(axis=1) + margin)
        width, height = self.config.width, self.config.height
        col0, col1 = np.clip(np.where(seen, col0, 0), 0, width), np.clip(np.where(seen, col1, -1), -1, width - 1)
        row0, row1 = np.clip(np.where(seen, row0, 0), 0, height), np.clip(np.where(seen, row1, -1), -1, height - 1)
        return RayWindows(row0=row0.astype(np.int64), rows=np.maximum(row1 - row0 + 1, 0).astype(np.int64),
                          col0=col0.astype(np.int64), cols=np.maximum(col1 - col0 + 1, 0).astype(np.int64))

    def render(self, primitives: Primitives, sun: np.ndarray, rng: np.random.Generator,
               timestamp: float = 0.0) -> CameraFrame:
        """RGB (H, W, 3) uint8, class ids (H, W) int64 (-1: sky) and depth (H, W) float32 (inf: sky)."""
        hits = cast(self.origin, self.directions, primitives, self.windows(primitives))
        shape = (self.config.height, self.config.width)
        hit = hits.primitive >= 0
        labels = np.where(hit, primitives.label[hits.primitive], IGNORE_INDEX)
        flat = self.directions.reshape(-1, 3)
        points = self.origin + flat * np.where(hit, hits.distance, 0.0)[:, None]
        normals = surface_normals(self.origin, self.directions, primitives, hits)
        instances = np.where(hit, primitives.instance[hits.primitive], -1)
        rgb = shade(labels, instances, points, normals, flat, sun, rng, self.config.pixel_noise_std)
        return CameraFrame(camera=self.model, image=rgb.reshape(*shape, 3), timestamp=timestamp,
                           label_image=labels.reshape(shape), depth=hits.distance.astype(np.float32).reshape(shape))
