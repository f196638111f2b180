"""The rclpy nodes and their ROS-free mechanics; the only package whose modules import ROS.

- :mod:`~clip_seg3d_ros.nodes.segment_node`: the segmentation node (``ros2 run clip_seg3d_ros segment``);
- :mod:`~clip_seg3d_ros.nodes.evaluate_node`: metrics against a ground-truth topic (``... evaluate``);
- :mod:`~clip_seg3d_ros.nodes.settings`: the node-only parameters (topics, queues, TF, diagnostics);
- :mod:`~clip_seg3d_ros.nodes.latest_slot`, :mod:`~clip_seg3d_ros.nodes.sweep_stats`: the newest-sweep slot and
  the counters behind /diagnostics (no rclpy; tested without ROS).
"""
