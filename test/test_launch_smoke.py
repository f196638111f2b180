"""launch_testing smoke test: segment.launch.py with a tiny checkpoint labels one published PointCloud2.

Runs where ROS 2 is sourced and the package is installed (``colcon build`` then ``colcon test``, or
``launch_test test/test_launch_smoke.py``); skipped elsewhere. Without launch_testing, pytest collects this
file as a plain module and the module-level skips below apply before anything ROS is imported.
"""

import importlib.util

import pytest

# launch_testing and launch_ros first: they are not shadowed by anything. (A plain "launch" can resolve to this
# repository's own launch/ folder, a namespace package, when the real one is not installed.)
for _package in ("launch_testing", "launch_ros"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed (no wheel on PyPI): needs a sourced ROS 2 with launch_testing; "
                    "the launch file's structure is tested in test_launch_config.py", allow_module_level=True)
rclpy = pytest.importorskip("rclpy")
launch = pytest.importorskip("launch")
launch_actions = pytest.importorskip("launch.actions")
launch_sources = pytest.importorskip("launch.launch_description_sources")
launch_testing_actions = pytest.importorskip("launch_testing.actions")
pytest.importorskip("launch_ros")
ament_index_python = pytest.importorskip("ament_index_python")
try:
    SHARE = ament_index_python.get_package_share_directory("clip_seg3d_ros")
except ament_index_python.PackageNotFoundError:
    pytest.skip("clip_seg3d_ros is not installed in a sourced workspace (colcon build)", allow_module_level=True)

import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from conftest import write_random_checkpoint  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from clip_seg3d_ros.ros.pointcloud2 import PointCloud2Types, create_cloud, read_labels  # noqa: E402

INPUT_TOPIC = "/smoke_test/points"
OUTPUT_TOPIC = "/clip_seg3d_node/output/points"


def write_tiny_checkpoint(folder: Path) -> Path:
    return write_random_checkpoint(folder / "tiny.pt", ["road", "car", "vegetation"])


@pytest.mark.launch_test
def generate_test_description():
    checkpoint = write_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="clip_seg3d_smoke_")))
    segment = launch_actions.IncludeLaunchDescription(
        launch_sources.PythonLaunchDescriptionSource(str(Path(SHARE) / "launch" / "segment.launch.py")),
        launch_arguments={"checkpoint": str(checkpoint), "input_topic": INPUT_TOPIC, "device": "cpu"}.items(),
    )
    return launch.LaunchDescription([segment, launch_testing_actions.ReadyToTest()])


class TestOneSweep(unittest.TestCase):
    def test_one_published_cloud_comes_back_labelled(self):
        rclpy.init()
        node = rclpy.create_node("clip_seg3d_smoke_test")
        try:
            received = []
            node.create_subscription(PointCloud2, OUTPUT_TOPIC, received.append, 10)
            publisher = node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
            rng = np.random.default_rng(0)
            points = np.zeros(2000, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
            for name in ("x", "y", "z"):
                points[name] = rng.uniform(-8, 8, len(points))
            header = Header(frame_id="lidar")
            header.stamp.sec = 3
            cloud = create_cloud(points, header, PointCloud2Types.from_rclpy())
            deadline = time.monotonic() + 120  # the node imports torch and loads the model first
            while not received and time.monotonic() < deadline:
                publisher.publish(cloud)  # again and again: the node may not be subscribed yet
                rclpy.spin_once(node, timeout_sec=0.5)
            self.assertTrue(received, "no labelled cloud on " + OUTPUT_TOPIC)
            labels = read_labels(received[0])
            self.assertEqual(len(labels), len(points))
            self.assertTrue(((labels >= 0) & (labels < 3)).all())
            self.assertEqual(received[0].header.stamp.sec, 3)
        finally:
            node.destroy_node()
            rclpy.shutdown()
