"""A spinning multi-beam LiDAR (HDL-64-like by default) that scans :class:`Primitives`.

The sensor sits at the origin of the LiDAR frame (x forward, y left, z up). Its rays form a grid: one row per
beam (elevation, from the top beam down), one column per azimuth step (from -pi, counter-clockwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_seg3d_ros.synthetic.classes import INTENSITY
from clip_seg3d_ros.synthetic.primitives import Primitives
from clip_seg3d_ros.synthetic.raycast import RayWindows, cast


@dataclass
class LidarConfig:
    """Beam layout and measurement model; the defaults follow the Velodyne HDL-64E of SemanticKITTI.

    ``range_noise_std`` metres of gaussian noise along the ray; ``dropout``: probability that a return is lost;
    ``intensity_noise_std``: gaussian noise on the per-class intensity (clipped to [0, 1]).
    """

    beams: int = 64
    azimuth_steps: int = 2048
    elevation_max_deg: float = 2.0
    elevation_min_deg: float = -24.8
    mount_height: float = 1.73
    min_range: float = 2.5
    max_range: float = 100.0
    range_noise_std: float = 0.02
    dropout: float = 0.05
    intensity_noise_std: float = 0.03


class SpinningLidar:
    """Ray directions of one sweep, and the scan of a scene with noise and dropout."""

    def __init__(self, config: LidarConfig) -> None:
        if config.beams < 1 or config.azimuth_steps < 1:
            raise ValueError(f"need at least one beam and one azimuth step, got {config}")
        self.config = config
        self.elevation = np.radians(np.linspace(config.elevation_max_deg, config.elevation_min_deg, config.beams))
        self.azimuth_step = 2 * np.pi / config.azimuth_steps
        azimuth = -np.pi + self.azimuth_step * np.arange(config.azimuth_steps)
        elevation, azimuth = np.meshgrid(self.elevation, azimuth, indexing="ij")
        self.directions = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                    np.sin(elevation)], axis=-1)

    def windows(self, primitives: Primitives) -> RayWindows:
        """Beams and azimuth columns that can reach each primitive's oriented bounding box.

        Azimuth: seen from outside, a convex footprint spans the angles of its corners. Elevation: the box's
        points have heights in [z_low, z_high] and horizontal distances in [nearest, farthest] of its footprint.
        """
        half = primitives.half_size
        sensor = primitives.to_local(-primitives.center)  # the sensor in each primitive's frame
        outside = np.maximum(np.abs(sensor[:, :2]) - half[:, :2], 0.0)
        nearest = np.hypot(outside[:, 0], outside[:, 1])
        surrounds = nearest == 0.0  # the sensor is above or below the footprint: every azimuth
        corners = primitives.corners()[:, :4, :2]  # the bottom four corners give the footprint
        farthest = np.linalg.norm(corners, axis=2).max(axis=1)
        z_low = primitives.center[:, 2] - half[:, 2]
        z_high = primitives.center[:, 2] + half[:, 2]
        top = np.arctan2(z_high, np.where(z_high > 0, nearest, farthest))
        bottom = np.arctan2(z_low, np.where(z_low > 0, farthest, nearest))
        # Beams are sorted from the top down: the rows between the top and the bottom bound.
        descending = -self.elevation
        row0 = np.searchsorted(descending, -top - 1e-9, side="left")
        row1 = np.searchsorted(descending, -bottom + 1e-9, side="right")

        center_azimuth = np.arctan2(primitives.center[:, 1], primitives.center[:, 0])
        corner_azimuth = np.arctan2(corners[..., 1], corners[..., 0]) - center_azimuth[:, None]
        corner_azimuth = (corner_azimuth + np.pi) % (2 * np.pi) - np.pi
        first = np.ceil((center_azimuth + corner_azimuth.min(axis=1) + np.pi) / self.azimuth_step - 1e-9)
        last = np.floor((center_azimuth + corner_azimuth.max(axis=1) + np.pi) / self.azimuth_step + 1e-9)
        steps = self.config.azimuth_steps
        cols = np.where(surrounds, steps, np.clip(last - first + 1, 0, steps)).astype(np.int64)
        col0 = np.where(surrounds, 0, first % steps).astype(np.int64)
        in_range = np.hypot(nearest, np.maximum(np.maximum(z_low, -z_high), 0.0)) <= self.config.max_range
        rows = np.where(in_range, row1 - row0, 0).astype(np.int64)
        return RayWindows(row0=row0.astype(np.int64), rows=rows, col0=col0, cols=cols)

    def scan(self, primitives: Primitives, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One sweep: points (N, 4) float32 x, y, z, intensity and labels (N,) int64 class indices."""
        config = self.config
        hits = cast(np.zeros(3), self.directions, primitives, self.windows(primitives))
        rays = len(hits.distance)
        # Draw the noise for every ray, hit or not, so that one scene's noise does not depend on another's hits.
        measured = hits.distance + rng.normal(0.0, config.range_noise_std, rays)
        lost = rng.random(rays) < config.dropout
        intensity_noise = rng.normal(0.0, config.intensity_noise_std, rays)
        kept = (hits.primitive >= 0) & (hits.distance >= config.min_range) & (hits.distance <= config.max_range)
        kept &= ~lost
        labels = primitives.label[hits.primitive[kept]]
        xyz = self.directions.reshape(-1, 3)[kept] * measured[kept, None]
        intensity = np.clip(INTENSITY[labels] + intensity_noise[kept], 0.0, 1.0)
        points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
        return points, labels.astype(np.int64)
