"""User commands, thin: ``python -m clip_seg3d_ros.tools.replay`` (a bag through the node's runtime),
``.to_bag`` (a dataset as a rosbag2), ``.play_bag`` (a bag on the ROS graph, where rosbag2 is not installed),
``.ros_demo`` (``make ros-demo``). Measurements are scripts in the repository's ``benchmarks/``, not installed."""
