"""The segmentation and evaluate nodes as processes under real rclpy (the pip-installed ROS 2 Kilted wheels).

Each node is started from its console script with ``--params-file config/segment.yaml``, as a robot starts
it; a probe node in the test process publishes sweeps and reads what comes back. See ros_graph.py for how the
graph is kept on loopback and when these tests skip or fail.
"""

from ros_graph import require_ros_graph

require_ros_graph()

import json  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from conftest import REPO_ROOT, write_random_checkpoint  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from ros_graph import NodeProcess, graph_environment, random_domain_id, wait_until  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_UNSEEN  # noqa: E402
from clip_seg3d_ros.nodes.settings import NODE_NAME, node_parameter  # noqa: E402
from clip_seg3d_ros.ros.bag_writer import write_bag  # noqa: E402
from clip_seg3d_ros.ros.pointcloud2 import PointCloud2Types, create_cloud, read_labels, read_points  # noqa: E402
from clip_seg3d_ros.ros.tf import stamp_to_ns  # noqa: E402
from clip_seg3d_ros.synthetic.camera import CameraConfig  # noqa: E402
from clip_seg3d_ros.synthetic.lidar import LidarConfig  # noqa: E402
from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig  # noqa: E402
from clip_seg3d_ros.tools import replay  # noqa: E402

NODE = "/clip_seg3d_node"
INPUT, OUTPUT = f"{NODE}/input/points", f"{NODE}/output/points"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def domain_id() -> int:
    return random_domain_id()


