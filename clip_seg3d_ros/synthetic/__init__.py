"""A procedural street world with a spinning LiDAR and pinhole cameras: labelled data without downloads.

    world = SyntheticWorld(WorldConfig(seed=0))
    sample = world.scene(0)   # a Sample: points (N, 4), labels (N,), one CameraFrame with RGB, class ids, depth

``python -m clip_seg3d_ros.synthetic --out scene.png`` draws a scene for a visual check.
"""

from clip_seg3d_ros.synthetic.camera import CameraConfig, PinholeCamera
from clip_seg3d_ros.synthetic.classes import CLASS_NAMES, PALETTE, class_index
from clip_seg3d_ros.synthetic.lidar import LidarConfig, SpinningLidar
from clip_seg3d_ros.synthetic.scene import SceneConfig
from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig

__all__ = [
    "CLASS_NAMES",
    "PALETTE",
    "CameraConfig",
    "LidarConfig",
    "PinholeCamera",
    "SceneConfig",
    "SpinningLidar",
    "SyntheticWorld",
    "WorldConfig",
    "class_index",
]
