"""Dataset loaders; every one returns :class:`Sample` objects."""

from clip_seg3d_ros.datasets.sample import IGNORE_INDEX, CameraFrame, Sample

__all__ = ["IGNORE_INDEX", "CameraFrame", "Sample"]
