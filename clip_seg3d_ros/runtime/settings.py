"""The segmentation node's parameters: names, defaults, meaning and validation, free of ROS.

:mod:`clip_seg3d_ros.nodes.segment_node` declares every field of :class:`SegmentParameters` with its default and the
description below, reads them once at start-up and builds them with :meth:`SegmentParameters.from_values`.
``config/segment.yaml`` holds the same defaults in the ``clip_seg3d_node: ros__parameters:`` layout.

Every parameter is declared with dynamic typing and checked here instead (:func:`convert_parameter`): ROS
types an empty list as a byte array (from YAML: a bool array), and a statically typed double would refuse
``score_threshold: 1``. :func:`string_list` takes an empty list of any type as "none".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

import torch

NODE_NAME = "clip_seg3d_node"

DESCRIPTIONS: dict[str, str] = {
    "checkpoint": "path of the trained checkpoint (.pt); required",
    "device": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
    "sparse_backend": "'auto' (torchsparse on CUDA when installed), 'native' or 'torchsparse'",
    "vocabulary": "class names to segment; empty: the checkpoint's. Names not in the checkpoint need the CLIP "
    "text encoder (clip_model / clip_weights). Changeable at runtime",
    "score_threshold": "points whose class probability is below this are labelled ignored (65535); changeable",
    "max_points": "at most this many points per sweep go into the network (0: no limit); the others take the "
    "result of their (or a neighbouring) voxel",
    "calibration_bias": "lowers the classes seen in training (cosine units) for zero-shot use; changeable",
    "use_cameras": "fuse CLIP's 2D predictions for the points the cameras see (needs camera_topics and CLIP)",
    "camera_topics": "image topics (sensor_msgs/Image); each camera's CameraInfo is the sibling 'camera_info'",
    "fusion_weight": "weight w of the 2D probabilities: p = (1 - w) p3d + w p2d on camera-seen points; changeable",
    "publish_rgb": "also publish ~/output/points_rgb (x, y, z, rgb in the class palette) for RViz",
    "clip_model": "open_clip model of the runtime text encoder and camera teacher; empty: the checkpoint's",
    "clip_weights": "its weights: a local file or an open_clip tag in the Hugging Face cache; empty: the "
    "checkpoint's tag (never downloaded)",
    "clip_quick_gelu": "true for OpenAI-trained CLIP weights given as a file (registry tags know their own)",
    "queue_size": "message_filters synchronizer queue (sweeps + images), with cameras",
    "slop": "seconds between a sweep's and an image's stamps still taken as one moment, with cameras",
    "tf_timeout": "seconds to wait for the LiDAR-to-camera transform before falling back to the latest one",
    "diagnostics_period": "seconds between /diagnostics reports",
}

RUNTIME_PARAMETERS = ("vocabulary", "score_threshold", "calibration_bias", "fusion_weight")
"""The parameters the node applies while running; the others are read once at start-up."""


@dataclass(frozen=True)
class SegmentParameters:
    """One field per node parameter (see :data:`DESCRIPTIONS`), with the node's defaults."""

    checkpoint: str = ""
    device: str = "auto"
    sparse_backend: str = "auto"
    vocabulary: tuple[str, ...] = field(default_factory=tuple)
    score_threshold: float = 0.0
    max_points: int = 0
    calibration_bias: float = 0.0
    use_cameras: bool = False
    camera_topics: tuple[str, ...] = field(default_factory=tuple)
    fusion_weight: float = 0.5
    publish_rgb: bool = True
    clip_model: str = ""
    clip_weights: str = ""
    clip_quick_gelu: bool = False
    queue_size: int = 10
    slop: float = 0.05
    tf_timeout: float = 0.05
    diagnostics_period: float = 1.0

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        """Name -> default value as declared to ROS (string arrays as lists)."""
        defaults = cls()
        return {name: _declared(getattr(defaults, name)) for name in cls.names()}

    @classmethod
    def from_values(cls, values: dict) -> SegmentParameters:
        """Build and validate from a {name: value} dict (ROS parameter values); unknown names are an error."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {cls.names()}")
        converted = {name: convert_parameter(name, value) for name, value in values.items()}
        return replace(cls(), **converted).validated()

    def validated(self) -> SegmentParameters:
        """``self`` if every value is usable; otherwise a ValueError naming the parameter and the rule."""
        if not self.checkpoint:
            raise ValueError("parameter 'checkpoint' is required: the path of a trained clip_seg3d_ros checkpoint")
        resolve_device(self.device)
        if self.sparse_backend not in ("auto", "native", "torchsparse"):
            raise ValueError(
                f"parameter 'sparse_backend' must be auto, native or torchsparse, got {self.sparse_backend!r}"
            )
        check_unit_interval("score_threshold", self.score_threshold)
        check_unit_interval("fusion_weight", self.fusion_weight)
        if self.max_points < 0:
            raise ValueError(f"parameter 'max_points' must be >= 0 (0: no limit), got {self.max_points}")
        if self.use_cameras and not self.camera_topics:
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


def _declared(value):
    return list(value) if isinstance(value, tuple) else value


def string_list(name: str, value) -> tuple[str, ...]:
    """A string-array parameter's value as a tuple; None or an empty list of any type is ``()``."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"parameter {name!r} must be a list of strings, got {value!r}")
    items = list(value)
    if not items:
        return ()
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"parameter {name!r} must be a list of strings, got {items!r}")
    return tuple(items)


def convert_parameter(name: str, value):
    """The Python value of parameter ``name`` as :class:`SegmentParameters` holds it; ValueError on a bad type.

    ROS already enforces the declared type of every parameter but the two string arrays; this repeats the
    check so that the same rules hold for values from anywhere (tests, replay options).
    """
    default = getattr(SegmentParameters(), name)
    if isinstance(default, tuple):
        return string_list(name, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"parameter {name!r} must be a bool, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"parameter {name!r} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"parameter {name!r} must be a string, got {value!r}")
    return value


def check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"parameter {name!r} must be in [0, 1], got {value}")


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a ValueError (not a silent CPU run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"parameter 'device': {name!r} is not a device (auto, cpu, cuda, cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"parameter 'device' is {name!r} but CUDA is not available here (use 'auto' or 'cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"parameter 'device' is {name!r} but there are {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"parameter 'device' must be auto, cpu or cuda[:N], got {name!r}")
    return device


def camera_info_topic(image_topic: str) -> str:
    """The sibling ``camera_info`` of an image topic: ``/cam/image_raw`` -> ``/cam/camera_info``."""
    image_topic = image_topic.rstrip("/")
    if not image_topic:
        raise ValueError("an image topic name is empty")
    parent, slash, _ = image_topic.rpartition("/")
    return f"{parent}{slash}camera_info"


def split_clip_model(spec: str) -> tuple[str, str]:
    """``"ViT-B-16/openai"`` -> ("ViT-B-16", "openai"): a checkpoint's ``clip_model`` as (model name, weights).

    The weights part may itself contain slashes (a file path); either part may be empty.
    """
    model, _, weights = spec.strip().partition("/")
    return model, weights
