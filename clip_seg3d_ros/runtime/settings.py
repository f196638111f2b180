"""What decides how a sweep is labelled, free of ROS: the settings the node and rosbag replay share.

The segmentation node declares every field of :class:`RuntimeSettings` as a ROS parameter (with the
description below), replay takes each as a command-line option; both build a
:class:`~clip_seg3d_ros.runtime.runtime.SegmentRuntime` from them, so a bag replayed offline is labelled as the
robot labels it live. The node's own settings (topics, QoS, queues, TF) are in
:mod:`clip_seg3d_ros.nodes.settings`.

Values are converted and checked here (:func:`convert_value`), not by ROS's declared types: ROS types an empty
list as a byte array (from YAML: a bool array), and a statically typed double would refuse
``score_threshold: 1``. :func:`string_list` takes an empty list of any type as "none".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

from clip_seg3d_ros.device import resolve_device

SPARSE_BACKENDS = ("auto", "native", "batched", "torchsparse")  # clip_seg3d_ros.sparse.backend.BACKENDS
PRECISIONS = ("fp32", "bf16", "fp16")  # the Segmenter's (clip_seg3d_ros.segmenter.PRECISIONS), without importing torch

DESCRIPTIONS: dict[str, str] = {
    "checkpoint": "path of the trained checkpoint (.pt); required",
    "device": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
    "sparse_backend": "'auto' (torchsparse on CUDA when installed, else native), 'native', 'batched' (native "
    "with each convolution's matmuls in one call, for GPUs) or 'torchsparse'",
    "vocabulary": "class names to segment; empty: the checkpoint's. Names not in the checkpoint need the CLIP "
    "text encoder (clip_model / clip_weights). Changeable at runtime",
    "score_threshold": "points whose class probability is below this are labelled ignored (65535); changeable",
    "max_points": "at most this many points per sweep go into the network (0: no limit); the others take the "
    "result of their (or a neighbouring) voxel",
    "calibration_bias": "lowers the classes seen in training (cosine units) for zero-shot use; changeable",
    "use_cameras": "fuse CLIP's 2D predictions for the points the cameras see (needs cameras and CLIP)",
    "fusion_weight": "weight w of the 2D probabilities: p = (1 - w) p3d + w p2d on camera-seen points; changeable",
    "clip_model": "open_clip model of the runtime text encoder and camera teacher; empty: the checkpoint's",
    "clip_weights": "its weights: a local file or an open_clip tag in the Hugging Face cache; empty: the "
    "checkpoint's tag (never downloaded)",
    "clip_quick_gelu": "true for OpenAI-trained CLIP weights given as a file (registry tags know their own)",
    "precision": "'fp32', 'bf16' or 'fp16': the network's precision (bf16 / fp16 autocast, the classifier stays "
    "fp32; fp16 for GPUs only: very slow on CPUs)",
    "num_threads": "CPU threads for torch's operators (0: half the cores, at least 1: the robot's other "
    "processes keep the rest)",
}

RUNTIME_PARAMETERS = ("vocabulary", "score_threshold", "calibration_bias", "fusion_weight")
"""The settings that can change while sweeps are being labelled; the others are read once at start-up."""


class Settings:
    """What every settings dataclass offers: its field names, its defaults as ROS declares them, and building
    it from a {name: value} dict of parameter values (:func:`convert_value`; unknown names are an error)."""

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        """Name -> default value as declared to ROS (string arrays as lists)."""
        defaults = cls()
        return {name: list(value) if isinstance(value := getattr(defaults, name), tuple) else value
                for name in cls.names()}

    @classmethod
    def converted(cls, values: dict):
        """The defaults with ``values`` converted by :func:`convert_value`; not yet validated."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {cls.names()}")
        defaults = cls()
        return replace(defaults, **{name: convert_value(name, value, getattr(defaults, name))
                                    for name, value in values.items()})


@dataclass(frozen=True)
class RuntimeSettings(Settings):
    """One field per setting (see :data:`DESCRIPTIONS`), with the node's defaults."""

    checkpoint: str = ""
    device: str = "auto"
    sparse_backend: str = "auto"
    vocabulary: tuple[str, ...] = field(default_factory=tuple)
    score_threshold: float = 0.0
    max_points: int = 0
    calibration_bias: float = 0.0
    use_cameras: bool = False
    fusion_weight: float = 0.5
    clip_model: str = ""
    clip_weights: str = ""
    clip_quick_gelu: bool = False
    precision: str = "fp32"
    num_threads: int = 0

    @classmethod
    def from_values(cls, values: dict) -> RuntimeSettings:
        """Build and validate from a {name: value} dict (ROS parameter values); unknown names are an error."""
        return cls.converted(values).validated()

    def validated(self) -> RuntimeSettings:
        """``self`` if every value is usable; otherwise a ValueError naming the setting and the rule."""
        if not self.checkpoint:
            raise ValueError("parameter 'checkpoint' is required: the path of a trained clip_seg3d_ros checkpoint")
        resolve_device(self.device)
        if self.sparse_backend not in SPARSE_BACKENDS:
            raise ValueError(f"parameter 'sparse_backend' must be one of {list(SPARSE_BACKENDS)}, "
                             f"got {self.sparse_backend!r}")
        check_unit_interval("score_threshold", self.score_threshold)
        check_unit_interval("fusion_weight", self.fusion_weight)
        if self.max_points < 0:
            raise ValueError(f"parameter 'max_points' must be >= 0 (0: no limit), got {self.max_points}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"parameter 'precision' must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.num_threads < 0:
            raise ValueError(f"parameter 'num_threads' must be >= 0 (0: half the cores), got {self.num_threads}")
        return self

    def threads(self) -> int:
        """The torch intra-op thread count these settings ask for (``num_threads``, 0: half the cores)."""
        return self.num_threads or default_threads()


def default_threads() -> int:
    """Half the CPU cores this process may use, at least 1. torch's own default (all of them) oversubscribes a
    robot's CPU: measured on 2 cores with one other busy process, the small network took 5.8 s a sweep with 2
    threads and 3.6 s with 1, and small sweeps collapsed from 48 ms to 10.5 s."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


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


def convert_value(name: str, value, default):
    """``value`` as a setting of the same type as ``default`` holds it; ValueError on a bad type.

    ROS already enforces the declared type of every parameter but the string arrays; this repeats the check so
    that the same rules hold for values from anywhere (tests, replay options, the parameter service).
    """
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


def check_unit_interval(name: str, value: float) -> float:
    """``value`` as a float if it lies in [0, 1] (the one range check of thresholds and weights)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"parameter {name!r} must be in [0, 1], got {value}")
    return value


def split_clip_model(spec: str) -> tuple[str, str]:
    """``"ViT-B-16/openai"`` -> ("ViT-B-16", "openai"): a checkpoint's ``clip_model`` as (model name, weights).

    The weights part may itself contain slashes (a file path); either part may be empty.
    """
    model, _, weights = spec.strip().partition("/")
    return model, weights
