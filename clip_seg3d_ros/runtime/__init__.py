"""The one sweep path, free of ROS: what the segmentation node and rosbag replay both run on every sweep.

- :mod:`~clip_seg3d_ros.runtime.settings`: the settings schema (each node parameter declared once, with its
  rules) and the settings the node and replay share;
- :mod:`~clip_seg3d_ros.runtime.runtime`: :class:`SegmentRuntime`, built from those settings (checkpoint,
  CLIP loaded offline only when needed, fusion), reconfigured at runtime, one sweep in and a label per point
  out, each stage timed;
- :mod:`~clip_seg3d_ros.runtime.point_budget`, :mod:`~clip_seg3d_ros.runtime.fusion`,
  :mod:`~clip_seg3d_ros.runtime.vocabulary_update`: the point budget, camera fusion and runtime vocabularies.
"""