@pytest.fixture(scope="module")
def probe(domain_id):
    """A node in the test process on the same (loopback-only) graph, spun in a background thread."""
    os.environ.update({key: value for key, value in graph_environment(domain_id).items() if key.startswith("ROS_")})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("clip_seg3d_test_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield node
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    spinner.join(timeout=5)


@pytest.fixture(scope="module")
def samples():
    world = SyntheticWorld(WorldConfig(seed=3, lidar=LidarConfig(beams=32, azimuth_steps=512),
                                       cameras=(CameraConfig(width=160, height=96),)))
    return [world.scene(index) for index in range(3)]


@pytest.fixture(scope="module")
def bag(samples, tmp_path_factory):
    path = tmp_path_factory.mktemp("ros") / "synthetic"
    write_bag(samples, path, progress=False)
    return path


@pytest.fixture(scope="module")
def checkpoint(samples, tmp_path_factory):
    names = list(samples[0].class_names)
    return write_random_checkpoint(tmp_path_factory.mktemp("ros_model") / "model.pt", names,
                                   [name not in SEMANTICKITTI_UNSEEN for name in names])


def bag_messages(path, topic: str) -> list:
    """The rclpy messages of ``topic`` in the bag: its CDR bytes are what a ROS 2 publisher sends."""
    with AnyReader([path]) as reader:
        connections = [connection for connection in reader.connections if connection.topic == topic]
        return [deserialize_message(raw, PointCloud2) for _, _, raw in reader.messages(connections=connections)]


class Outputs:
    """The segmentation node's output clouds, by stamp."""

    def __init__(self, probe) -> None:
        self.probe = probe
        self.by_stamp: dict[int, PointCloud2] = {}
        self.subscription = probe.create_subscription(PointCloud2, OUTPUT, self._keep, RELIABLE)

    def close(self) -> None:
        """Unsubscribe: the probe outlives the test, its subscriptions must not."""
        self.probe.destroy_subscription(self.subscription)

    def _keep(self, message: PointCloud2) -> None:
        self.by_stamp[stamp_to_ns(message.header.stamp)] = message


def diagnostics_values(messages: list) -> dict[str, str]:
    """The key/values of the segmentation node's last /diagnostics status."""
    for array in reversed(messages):
        for status in array.status:
            if "LiDAR segmentation" in status.name:
                return {value.key: value.value for value in status.values}
    return {}


def stop_cleanly(node: NodeProcess) -> str:
    """SIGINT (Ctrl-C): the node ends with exit code 0 and nothing in its log at ERROR or worse."""
    code, log = node.stop()
    assert code == 0, log
    assert "[ERROR]" not in log and "[FATAL]" not in log and "Traceback" not in log, log
    return log


def publish_until_answered(publisher, message, outputs: Outputs, timeout: float = 60.0) -> PointCloud2:
    """Publish a sweep (again every 3 s: its QoS is best effort) until its labelled cloud comes back."""
    stamp = stamp_to_ns(message.header.stamp)
    last = [0.0]

    def publish() -> None:
        if time.monotonic() - last[0] > 3.0:
            publisher.publish(message)
            last[0] = time.monotonic()

    assert wait_until(lambda: stamp in outputs.by_stamp, timeout, every=publish), f"no output for stamp {stamp}"
    return outputs.by_stamp[stamp]


def test_bag_sweeps_come_back_labelled_as_replay_labels_them_and_the_evaluator_agrees(
        probe, domain_id, bag, checkpoint, tmp_path):
    # The ROS-free reference: replay of the same bag with the same checkpoint, through the node's runtime.
    assert replay.main([str(bag), "--checkpoint", str(checkpoint), "--device", "cpu", "--out",
                        str(tmp_path / "replayed"), "--metrics", str(tmp_path / "replay.json"), "--no-progress"]) == 0
    expected = {stamp_to_ns(message.header.stamp): read_labels(message)
                for message in bag_messages(tmp_path / "replayed", "/points_labelled")}
    sweeps, truths = bag_messages(bag, "/points"), bag_messages(bag, "/points_gt")

    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "device": "cpu"}, tmp_path / "segment.log",
                            domain_id)
    evaluator = NodeProcess("evaluate", {"checkpoint": str(checkpoint), "max_sweeps": len(sweeps),
                                         "output": str(tmp_path / "evaluate.json"), "report_period": 1.0,
                                         **{f"qos_overrides.{topic}.subscription.reliability": "reliable"
                                            for topic in ("/points_gt", OUTPUT)}},
                            tmp_path / "evaluate.log", domain_id, params_file=None)
    outputs = Outputs(probe)
    points = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    ground_truth = probe.create_publisher(PointCloud2, "/points_gt", RELIABLE)
    try:
        assert wait_until(lambda: points.get_subscription_count() and ground_truth.get_subscription_count(), 60)
        # The evaluator must also be matched to the segment node's output before the first sweep: an output
        # published before that is lost to it (volatile durability), and the evaluator waits for it forever (seen
        # once in CI: all ground truths arrived, no prediction). The probe sees the graph, not the pair's match, so
        # a short settle follows.
        assert wait_until(lambda: probe.count_subscribers(OUTPUT) >= 2 and probe.count_publishers(OUTPUT) >= 1, 60)
        time.sleep(2.0)
        for sweep, truth in zip(sweeps, truths, strict=True):
            ground_truth.publish(truth)
            output = publish_until_answered(points, sweep, outputs)
            # The input's header, fields and points, plus label and score; labels as replay's.
            assert output.header.frame_id == sweep.header.frame_id and output.width == sweep.width
            assert [field.name for field in output.fields][:4] == [field.name for field in sweep.fields]
            assert {field.name for field in output.fields} == {"x", "y", "z", "intensity", "label", "score"}
            np.testing.assert_array_equal(read_labels(output), expected[stamp_to_ns(sweep.header.stamp)])
        assert wait_until(lambda: not evaluator.running(), 60), evaluator.log()
    finally:
        outputs.close()
        stop_cleanly(segmenter)
        evaluator.stop()
    assert evaluator.process.returncode == 0, evaluator.log()
    live, offline = json.loads((tmp_path / "evaluate.json").read_text()), json.loads(
        (tmp_path / "replay.json").read_text())
    for key in ("miou", "miou_seen", "miou_unseen", "hiou", "points"):
        assert live[key] == pytest.approx(offline[key], abs=1e-9), key
    assert live["iou_per_class"] == pytest.approx(offline["iou_per_class"], abs=1e-9)


