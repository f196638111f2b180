"""The ROS-free parts of the segmentation node: runtime set-up and changes, the newest-sweep slot,
diagnostics counters, camera frames from messages and the label map."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_random_checkpoint
from rosbags.typesys import Stores, get_typestore

from clip_seg3d_ros import CheckpointError, Segmenter
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.geometry import CameraModel
from clip_seg3d_ros.geometry.calibration import camera_info_fields
from clip_seg3d_ros.nodes.latest_slot import LatestSlot
from clip_seg3d_ros.nodes.settings import camera_info_topic
from clip_seg3d_ros.nodes.sweep_stats import ERROR, OK, WARN, SweepStatistics
from clip_seg3d_ros.ros.camera_frame import camera_frame, camera_frame_from_messages
from clip_seg3d_ros.ros.label_info import class_names_from_label_info, label_info_fields
from clip_seg3d_ros.runtime.runtime import SegmentRuntime
from clip_seg3d_ros.runtime.settings import RuntimeSettings, split_clip_model
from clip_seg3d_ros.teacher import SyntheticTeacher, SyntheticTeacherConfig

TYPES = get_typestore(Stores.ROS2_HUMBLE).types


# --- parameters ---------------------------------------------------------------------------------------------

def test_small_helpers():
    assert camera_info_topic("/cam_front/image_raw") == "/cam_front/camera_info"
    assert camera_info_topic("image") == "camera_info" and camera_info_topic("/a/b/image/") == "/a/b/camera_info"
    assert split_clip_model("ViT-B-16/openai") == ("ViT-B-16", "openai")
    assert split_clip_model("ViT-B-16//data/clip.safetensors") == ("ViT-B-16", "/data/clip.safetensors")
    assert split_clip_model("") == ("", "")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# --- runtime --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher():
    return SyntheticTeacher(SyntheticTeacherConfig(embed_dim=32))


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory, teacher):
    names = ["road", "car", "vegetation"]
    return write_random_checkpoint(tmp_path_factory.mktemp("runtime") / "model.pt", names, [True, True, False],
                                   text_embeddings=teacher.encode_text(names))


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return np.hstack([rng.uniform(-10, 10, (2000, 3)), rng.uniform(0, 1, (2000, 1))]).astype(np.float32)


def synthetic_factory(teacher):
    def factory(settings, checkpoint, device):
        return teacher
    return factory


def test_runtime_labels_as_the_checkpoints_segmenter(checkpoint_path, points):
    runtime = SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", score_threshold=0.0))
    assert runtime.class_names == ["road", "car", "vegetation"] and runtime.fusion is None
    expected, _ = Segmenter.from_checkpoint(checkpoint_path)(points)
    result = runtime.process(points)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.class_names == ("road", "car", "vegetation")
    runtime.close()
    assert runtime.segmenter is None
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path.parent / "missing.pt")))


def test_runtime_parameter_changes(checkpoint_path, points):
    runtime = SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), vocabulary=("car", "road")))
    assert runtime.class_names == ["car", "road"]
    runtime.apply("vocabulary", [])
    assert runtime.class_names == ["road", "car", "vegetation"]
    # A new class needs CLIP, which this checkpoint does not name: refused, nothing changes.
    with pytest.raises(ValueError, match=r"\[.person.\] are not in the checkpoint.*no CLIP model"):
        runtime.apply("vocabulary", ["car", "person"])
    assert runtime.class_names == ["road", "car", "vegetation"]
    scores = runtime.process(points).scores
    threshold = float(np.quantile(scores, 0.6))  # 60% of the points score below it (strictly: ties aside)
    runtime.apply("score_threshold", threshold)
    ignored = runtime.process(points).labels == -1
    np.testing.assert_array_equal(ignored, scores < np.float32(threshold))
    assert 0.5 < ignored.mean() <= 0.6
    with pytest.raises(ValueError, match="score_threshold"):
        runtime.apply("score_threshold", 1.5)
    assert runtime.score_threshold == threshold
    runtime.apply("calibration_bias", 0.2)
    assert runtime.segmenter.calibration_bias == 0.2
    with pytest.raises(ValueError, match="fusion_weight"):  # no fusion to change, still refused
        runtime.apply("fusion_weight", 2.0)
    with pytest.raises(ValueError, match="cannot change at runtime"):
        runtime.apply("max_points", 10)


def test_runtime_with_clip_embeds_new_classes_and_fuses_cameras(checkpoint_path, teacher):
    parameters = RuntimeSettings(checkpoint=str(checkpoint_path), vocabulary=("car", "person"), use_cameras=True,
                                 fusion_weight=0.3)
    runtime = SegmentRuntime.load(parameters, teacher_factory=synthetic_factory(teacher))
    assert runtime.class_names == ["car", "person"]
    assert runtime.vocabulary.seen == [True, False]
    assert runtime.fusion.weight == 0.3 and runtime.fusion.vocabulary.names == ["car", "person"]
    runtime.apply("fusion_weight", 0.8)
    runtime.apply("vocabulary", ["vegetation"])
    assert runtime.fusion.weight == 0.8 and runtime.fusion.vocabulary.names == ["vegetation"]
    wrong = SyntheticTeacher(SyntheticTeacherConfig(embed_dim=40))
    with pytest.raises(ValueError, match="dimension 40"):
        SegmentRuntime.load(parameters, teacher_factory=synthetic_factory(wrong))


# --- newest-sweep slot, statistics ------------------------------------------------------------------------------

def test_latest_slot_keeps_only_the_newest_item_and_counts_the_dropped():
    slot = LatestSlot()
    assert slot.take(timeout=0.01) is None
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take() == 3 and slot.dropped == 2 and slot.take(timeout=0.01) is None
    taken = []
    consumer = threading.Thread(target=lambda: taken.append(slot.take()))
    consumer.start()
    time.sleep(0.05)
    slot.put(4)
    consumer.join(timeout=5)
    assert taken == [4]
    consumer = threading.Thread(target=lambda: taken.append(slot.take()))
    consumer.start()
    slot.close()
    consumer.join(timeout=5)
    assert taken == [4, None] and not consumer.is_alive() and slot.put(5) is False and slot.closed


def test_statistics_report_levels_describe_the_last_interval():
    stats = SweepStatistics()
    assert stats.report().level == OK
    stats.record_skipped("no_subscribers")
    report = stats.report()
    assert report.level == OK and "idle" in report.message
    stats.record_processed({"inference": 10.0, "total": 12.0})
    stats.record_processed({"inference": 20.0, "total": 22.0})
    report = stats.report()
    assert report.level == OK and report.values["sweeps processed"] == "2"
    assert report.values["mean inference ms"] == "15.0" and report.values["sweeps skipped: no_subscribers"] == "1"
    stats.record_processed({"total": 1.0})
    stats.record_dropped(3)
    stats.record_camera_left_out("missing_transform")
    report = stats.report()
    assert report.level == WARN and "dropped 3" in report.message and "missing_transform: 1" in report.message
    stats.record_skipped("bad_message")
    report = stats.report()
    assert report.level == ERROR and "bad_message: 1" in report.message
    assert stats.report().level == OK  # nothing new since


def test_non_finite_output_is_an_error_and_unusual_ignored_points_a_warning():
    stats = SweepStatistics()
    # NaN coordinates are how organised clouds say "no return": counted, not a fault.
    stats.record_processed({"total": 5.0}, {"non-finite coordinates": 40})
    report = stats.report()
    assert report.level == OK and report.values["points ignored: non-finite coordinates"] == "40"
    stats.record_processed({"total": 5.0}, {"outside the voxel grid": 1, "bad intensity": 2})
    report = stats.report()
    assert report.level == WARN and "points ignored (bad intensity: 2, outside the voxel grid: 1)" in report.message
    # A sweep refused for NaN scores is an error even while other sweeps are labelled.
    stats.record_processed({"total": 5.0})
    stats.record_skipped("non_finite_output")
    report = stats.report()
    assert report.level == ERROR and "non_finite_output: 1" in report.message
    assert report.values["sweeps skipped: non_finite_output"] == "1" and report.values["sweeps processed"] == "3"
    stats.record_processed({"total": 5.0})
    assert stats.report().level == OK


# --- camera frames and label map from messages -------------------------------------------------------------------

def header(frame_id="camera", sec=5, nanosec=250_000_000):
    return TYPES["std_msgs/msg/Header"](stamp=TYPES["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def camera_info(camera: CameraModel, **overrides):
    fields = {key: np.asarray(value, dtype=np.float64) if key in "dkrp" else value
              for key, value in camera_info_fields(camera).items()}
    roi = TYPES["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    values = {"header": header(), "binning_x": 0, "binning_y": 0, "roi": roi, **fields, **overrides}
    return TYPES["sensor_msgs/msg/CameraInfo"](**values)


def test_camera_frame_from_image_camera_info_and_transform():
    camera = CameraModel("cam", K=[[50, 0, 16], [0, 50, 12], [0, 0, 1]], width=32, height=24,
                         distortion=[0.1, 0, 0, 0, 0])
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    image = TYPES["sensor_msgs/msg/Image"](header=header("cam_optical"), height=24, width=32, encoding="bgr8",
                                           is_bigendian=0, step=96, data=rgb[:, :, ::-1].copy().reshape(-1))
    transform = np.eye(4)
    transform[:3, 3] = [0.1, -0.2, 0.3]
    frame = camera_frame_from_messages(image, camera_info(camera), transform)
    np.testing.assert_array_equal(frame.image, rgb)
    np.testing.assert_array_equal(frame.camera.K, camera.K)
    np.testing.assert_array_equal(frame.camera.lidar_to_camera, transform)
    np.testing.assert_array_equal(frame.camera.distortion, camera.distortion)
    assert frame.camera.name == "cam_optical" and frame.timestamp == pytest.approx(5.25)
    with pytest.raises(ValueError, match="its CameraInfo says 32x24"):
        camera_frame(rgb[:20], camera_info(camera), transform)
    with pytest.raises(ValueError, match="not calibrated"):
        camera_frame(rgb, camera_info(camera, k=np.zeros(9)), transform)
    with pytest.raises(ValueError, match="binning"):
        camera_frame(rgb, camera_info(camera, binning_x=2), transform)


def test_label_info_round_trip():
    fields = label_info_fields(["road", "car"], 0.4, SimpleNamespace)
    assert fields["threshold"] == 0.4
    assert class_names_from_label_info(SimpleNamespace(class_map=fields["class_map"][::-1])) == ["road", "car"]
    gap = SimpleNamespace(class_map=[SimpleNamespace(class_id=0, class_name="a"), SimpleNamespace(class_id=2,
                                                                                                  class_name="b")])
    with pytest.raises(ValueError, match="0..1"):
        class_names_from_label_info(gap)


def test_cpu_matmul_setting_is_set_for_the_process(checkpoint_path, monkeypatch):
    from clip_seg3d_ros.sparse import conv

    monkeypatch.setattr(conv, "_cpu_matmul", "auto")  # process-wide: put back after the test
    SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", cpu_matmul="mkl"))
    assert conv._cpu_matmul == "mkl" and not conv.onednn_matmuls()
    SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", cpu_matmul="onednn"))
    assert conv._cpu_matmul == "onednn"
    with pytest.raises(ValueError, match="cpu_matmul"):
        SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", cpu_matmul="blas"))


def test_precision_setting_reaches_the_segmenter(checkpoint_path, points):
    runtime = SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", precision="bf16"))
    assert runtime.segmenter.precision == "bf16"
    reference = SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu")).process(points)
    assert (runtime.process(points).labels == reference.labels).mean() > 0.95  # bf16 rounding flips few points
    with pytest.raises(ValueError, match="precision"):
        RuntimeSettings(checkpoint="m.pt", precision="int8").validated()


def test_sparse_backend_setting_reaches_the_segmenter(checkpoint_path, points):
    settings = RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu", sparse_backend="batched")
    runtime = SegmentRuntime.load(settings)
    assert runtime.segmenter.sparse_backend == "batched"
    reference = SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint_path), device="cpu")).process(points)
    result = runtime.process(points)
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_allclose(result.scores, reference.scores, atol=1e-5)


# --- cameras: pairing and extrinsics ------------------------------------------------------------------------------

def test_each_sweep_takes_per_camera_the_nearest_image_within_the_slop():
    from clip_seg3d_ros.nodes.camera_buffer import NO_CAMERA_INFO, NO_IMAGE, CameraBuffer

    buffer = CameraBuffer(["front", "rear", "left"], depth=3, slop_ns=50)
    for stamp in (100, 200, 300, 400):  # depth 3: the image at 100 is gone
        buffer.add_image("front", stamp, f"front@{stamp}")
    buffer.add_image("rear", 260, "rear@260")
    buffer.add_image("left", 300, "left@300")
    buffer.add_info("front", "front-info")
    buffer.add_info("rear", "rear-info")
    pairing = buffer.pair(290)
    assert pairing.views == [("front", "front@300", "front-info"), ("rear", "rear@260", "rear-info")]
    assert pairing.left_out == {"left": NO_CAMERA_INFO}
    assert buffer.pair(110).left_out == {"front": NO_IMAGE, "rear": NO_IMAGE, "left": NO_IMAGE}  # 100 dropped
    assert buffer.pair(350).views[0] == ("front", "front@300", "front-info")  # a tie takes the earlier image
    with pytest.raises(ValueError):
        CameraBuffer(["front"], depth=0, slop_ns=10)


def test_camera_names_and_extrinsics_from_parameters():
    from clip_seg3d_ros.geometry.transforms import transform_from_quaternion
    from clip_seg3d_ros.nodes.settings import camera_name, lidar_to_camera_from_parameters

    assert camera_name("/cam_front/image_raw") == "cam_front" and camera_name("/a/b/image") == "b"
    assert camera_name("image") == "image"
    matrix = transform_from_quaternion([0.5, -0.5, 0.5, -0.5], [0.1, -0.2, 0.3])
    np.testing.assert_allclose(lidar_to_camera_from_parameters("front", {"lidar_to_camera": matrix.ravel()}),
                               matrix)
    from_quaternion = lidar_to_camera_from_parameters(
        "front", {"translation": [0.1, -0.2, 0.3], "rotation": [-0.5, 0.5, -0.5, 0.5]})  # x, y, z, w (ROS)
    np.testing.assert_allclose(from_quaternion, matrix, atol=1e-12)
    assert lidar_to_camera_from_parameters("front", {"lidar_to_camera": [], "translation": []}) is None
    for values, message in [
        ({"lidar_to_camera": list(range(15))}, "16 numbers"),
        ({"lidar_to_camera": [1.0] * 16}, "0 0 0 1"),
        ({"translation": [0, 0, 0]}, "rotation 4"),
        ({"lidar_to_camera": matrix.ravel(), "translation": [0, 0, 0]}, "not both"),
        ({"translation": [0, 0, float("nan")], "rotation": [0, 0, 0, 1]}, "non-finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            lidar_to_camera_from_parameters("front", values)
