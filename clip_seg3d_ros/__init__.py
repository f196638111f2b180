"""clip_seg3d_ros: zero-shot LiDAR semantic segmentation distilled from CLIP.

The tree shows the architecture; data flows from the top of this list to the bottom:

- the core, at this level: :mod:`~clip_seg3d_ros.segmenter` (a sweep in, labels out),
  :mod:`~clip_seg3d_ros.checkpoint`, :mod:`~clip_seg3d_ros.vocabulary`, :mod:`~clip_seg3d_ros.voxelize`,
  :mod:`~clip_seg3d_ros.device`, :mod:`~clip_seg3d_ros.compute_choices`; with :mod:`~clip_seg3d_ros.sparse`,
  :mod:`~clip_seg3d_ros.models`, :mod:`~clip_seg3d_ros.geometry`, :mod:`~clip_seg3d_ros.datasets`,
  :mod:`~clip_seg3d_ros.synthetic` and :mod:`~clip_seg3d_ros.teacher` (CLIP and its simulation);
- :mod:`~clip_seg3d_ros.evaluation`: metrics, reports, plots, colours, streaming evaluation;
- :mod:`~clip_seg3d_ros.runtime`: the one sweep path of the node and replay (settings, runtime, fusion);
- :mod:`~clip_seg3d_ros.ros`: messages <-> numpy, rosbag reading and writing;
- :mod:`~clip_seg3d_ros.training`: the offline pipeline, a run top to bottom in its ``loop`` module;
- :mod:`~clip_seg3d_ros.nodes`: the two rclpy nodes, the only modules that need ROS;
- :mod:`~clip_seg3d_ros.tools`: command-line tools (replay, bench, to_bag).
"""

from clip_seg3d_ros.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.vocabulary import Vocabulary

__version__ = "0.1.0"
__all__ = ["Checkpoint", "CheckpointError", "Segmenter", "Vocabulary", "load_checkpoint", "save_checkpoint"]
