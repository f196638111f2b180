"""The segmentation node's own settings: what only a ROS node has (topics, queues, TF, diagnostics).

How a sweep is labelled is set by :class:`~clip_seg3d_ros.runtime.settings.RuntimeSettings`, shared with
rosbag replay; the node declares the fields of both classes as its parameters
(``config/segment.yaml`` holds the defaults in the ``clip_seg3d_node: ros__parameters:`` layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from clip_seg3d_ros.geometry.transforms import transform_from_quaternion
from clip_seg3d_ros.runtime.settings import Settings

NODE_NAME = "clip_seg3d_node"

DESCRIPTIONS: dict[str, str] = {
    "camera_topics": "image topics (sensor_msgs/Image); each camera's CameraInfo is the sibling 'camera_info'",
    "publish_rgb": "also publish ~/output/points_rgb (x, y, z, rgb in the class palette) for RViz",
    "queue_size": "images kept per camera for pairing with sweeps (the newest ones), with cameras",
    "slop": "seconds between a sweep's and an image's stamps still taken as one moment, with cameras",
    "tf_timeout": "seconds to wait for a LiDAR-to-camera transform from TF before taking the latest one",
    "diagnostics_period": "seconds between /diagnostics reports",
}


@dataclass(frozen=True)
class NodeSettings(Settings):
    """One field per node-only parameter (see :data:`DESCRIPTIONS`), with its default."""

    camera_topics: tuple[str, ...] = field(default_factory=tuple)
    publish_rgb: bool = True
    queue_size: int = 10
    slop: float = 0.05
    tf_timeout: float = 0.05
    diagnostics_period: float = 1.0

    @classmethod
    def from_values(cls, values: dict, use_cameras: bool = False) -> NodeSettings:
        """Build and validate from ROS parameter values; ``use_cameras`` (a runtime setting) needs camera topics."""
        return cls.converted(values).validated(use_cameras)

    def validated(self, use_cameras: bool = False) -> NodeSettings:
        if use_cameras and not self.camera_topics:
            raise ValueError("use_cameras is true but camera_topics is empty: list the image topics")
        if len(set(self.camera_topics)) != len(self.camera_topics):
            raise ValueError(f"camera_topics repeat a topic: {list(self.camera_topics)}")
        if self.queue_size < 1:
            raise ValueError(f"parameter 'queue_size' must be >= 1, got {self.queue_size}")
        for name in ("slop", "tf_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"parameter {name!r} must be >= 0, got {getattr(self, name)}")
        if self.diagnostics_period <= 0:
            raise ValueError(f"parameter 'diagnostics_period' must be > 0, got {self.diagnostics_period}")
        return self


def camera_info_topic(image_topic: str) -> str:
    """The sibling ``camera_info`` of an image topic: ``/cam/image_raw`` -> ``/cam/camera_info``."""
    image_topic = image_topic.rstrip("/")
    if not image_topic:
        raise ValueError("an image topic name is empty")
    parent, slash, _ = image_topic.rpartition("/")
    return f"{parent}{slash}camera_info"


def camera_name(image_topic: str) -> str:
    """The camera's name: the namespace of its image topic (``/cam_front/image_raw`` -> ``cam_front``), which
    also names its extrinsics parameters. A topic without a namespace names itself."""
    parent = camera_info_topic(image_topic).rpartition("/")[0]
    return parent.rpartition("/")[2] or image_topic.strip("/")


EXTRINSICS_KEYS = ("lidar_to_camera", "translation", "rotation")
EXTRINSICS_DESCRIPTIONS = {
    "lidar_to_camera": "16 numbers, row-major 4x4 T with p_camera = T p_lidar (camera optical frame); [] = unset",
    "translation": "x, y, z of the same transform (metres), with rotation; [] = unset",
    "rotation": "its quaternion x, y, z, w (ROS order), with translation; [] = unset",
}


def extrinsics_parameter(camera: str, key: str) -> str:
    """The parameter that holds one part of camera ``camera``'s extrinsics: ``extrinsics.<camera>.<key>``."""
    return f"extrinsics.{camera}.{key}"


def lidar_to_camera_from_parameters(camera: str, values: Mapping[str, object]) -> np.ndarray | None:
    """The 4x4 LiDAR-to-camera transform from a camera's extrinsics parameters (by key), None when unset.

    Either ``lidar_to_camera`` (16 numbers) or ``translation`` (3) + ``rotation`` (quaternion x, y, z, w), the
    way calibration tools and ``static_transform_publisher`` write them; anything else is a ValueError that
    names the parameter.
    """
    def numbers(key: str) -> np.ndarray:
        value = values.get(key)
        array = np.asarray([] if value is None else list(value), dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"parameter {extrinsics_parameter(camera, key)!r} holds a non-finite number")
        return array

    matrix, translation, rotation = (numbers(key) for key in EXTRINSICS_KEYS)
    if matrix.size and (translation.size or rotation.size):
        raise ValueError(f"camera {camera!r}: give lidar_to_camera or translation + rotation, not both")
    if matrix.size:
        if matrix.size != 16 or not np.allclose(matrix[12:], [0, 0, 0, 1]):
            raise ValueError(f"parameter {extrinsics_parameter(camera, 'lidar_to_camera')!r} must be 16 numbers, "
                             "a row-major 4x4 rigid transform ending in 0 0 0 1")
        return matrix.reshape(4, 4)
    if not translation.size and not rotation.size:
        return None
    if translation.size != 3 or rotation.size != 4:
        raise ValueError(f"camera {camera!r}: translation needs 3 numbers and rotation 4 (x, y, z, w), got "
                         f"{translation.size} and {rotation.size}")
    x, y, z, w = rotation
    return transform_from_quaternion([w, x, y, z], translation)
