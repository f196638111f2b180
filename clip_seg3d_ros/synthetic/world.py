"""The synthetic world: scene ``i`` of a seed as a :class:`Sample` (LiDAR sweep, labels, camera frames)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip_seg3d_ros.sample import Sample
from clip_seg3d_ros.synthetic.camera import CameraConfig, PinholeCamera
from clip_seg3d_ros.synthetic.classes import CLASS_NAMES
from clip_seg3d_ros.synthetic.lidar import LidarConfig, SpinningLidar
from clip_seg3d_ros.synthetic.primitives import Primitives
from clip_seg3d_ros.synthetic.scene import SceneConfig, generate_scene

SCENE_PERIOD = 0.1  # seconds between consecutive scenes' timestamps (a 10 Hz LiDAR)


@dataclass
class WorldConfig:
    """Everything a world depends on; scene ``i`` is a function of this config and ``i`` alone."""

    seed: int = 0
    scene: SceneConfig = field(default_factory=SceneConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    cameras: tuple[CameraConfig, ...] = (CameraConfig(),)


class SyntheticWorld:
    """Procedural street scenes seen by a spinning LiDAR and pinhole cameras; labels are SemanticKITTI's 19.

    Each scene draws from its own random streams, spawned from (seed, index): the layout, the lighting, the
    LiDAR's noise and each camera's noise are independent, so changing a sensor setting moves no object.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        if self.config.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.config.seed}")
        names = [camera.name for camera in self.config.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self.lidar = SpinningLidar(self.config.lidar)
        self.cameras = [PinholeCamera(camera) for camera in self.config.cameras]

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def _streams(self, index: int) -> list[np.random.Generator]:
        """Independent generators for scene ``index``: layout, lighting, LiDAR, then one per camera."""
        if index < 0:
            raise ValueError(f"scene index must be non-negative, got {index}")
        children = np.random.SeedSequence([self.config.seed, index]).spawn(3 + len(self.cameras))
        return [np.random.default_rng(child) for child in children]

    def primitives(self, index: int) -> Primitives:
        """The solids of scene ``index`` (what :meth:`scene` scans and renders)."""
        return generate_scene(self.config.scene, -self.config.lidar.mount_height, self._streams(index)[0])

    def scene(self, index: int) -> Sample:
        _, light_rng, lidar_rng, *camera_rngs = self._streams(index)
        primitives = self.primitives(index)
        # The sun: 30-65 deg above the horizon, from any side; the same for all cameras of the scene.
        elevation, azimuth = np.radians(light_rng.uniform(30.0, 65.0)), light_rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        points, labels = self.lidar.scan(primitives, lidar_rng)
        timestamp = index * SCENE_PERIOD
        frames = [camera.render(primitives, sun, rng, timestamp)
                  for camera, rng in zip(self.cameras, camera_rngs, strict=True)]
        return Sample(name=f"synthetic_{self.config.seed}_{index:06d}", points=points, class_names=self.class_names,
                      labels=labels, cameras=frames, timestamp=timestamp)
