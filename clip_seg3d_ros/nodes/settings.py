"""The segmentation node's own settings: what only a ROS node has (topics, queues, TF, diagnostics).

How a sweep is labelled is set by :class:`~clip_seg3d_ros.runtime.settings.RuntimeSettings`, shared with
rosbag replay; the node declares the fields of both classes as its parameters
(``config/segment.yaml`` holds the defaults in the ``clip_seg3d_node: ros__parameters:`` layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clip_seg3d_ros.runtime.settings import Settings

NODE_NAME = "clip_seg3d_node"

DESCRIPTIONS: dict[str, str] = {
    "camera_topics": "image topics (sensor_msgs/Image); each camera's CameraInfo is the sibling 'camera_info'",
    "publish_rgb": "also publish ~/output/points_rgb (x, y, z, rgb in the class palette) for RViz",
    "queue_size": "message_filters synchronizer queue (sweeps + images), with cameras",
    "slop": "seconds between a sweep's and an image's stamps still taken as one moment, with cameras",
    "tf_timeout": "seconds to wait for the LiDAR-to-camera transform before falling back to the latest one",
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
