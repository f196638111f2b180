"""ROS message <-> numpy conversion, free of rclpy.

Everything here is duck-typed on message fields, so the same functions serve rclpy's ``sensor_msgs`` messages
in the node and the ``rosbags`` package's messages in bag replay and in tests on machines without ROS.
"""
