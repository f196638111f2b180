"""The segmentation node in-process, on a real ROS 2 graph (skipped where ROS 2 is not installed).

Needs a sourced ROS 2 (rclpy, sensor_msgs, message_filters, tf2_ros, vision_msgs, diagnostic_msgs). The node's
logic is tested without ROS in test_processing / test_node_support; this checks the glue: topics, QoS, the
worker thread, skip counting and parameter callbacks.
"""

import pytest

rclpy = pytest.importorskip("rclpy")
for _module in ("sensor_msgs.msg", "message_filters", "tf2_ros", "diagnostic_msgs.msg"):
    pytest.importorskip(_module)
if not hasattr(pytest.importorskip("vision_msgs.msg"), "LabelInfo"):
    pytest.skip("vision_msgs has no LabelInfo (older than 4.1)", allow_module_level=True)

import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from conftest import write_random_checkpoint  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402

from clip_seg3d_ros.nodes.segment_node import LATCHED_QOS, SegmentationNode  # noqa: E402
from clip_seg3d_ros.ros.pointcloud2 import PointCloud2Types, create_cloud, read_labels  # noqa: E402

INPUT, OUTPUT, LABEL_INFO = "/clip_seg3d_node/input/points", "/clip_seg3d_node/output/points", \
    "/clip_seg3d_node/output/label_info"
CLASSES = ["road", "car", "vegetation"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("node") / "tiny.pt", CLASSES, [True, True, False])


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return np.hstack([rng.uniform(-8, 8, (3000, 3)), rng.uniform(0, 1, (3000, 1))]).astype(np.float32)


@pytest.fixture()
def graph(checkpoint):
    """The node and a probe node, spun by one executor in a background thread."""
    rclpy.init(args=["--ros-args", "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu"])
    node = SegmentationNode()
    probe = rclpy.create_node("clip_seg3d_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield node, probe
    executor.shutdown()
    spinner.join(timeout=5)
    node.close()
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown()


def cloud_message(points: np.ndarray, sec: int = 7) -> PointCloud2:
    structured = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for column, name in enumerate(("x", "y", "z", "intensity")):
        structured[name] = points[:, column]
    header = Header(frame_id="lidar")
    header.stamp.sec = sec
    return create_cloud(structured, header, PointCloud2Types.from_rclpy())


def wait_until(condition, timeout: float = 60.0, every=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_sweep_comes_back_labelled_as_the_processor_labels_it(graph, points):
    node, probe = graph
    received = []
    probe.create_subscription(PointCloud2, OUTPUT, received.append, 10)
    publisher = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    message = cloud_message(points)
    assert wait_until(lambda: received, every=lambda: publisher.publish(message))
    output = received[0]
    assert output.header.stamp.sec == 7 and output.header.frame_id == "lidar" and output.width == len(points)
    assert {field.name for field in output.fields} >= {"x", "y", "z", "intensity", "label", "score"}
    expected = node.runtime.processor.process(points).labels
    np.testing.assert_array_equal(read_labels(output), expected)
    assert node.stats.processed >= 1


def test_no_work_without_subscribers_and_bad_clouds_are_skipped(graph, points):
    node, probe = graph
    publisher = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    message = cloud_message(points)
    assert wait_until(lambda: node.stats.skipped["no_subscribers"] > 0, every=lambda: publisher.publish(message))
    assert node.stats.processed == 0

    received = []
    probe.create_subscription(PointCloud2, OUTPUT, received.append, 10)
    broken = cloud_message(points)
    broken.data = broken.data[:-4]  # one float short
    assert wait_until(lambda: node.stats.skipped["bad_message"] > 0, every=lambda: publisher.publish(broken))
    assert wait_until(lambda: received, every=lambda: publisher.publish(message))  # the node still works


def test_vocabulary_changes_at_runtime_and_bad_values_are_refused(graph):
    node, probe = graph
    infos = []
    probe.create_subscription(LabelInfo, LABEL_INFO, infos.append, LATCHED_QOS)
    assert wait_until(lambda: infos)
    assert [entry.class_name for entry in infos[-1].class_map] == CLASSES
    (result,) = node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, ["car", "road"])])
    assert result.successful and node.runtime.class_names == ["car", "road"]
    assert wait_until(lambda: [entry.class_name for entry in infos[-1].class_map] == ["car", "road"])
    (result,) = node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, ["unicorn"])])
    assert not result.successful and "not in the checkpoint" in result.reason
    assert node.runtime.class_names == ["car", "road"]
    (result,) = node.set_parameters([Parameter("score_threshold", Parameter.Type.DOUBLE, 0.4)])
    assert result.successful and node.runtime.processor.score_threshold == 0.4
    (result,) = node.set_parameters([Parameter("max_points", Parameter.Type.INTEGER, 5)])
    assert not result.successful  # read once at start-up
