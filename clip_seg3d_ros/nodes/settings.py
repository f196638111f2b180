"""The segmentation node's own settings: what only a ROS node has (topics, queues, TF, diagnostics).

How a sweep is labelled is set by :class:`~clip_seg3d_ros.runtime.settings.RuntimeSettings`, shared with
rosbag replay; the node's parameters are the entries of both schemas (:data:`NODE_PARAMETERS`), each declared
once as a field of its settings dataclass (see :mod:`clip_seg3d_ros.runtime.settings`).
``config/segment.yaml`` holds the defaults in the ``clip_seg3d_node: ros__parameters:`` layout. Besides them the
node takes each camera's extrinsics (``extrinsics.<camera>.<key>``) and rclpy's ``qos_overrides.*``; any other
name in the params file is warned about (:func:`unknown_parameter_warnings`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from clip_seg3d_ros.geometry.transforms import transform_from_quaternion
from clip_seg3d_ros.runtime.settings import RUNTIME_SCHEMA, Setting, Settings, setting

NODE_NAME = "clip_seg3d_node"

MAX_QUEUE_SIZE = 100
"""Upper bound of ``queue_size``: each camera keeps that many images; 100 full-HD RGB images are 600 MB."""

MAX_SLOP_S = 1.0
"""Upper bound of ``slop``: an image a second away from the sweep shows another scene at driving speed."""

MAX_TF_TIMEOUT_S = 1.0
"""Upper bound of ``tf_timeout``: the worker waits up to this per camera and sweep; a second is already ten
sweeps of a 10 Hz LiDAR."""

MIN_DIAGNOSTICS_PERIOD_S, MAX_DIAGNOSTICS_PERIOD_S = 0.01, 3600.0
"""``diagnostics_period`` bounds: reports faster than 100 Hz only flood /diagnostics; one an hour is the
slowest that still says the node is alive."""


@dataclass(frozen=True)
class NodeSettings(Settings):
    """The node-only parameters, each declared once (see :mod:`clip_seg3d_ros.runtime.settings`)."""

    camera_topics: tuple[str, ...] = setting(
        (), "image topics (sensor_msgs/Image); each camera's CameraInfo is the sibling 'camera_info'")
    publish_rgb: bool = setting(True, "also publish ~/output/points_rgb (x, y, z, rgb in the class palette) for RViz")
    queue_size: int = setting(
        10, "images kept per camera for pairing with sweeps (the newest ones), with cameras", unit="images",
        minimum=1, maximum=MAX_QUEUE_SIZE)
    slop: float = setting(
        0.05, "time between a sweep's and an image's stamps still taken as one moment, with cameras", unit="s",
        minimum=0.0, maximum=MAX_SLOP_S)
    tf_timeout: float = setting(
        0.05, "time to wait for a LiDAR-to-camera transform from TF before taking the latest one", unit="s",
        minimum=0.0, maximum=MAX_TF_TIMEOUT_S)
    diagnostics_period: float = setting(
        1.0, "time between /diagnostics reports", unit="s", minimum=MIN_DIAGNOSTICS_PERIOD_S,
        maximum=MAX_DIAGNOSTICS_PERIOD_S)

    @classmethod
    def from_values(cls, values: Mapping[str, object], use_cameras: bool = False) -> NodeSettings:
        """Build and validate from ROS parameter values; ``use_cameras`` (a runtime setting) needs camera topics."""
        return cls.with_values(values).validated(use_cameras)

    def validated(self, use_cameras: bool = False) -> NodeSettings:
        """A copy with every value checked by the schema, camera topics when cameras are on, none twice."""
        settings = self.checked()
        if use_cameras and not settings.camera_topics:
            raise ValueError("use_cameras is true but camera_topics is empty: list the image topics")
        if len(set(settings.camera_topics)) != len(settings.camera_topics):
            raise ValueError(f"camera_topics repeat a topic: {list(settings.camera_topics)}")
        return settings


NODE_SCHEMA: tuple[Setting, ...] = NodeSettings.schema()
"""The node-only settings' schema, one entry per field of :class:`NodeSettings`."""

NODE_PARAMETERS: tuple[Setting, ...] = RUNTIME_SCHEMA + NODE_SCHEMA
"""Every parameter the segmentation node declares at start-up: the runtime settings, then the node's own."""


def node_parameter(name: str) -> Setting:
    """The schema entry of parameter ``name``; a ValueError for a name that is none of the node's settings."""
    for entry in NODE_PARAMETERS:
        if entry.name == name:
            return entry
    raise ValueError(f"parameter {name!r} is not a setting of {NODE_NAME}")


def unknown_parameter_warnings(given: Iterable[str], known: Iterable[str]) -> list[str]:
    """One warning per name in ``given`` (a params file's, for this node) that the node does not know, naming
    the closest known name where one is close (:func:`difflib.get_close_matches`).

    ``known``: the declared parameter names. Also legitimate: ``qos_overrides.*`` (rclpy's QoS parameters) and
    ``extrinsics.<camera>.<key>`` for any camera and a key of :data:`EXTRINSICS_KEYS` (declared only for the
    cameras in ``camera_topics``). rclpy itself ignores an undeclared name, so a misspelt one would silently
    leave the default in place.
    """
    known = set(known)
    warnings = []
    for name in given:
        parts = name.split(".")
        extrinsics = len(parts) == 3 and parts[0] == "extrinsics"
        if name in known or name.startswith("qos_overrides.") or (extrinsics and parts[2] in EXTRINSICS_KEYS):
            continue
        candidates = known | {extrinsics_parameter(parts[1], key) for key in EXTRINSICS_KEYS if len(parts) == 3}
        closest = difflib.get_close_matches(name, sorted(candidates), n=1)
        hint = f"; did you mean {closest[0]!r}?" if closest else ""
        warnings.append(f"unknown parameter {name!r} is ignored{hint}")
    return warnings


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