def call_service(probe, service_type, name: str, request, timeout: float = 60.0):
    """Call a service of the node. Asked again when no answer comes within a few seconds: a server can hear a
    request before it has matched the client's response reader, and that response is lost (a known DDS race of
    ROS 2 services right after discovery). The parameter services' requests are harmless to repeat."""
    client = probe.create_client(service_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            future = client.call_async(request)
            if wait_until(future.done, 5.0):
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"no answer from {name} in {timeout} s")
    finally:
        probe.destroy_client(client)


def set_parameters(probe, values: list[Parameter], timeout: float = 60.0):
    """Call the node's set_parameters service; the result of each parameter."""
    request = SetParameters.Request(parameters=[value.to_parameter_msg() for value in values])
    return call_service(probe, SetParameters, f"{NODE}/set_parameters", request, timeout).results


def test_runtime_parameters_through_the_parameter_service(probe, domain_id, bag, checkpoint, tmp_path):
    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "device": "cpu"}, tmp_path / "segment.log",
                            domain_id)
    outputs = Outputs(probe)
    points = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    sweep = bag_messages(bag, "/points")[0]
    try:
        (result,) = set_parameters(probe, [Parameter("vocabulary", Parameter.Type.STRING_ARRAY, ["road", "car"])])
        assert result.successful, result.reason
        labels = read_labels(publish_until_answered(points, sweep, outputs))
        assert set(np.unique(labels)) <= {0, 1} and len(np.unique(labels)) == 2  # road and car only

        (result,) = set_parameters(probe, [Parameter("vocabulary", Parameter.Type.STRING_ARRAY, ["car", "unicorn"])])
        assert not result.successful
        assert "unicorn" in result.reason and "'traffic-sign'" in result.reason  # the checkpoint's classes listed

        first = read_points(publish_until_answered(points, sweep, outputs))["score"]
        threshold = float(np.quantile(first, 0.5))
        (result,) = set_parameters(probe, [Parameter("score_threshold", Parameter.Type.DOUBLE, threshold)])
        assert result.successful
        outputs.by_stamp.clear()
        labels = read_labels(publish_until_answered(points, sweep, outputs))
        np.testing.assert_array_equal(labels == -1, first < np.float32(threshold))  # below it: ignored
        assert 0.2 < (labels == -1).mean() <= 0.5

        (result,) = set_parameters(probe, [Parameter("checkpoint", Parameter.Type.STRING, "other.pt")])
        assert not result.successful and "read-only" in result.reason.lower()
    finally:
        outputs.close()
        stop_cleanly(segmenter)


