"""The data model of the whole project: the sweep every dataset loader (and the synthetic world) returns,
its camera frames, and the label value of ignored points.

Label convention, everywhere in the project: class indices 0..C-1 into ``class_names``, and
``IGNORE_INDEX`` (-1) for unlabelled / ignored points, the same value the Segmenter gives invalid points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip_seg3d_ros.geometry.camera import CameraModel

IGNORE_INDEX = -1


class DatasetError(ValueError):
    """A data file that cannot be used (corrupt scan, labels that do not fit, a bad calibration); the message
    names the file. The command-line tools report it in one line."""


@dataclass
class CameraFrame:
    """One camera's image of a sweep.

    ``image``: (H, W, 3) uint8 RGB; ``label_image``: optional (H, W) int64 class indices (-1 unlabelled),
    as the synthetic world renders and some datasets annotate; ``depth``: optional (H, W) float32 metres
    (synthetic world only; inf where nothing was hit).
    """

    camera: CameraModel
    image: np.ndarray
    timestamp: float = 0.0
    label_image: np.ndarray | None = None
    depth: np.ndarray | None = None


@dataclass
class Sample:
    """One LiDAR sweep with what came with it.

    ``points``: (N, 4) float32 x, y, z (metres, LiDAR frame), intensity; ``labels``: (N,) int64 class indices or
    None (no ground truth); ``cameras``: zero or more camera frames whose ``camera.lidar_to_camera`` maps
    this sweep's points into them; ``timestamp``: seconds.
    """

    name: str
    points: np.ndarray
    class_names: list[str]
    labels: np.ndarray | None = None
    cameras: list[CameraFrame] = field(default_factory=list)
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 4:
            raise DatasetError(f"sample {self.name}: points must be (N, 4), got {self.points.shape}")
        if self.labels is not None and self.labels.shape != (len(self.points),):
            raise DatasetError(f"sample {self.name}: {self.labels.shape} labels for {len(self.points)} points")
