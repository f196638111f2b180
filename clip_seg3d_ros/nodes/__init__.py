"""The rclpy nodes and their ROS-free mechanics; the only package whose modules import ROS.

- :mod:`~clip_seg3d_ros.nodes.segment_node`: the segmentation node (``ros2 run clip_seg3d_ros segment``);
- :mod:`~clip_seg3d_ros.nodes.evaluate_node`: metrics against a ground-truth topic (``... evaluate``);
- :mod:`~clip_seg3d_ros.nodes.main`: how both run as a process (start-up errors, signals, clean-up);
- :mod:`~clip_seg3d_ros.nodes.play_bag`: a minimal bag player for machines without rosbag2;
- :mod:`~clip_seg3d_ros.nodes.delivery_check`: how many large clouds cross between processes, by QoS;
- no rclpy, tested without ROS: :mod:`~clip_seg3d_ros.nodes.settings` (the node-only parameters, camera names,
  extrinsics), :mod:`~clip_seg3d_ros.nodes.camera_buffer` (sweep-driven camera pairing),
  :mod:`~clip_seg3d_ros.nodes.latest_slot` (the newest-sweep slot), :mod:`~clip_seg3d_ros.nodes.sweep_stats`
  (the counters behind /diagnostics).
"""