def test_parameters_are_described_and_checked_by_the_schema_and_a_misspelt_one_is_named(
        probe, domain_id, checkpoint, tmp_path):
    """What `ros2 param describe` shows comes from the schema; the parameter service refuses what the schema
    refuses (NaN, out of range, also where rclpy's own range check does not apply: an integer for a double); a
    misspelt name in the params file is a warning naming the closest parameter."""
    params_file = tmp_path / "segment.yaml"
    document = yaml.safe_load((REPO_ROOT / "config" / "segment.yaml").read_text())
    document[NODE_NAME]["ros__parameters"].update(score_treshold=0.3, num_threads=1)
    params_file.write_text(yaml.safe_dump(document))
    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "device": "cpu"}, tmp_path / "segment.log",
                            domain_id, params_file=params_file)
    try:
        names = ["score_threshold", "num_threads", "diagnostics_period", "cpu_matmul", "checkpoint"]
        response = call_service(probe, DescribeParameters, f"{NODE}/describe_parameters",
                                DescribeParameters.Request(names=names))
        described = {descriptor.name: descriptor for descriptor in response.descriptors}
        assert list(described) == names
        for name, descriptor in described.items():
            entry = node_parameter(name)
            assert descriptor.description == entry.summary() and descriptor.additional_constraints == entry.rule()
            assert descriptor.read_only == (not entry.changeable)
        (score,) = described["score_threshold"].floating_point_range
        assert (score.from_value, score.to_value) == (0.0, 1.0) and not described["score_threshold"].read_only
        (threads,) = described["num_threads"].integer_range
        assert (threads.from_value, threads.to_value) == (0, 256) and described["num_threads"].read_only
        (period,) = described["diagnostics_period"].floating_point_range
        assert (period.from_value, period.to_value) == (0.01, 3600.0)
        assert "'onednn'" in described["cpu_matmul"].additional_constraints
        assert described["checkpoint"].additional_constraints == "required"

        (result,) = set_parameters(probe, [Parameter("calibration_bias", Parameter.Type.DOUBLE, float("nan"))])
        assert not result.successful and "calibration_bias" in result.reason
        (result,) = set_parameters(probe, [Parameter("score_threshold", Parameter.Type.INTEGER, 2)])
        assert not result.successful
        assert result.reason == "parameter 'score_threshold' must be in [0, 1], got 2.0"
        (result,) = set_parameters(probe, [Parameter("calibration_bias", Parameter.Type.INTEGER, 1)])
        assert result.successful, result.reason
    finally:
        log = stop_cleanly(segmenter)
    assert "unknown parameter 'score_treshold' is ignored; did you mean 'score_threshold'?" in log
    assert log.count("unknown parameter") == 1, log  # use_sim_time and the others are known


