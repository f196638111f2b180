"""clip_seg3d_ros: zero-shot LiDAR semantic segmentation distilled from CLIP.

Importable without ROS; only :mod:`clip_seg3d_ros.nodes.segment_node` needs rclpy.
"""

from clip_seg3d_ros.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.vocabulary import Vocabulary

__version__ = "0.1.0"
__all__ = ["Checkpoint", "CheckpointError", "Segmenter", "Vocabulary", "load_checkpoint", "save_checkpoint"]
