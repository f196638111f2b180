"""The 3D network and the text-embedding classifier."""

from clip_seg3d_ros.models.classifier import TextClassifier
from clip_seg3d_ros.models.minkunet import MINKUNET_PRESETS, MinkUNet
from clip_seg3d_ros.models.network import ModelConfig, PointSegmentationNet

__all__ = ["MINKUNET_PRESETS", "MinkUNet", "ModelConfig", "PointSegmentationNet", "TextClassifier"]
