"""The rclpy nodes and their ROS-free mechanics; with :mod:`~clip_seg3d_ros.tools.play_bag`, the only modules that
import ROS.

- :mod:`~clip_seg3d_ros.nodes.segment_node`: the segmentation node (``ros2 run clip_seg3d_ros segment``);
- :mod:`~clip_seg3d_ros.nodes.evaluate_node`: metrics against a ground-truth topic (``... evaluate``);
- :mod:`~clip_seg3d_ros.nodes.main`: how both run as a process (start-up errors, signals, clean-up);
- no rclpy, tested without ROS: :mod:`~clip_seg3d_ros.nodes.settings` (the node-only parameters, camera names,
  extrinsics), :mod:`~clip_seg3d_ros.nodes.camera_buffer` (sweep-driven camera pairing),
  :mod:`~clip_seg3d_ros.nodes.latest_slot` (the newest-sweep slot), :mod:`~clip_seg3d_ros.nodes.sweep_stats`
  (the counters behind /diagnostics).
"""