def test_an_out_of_range_parameter_at_start_up_is_one_fatal_line_naming_it_after_the_misspelt_ones(
        domain_id, checkpoint, tmp_path):
    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "num_threads": 1000, "fusion_weigth": 0.2},
                            tmp_path / "segment.log", domain_id)
    assert wait_until(lambda: not segmenter.running(), 60)
    code, log = segmenter.stop()
    assert code == 1, log
    fatal = log.index("cannot start: parameter 'num_threads' must be in [0, 256] threads, got 1000")
    assert 0 <= log.index("unknown parameter 'fusion_weigth' is ignored; did you mean 'fusion_weight'?") < fatal
    assert "Traceback" not in log, log


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_bad_clouds_floods_and_idle_time_are_counted_and_the_node_lives(probe, domain_id, checkpoint, tmp_path):
    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "device": "cpu", "diagnostics_period": 0.5},
                            tmp_path / "segment.log", domain_id)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    points = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    structured = np.zeros(20_000, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for name in ("x", "y", "z"):
        structured[name] = rng.uniform(-20, 20, len(structured))

    def cloud(second: int, data_cut: int = 0) -> PointCloud2:
        message = create_cloud(structured, header_at(second), PointCloud2Types.from_rclpy())
        if data_cut:
            message.data = message.data[:-data_cut]
        return message

    def value(key: str) -> int:
        return int(diagnostics_values(diagnostics).get(key, "0"))

    outputs = None
    try:
        assert wait_until(lambda: points.get_subscription_count(), 60)
        # Nobody subscribes to the output: no work, counted.
        assert wait_until(lambda: value("sweeps skipped: no_subscribers") > 0, 60,
                          every=lambda: points.publish(cloud(1)), interval=0.3)
        assert value("sweeps processed") == 0

        outputs = Outputs(probe)
        # A malformed cloud (one float short): skipped, counted, and the node still labels the next one.
        assert wait_until(lambda: value("sweeps skipped: bad_message") > 0, 60,
                          every=lambda: points.publish(cloud(2, data_cut=4)), interval=0.3)
        publish_until_answered(points, cloud(3), outputs)

        # A flood at 50 Hz, far faster than a CPU labels 20k points: the newest sweep waits, the others are
        # dropped and counted; memory stays flat (nothing queues).
        before = segmenter.rss_mb()
        for index in range(250):
            points.publish(cloud(100 + index))
            time.sleep(0.02)
        assert wait_until(lambda: value("sweeps dropped") > 0, 30), diagnostics_values(diagnostics)
        # Each sweep that arrived is either labelled or counted as dropped: none waits in a queue.
        assert wait_until(lambda: value("sweeps processed") + value("sweeps dropped") >= 100, 30)
        assert segmenter.rss_mb() - before < 100, (before, segmenter.rss_mb())
        assert segmenter.running()
    finally:
        if outputs is not None:
            outputs.close()
        stop_cleanly(segmenter)


def last_status(messages: list):
    for array in reversed(messages):
        for status in array.status:
            if "LiDAR segmentation" in status.name:
                return status
    return None


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_bad_points_are_ignored_and_counted_and_nan_scores_are_never_published(probe, domain_id, checkpoint,
                                                                               tmp_path):
    import torch

    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    points = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    structured = np.zeros(5_000, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    rng = np.random.default_rng(3)
    for name in ("x", "y", "z"):
        structured[name] = rng.uniform(-20, 20, len(structured))
    structured["x"][:3] = 5000.0  # kilometres away: off the voxel grid
    structured["intensity"][3:5] = 3e38  # near float32's maximum

    def cloud(second: int) -> PointCloud2:
        return create_cloud(structured, header_at(second), PointCloud2Types.from_rclpy())

    # One bad point never costs the sweep: those points are ignored (65535) and counted, the rest labelled.
    segmenter = NodeProcess("segment", {"checkpoint": str(checkpoint), "device": "cpu", "diagnostics_period": 0.5},
                            tmp_path / "segment.log", domain_id)
    outputs = Outputs(probe)
    try:
        assert wait_until(lambda: points.get_subscription_count(), 60)
        labels = read_labels(publish_until_answered(points, cloud(7), outputs))
        assert (labels[:5] == -1).all() and (labels[5:] >= 0).all()
        assert np.isfinite(read_points(outputs.by_stamp[7 * 10**9])["score"]).all()
        assert wait_until(lambda: int(diagnostics_values(diagnostics).get("points ignored: bad intensity", 0)) >= 2,
                          30)
        assert int(diagnostics_values(diagnostics)["points ignored: outside the voxel grid"]) >= 3
    finally:
        outputs.close()
        stop_cleanly(segmenter)

    # A checkpoint whose activations overflow: NaN scores are not published, /diagnostics says ERROR and why.
    payload = torch.load(checkpoint, weights_only=True)
    payload["model_state"]["backbone.stem.0.1.weight"] *= 1e38  # finite weights, infinite activations
    torch.save(payload, tmp_path / "overflowing.pt")
    diagnostics.clear()
    segmenter = NodeProcess("segment", {"checkpoint": str(tmp_path / "overflowing.pt"), "device": "cpu",
                                        "diagnostics_period": 0.5}, tmp_path / "overflowing.log", domain_id)
    outputs = Outputs(probe)
    try:
        assert wait_until(lambda: points.get_subscription_count(), 60)

        def refused() -> bool:
            status = last_status(diagnostics)
            return status is not None and status.level == DiagnosticStatus.ERROR and \
                "non_finite_output" in status.message

        assert wait_until(refused, 60, every=lambda: points.publish(cloud(8)), interval=0.5)
        assert outputs.by_stamp == {}  # nothing published: no labels rather than wrong ones
        assert int(diagnostics_values(diagnostics)["sweeps skipped: non_finite_output"]) >= 1
    finally:
        outputs.close()
        code, log = segmenter.stop()
    assert code == 0 and "not publishing a sweep: non-finite class probabilities" in log, log


def header_at(second: int):
    from std_msgs.msg import Header

    header = Header(frame_id="lidar")
    header.stamp.sec = second
    return header


@pytest.mark.slow  # CLIP ViT-B/16 on the CPU, in the node and in replay
def test_cameras_fuse_as_in_replay_and_a_dead_or_uncalibrated_camera_never_stops_the_output(
        probe, domain_id, bag, samples, tmp_path):
    from open_clip import create_model
    from safetensors.torch import save_file
    from sensor_msgs.msg import CameraInfo, Image

    from clip_seg3d_ros.ros.bag_reader import BagCameras, BagLookup, open_bag

    # CLIP found offline, as a user gives it: a local weights file (here a randomly initialised ViT-B/16).
    weights = tmp_path / "clip.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in create_model("ViT-B-16").state_dict().items()},
              str(weights))
    names = list(samples[0].class_names)
    checkpoint = write_random_checkpoint(tmp_path / "model.pt", names, [n not in SEMANTICKITTI_UNSEEN for n in names],
                                         embed_dim=512)
    clip = {"clip_model": "ViT-B-16", "clip_weights": str(weights)}
    assert replay.main([str(bag), "--checkpoint", str(checkpoint), "--device", "cpu", "--use-cameras",
                        "--clip-model", "ViT-B-16", "--clip-weights", str(weights), "--out", str(tmp_path / "fused"),
                        "--no-progress"]) == 0
    expected = {stamp_to_ns(message.header.stamp): read_labels(message)
                for message in bag_messages(tmp_path / "fused", "/points_labelled")}

    # The front camera's extrinsics as parameters, exactly the transform replay read from the bag's /tf_static.
    reader = open_bag(bag)
    try:
        cameras = BagCameras(BagLookup(reader), 0)
        (_, info), = cameras.cameras.values()
        sweep_stamp = stamp_to_ns(bag_messages(bag, "/points")[0].header.stamp)
        lidar_to_camera = cameras.transforms.lookup(info.header.frame_id, "lidar", sweep_stamp)
    finally:
        reader.close()
    segmenter = NodeProcess("segment", {
        "checkpoint": str(checkpoint), "device": "cpu", "use_cameras": True, "diagnostics_period": 0.5,
        "camera_topics": ["/front/image_raw", "/rear/image_raw"],  # the rear camera has no extrinsics
        "extrinsics.front.lidar_to_camera": [float(value) for value in lidar_to_camera.ravel()], **clip},
        tmp_path / "segment.log", domain_id)
    outputs = Outputs(probe)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    points = probe.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    images = {camera: probe.create_publisher(Image, f"/{camera}/image_raw", RELIABLE) for camera in ("front", "rear")}
    infos = {camera: probe.create_publisher(CameraInfo, f"/{camera}/camera_info", RELIABLE)
             for camera in ("front", "rear")}

    def messages(topic, message_type):
        with AnyReader([bag]) as bag_reader:
            connections = [c for c in bag_reader.connections if c.topic == topic]
            return [deserialize_message(raw, message_type) for _, _, raw in bag_reader.messages(connections)]

    front_images, front_info = messages("/front/image_raw", Image), messages("/front/camera_info", CameraInfo)[0]
    try:
        assert wait_until(lambda: points.get_subscription_count() and images["rear"].get_subscription_count(), 120)
        for camera in ("front", "rear"):
            infos[camera].publish(front_info)
        for sweep, image in zip(bag_messages(bag, "/points"), front_images, strict=True):
            for camera in ("front", "rear"):
                images[camera].publish(image)
            output = publish_until_answered(points, sweep, outputs, timeout=120)
            np.testing.assert_array_equal(read_labels(output), expected[stamp_to_ns(sweep.header.stamp)])
        # The cameras go quiet: sweeps are still labelled, from 3D alone, and the missing images are counted.
        late = bag_messages(bag, "/points")[0]
        late.header.stamp.sec += 1000
        publish_until_answered(points, late, outputs, timeout=120)
        values = {}
        assert wait_until(lambda: values.update(diagnostics_values(diagnostics)) or
                          int(values.get("cameras left out of a sweep: no_image_within_slop", 0)) >= 2, 30), values
        assert int(values["cameras left out of a sweep: missing_transform"]) >= 3  # rear, every fused sweep
        assert segmenter.running()
    finally:
        outputs.close()
        stop_cleanly(segmenter)  # WARN lines (cameras left out) are expected here; errors are not
