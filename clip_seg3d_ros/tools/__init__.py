"""Command-line tools, thin: ``python -m clip_seg3d_ros.tools.replay`` (a bag through the node's runtime),
``.bench`` (per-stage latency), ``.to_bag`` (a dataset as a rosbag2), ``.sparse_bench`` (the sparse engine
against spconv), ``.gpu_check`` (everything to measure on a GPU), ``.ros_demo`` (``make ros-demo``)."""
