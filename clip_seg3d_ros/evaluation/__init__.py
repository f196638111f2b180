"""Segmentation metrics and everything that reports them, for training, rosbag replay and the ROS nodes.

- :mod:`~clip_seg3d_ros.evaluation.metrics`: confusion matrix, per-class IoU, mIoU seen / unseen, hIoU
  (``summarize``), and ``prediction_lookup``, the by-name mapping of a segmenter's classes to the ground truth's.
- :mod:`~clip_seg3d_ros.evaluation.summary`: ``metrics.json`` (``write_metrics_json``, ``json_compatible``) and
  the console / Markdown table (``format_metrics_table``).
- :mod:`~clip_seg3d_ros.evaluation.colors`: class colours and label colouring, shared by the plots and the
  segment node's RGB cloud.
- :mod:`~clip_seg3d_ros.evaluation.stream`: metrics of a running segmenter, predictions and ground truth paired
  by stamp (the evaluate node, :mod:`clip_seg3d_ros.nodes.evaluate_node`).
- :mod:`~clip_seg3d_ros.evaluation.plots`: matplotlib figures (bird's-eye views, confusion matrix, IoU bars).
- :mod:`~clip_seg3d_ros.evaluation.report`: evaluate a Segmenter on dataset samples and write the full report
  (metrics.json, metrics.md and the figures), for training.

``metrics``, ``summary``, ``colors`` and ``stream`` import neither matplotlib nor the training package nor the
synthetic world, so the ROS nodes and replay stay light; ``plots`` and ``report`` import matplotlib. This
``__init__`` imports nothing, so that importing one light module never pulls in the heavy ones.
"""
