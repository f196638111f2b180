"""Camera models, LiDAR-to-camera projection and calibration parsing."""

from clip_seg3d_ros.geometry.camera import CameraModel, CameraProjection, project_points, project_to_cameras
from clip_seg3d_ros.geometry.transforms import invert_transform, transform_from_quaternion

__all__ = [
    "CameraModel",
    "CameraProjection",
    "invert_transform",
    "project_points",
    "project_to_cameras",
    "transform_from_quaternion",
]
