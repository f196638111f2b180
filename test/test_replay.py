"""to_bag -> replay end to end on synthetic scenes, and replay of broken bags.

The scenes come from the synthetic world with a 32-beam, 512-column LiDAR (about 15k points a sweep) and a
small camera, so that training a checkpoint and replaying stay quick on a CPU; everything else is the real
path: rosbag2 files on disk, CDR messages, the node's SegmentRuntime, the shared metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from clip_seg3d_ros import Checkpoint, Segmenter, Vocabulary, save_checkpoint
from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_UNSEEN
from clip_seg3d_ros.evaluation.metrics import evaluate_labels
from clip_seg3d_ros.geometry.transforms import invert_transform
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet, TextClassifier
from clip_seg3d_ros.ros.bag_reader import CLASS_NAMES_KEY, BagCameras, BagError, BagLookup
from clip_seg3d_ros.ros.bag_writer import DEFAULT_BASE_TIME_S, write_bag
from clip_seg3d_ros.ros.image import image_to_rgb
from clip_seg3d_ros.ros.pointcloud2 import (
    PointCloud2Types,
    create_cloud,
    read_labels,
    read_points,
    read_xyz_intensity,
)
from clip_seg3d_ros.ros.tf import TransformBuffer
from clip_seg3d_ros.runtime.runtime import SegmentRuntime
from clip_seg3d_ros.runtime.settings import RuntimeSettings
from clip_seg3d_ros.segmenter import point_features
from clip_seg3d_ros.sparse import SparseTensor
from clip_seg3d_ros.synthetic.camera import CameraConfig
from clip_seg3d_ros.synthetic.lidar import LidarConfig
from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig
from clip_seg3d_ros.tools import to_bag
from clip_seg3d_ros.tools.replay import main, replay_bag
from clip_seg3d_ros.voxelize import voxelize

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
CLOUD = "sensor_msgs/msg/PointCloud2"
BASE_NS = DEFAULT_BASE_TIME_S * 1_000_000_000


@pytest.fixture(scope="module")
def samples():
    world = SyntheticWorld(WorldConfig(
        seed=3, lidar=LidarConfig(beams=32, azimuth_steps=512), cameras=(CameraConfig(width=160, height=96),)
    ))
    return [world.scene(index) for index in range(3)]


@pytest.fixture(scope="module")
def bag(samples, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "synthetic"
    write_bag(samples, path, progress=False)
    return path


@pytest.fixture(scope="module")
def checkpoint(samples, tmp_path_factory) -> Path:
    """A small network trained a few dozen steps on the scenes' labels through the text classifier."""
    torch.manual_seed(0)
    config = ModelConfig.from_preset("small", embed_dim=16, voxel_size=0.2)
    net = PointSegmentationNet(config)
    names = list(samples[0].class_names)
    vocabulary = Vocabulary(names, F.normalize(torch.randn(len(names), 16), dim=1),
                            seen=[name not in SEMANTICKITTI_UNSEEN for name in names])
    classifier = TextClassifier(vocabulary, config.temperature)
    batches = []
    for sample in samples:
        xyz = torch.from_numpy(sample.points)
        batches.append((voxelize(xyz[:, :3], point_features(xyz, config), config.voxel_size),
                        torch.from_numpy(sample.labels)))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for step in range(30):
        voxels, target = batches[step % len(batches)]
        logits = classifier(net(SparseTensor(voxels.feats, voxels.coords)))[voxels.point_to_voxel]
        loss = F.cross_entropy(logits, target, ignore_index=-1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("checkpoints") / "small.pt"
    save_checkpoint(Checkpoint(model_config=config, model_state=net.state_dict(), vocabulary=vocabulary), path)
    return path


def node_runtime(checkpoint: Path, **settings) -> SegmentRuntime:
    """The runtime the node builds from these settings (on the CPU)."""
    return SegmentRuntime.load(RuntimeSettings(checkpoint=str(checkpoint), device="cpu", **settings))


def read_topic(path: Path, topic: str) -> list[tuple[int, object]]:
    """(log time, message) of every message on ``topic``."""
    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=connections)]


def stamp_ns(message) -> int:
    return message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec


def test_to_bag_writes_sweeps_ground_truth_cameras_and_tf(bag, samples):
    with AnyReader([bag]) as reader:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
        tf_static_qos = reader.topics["/tf_static"].connections[0].ext.offered_qos_profiles
    assert counts == {"/points": 3, "/points_gt": 3, "/front/image_raw": 3, "/front/camera_info": 3, "/tf_static": 1}
    assert tf_static_qos[0].durability.name == "TRANSIENT_LOCAL"

    clouds, truths = read_topic(bag, "/points"), read_topic(bag, "/points_gt")
    expected_stamps = [BASE_NS + index * 100_000_000 for index in range(3)]
    assert [stamp_ns(m) for _, m in clouds] == expected_stamps == [t for t, _ in clouds]
    for (_, cloud), (_, truth), sample in zip(clouds, truths, samples, strict=True):
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
        assert {f.datatype for f in cloud.fields} == {7} and cloud.header.frame_id == "lidar"
        np.testing.assert_array_equal(read_xyz_intensity(cloud), sample.points)
        np.testing.assert_array_equal(read_labels(truth), sample.labels)
        assert stamp_ns(truth) == stamp_ns(cloud)

    (_, image), (_, info) = read_topic(bag, "/front/image_raw")[1], read_topic(bag, "/front/camera_info")[1]
    camera = samples[1].cameras[0]
    assert image.encoding == "rgb8" and image.header.frame_id == "front_optical_frame"
    np.testing.assert_array_equal(image_to_rgb(image), camera.image)
    np.testing.assert_array_equal(info.k.reshape(3, 3), camera.camera.K)
    np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], camera.camera.K)
    assert (info.width, info.height, info.distortion_model) == (160, 96, "plumb_bob")

    buffer = TransformBuffer()
    buffer.add(read_topic(bag, "/tf_static")[0][1].transforms, static=True)
    np.testing.assert_allclose(buffer.lookup("front_optical_frame", "lidar"), camera.camera.lidar_to_camera,
                               atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("lidar", "front_optical_frame"),
                               invert_transform(camera.camera.lidar_to_camera), atol=1e-12)
    metadata = (bag / "metadata.yaml").read_text()
    assert CLASS_NAMES_KEY in metadata


def test_bag_cameras_rebuild_the_datasets_camera_frames(bag, samples):
    with AnyReader([bag]) as reader:
        cameras = BagCameras(BagLookup(reader), max_offset_ns=50_000_000)
        issues = Counter()
        for index, sample in enumerate(samples):
            frames = cameras.frames("lidar", BASE_NS + index * 100_000_000 + 20_000_000, issues)
            assert len(frames) == 1
            expected = sample.cameras[0]
            np.testing.assert_array_equal(frames[0].image, expected.image)
            np.testing.assert_array_equal(frames[0].camera.K, expected.camera.K)
            np.testing.assert_allclose(frames[0].camera.lidar_to_camera, expected.camera.lidar_to_camera, atol=1e-12)
            assert frames[0].camera.name == "front"
        assert cameras.frames("lidar", BASE_NS + 10**9, issues) == []  # 0.8 s after the last image
        assert issues == {"front: no image within the time offset": 1}


def test_cameras_that_move_between_sweeps_get_each_sweeps_transform(samples, tmp_path):
    """nuScenes (ego motion between LiDAR and camera times) and KITTI (a calibration per sequence) do this."""
    moved = []
    for index, sample in enumerate(samples):
        frame = sample.cameras[0]
        shift = np.eye(4)
        shift[:3, 3] = [0.0, 0.0, 0.4] if index == 1 else [0.0, 0.0, 0.0]  # moves, then back
        camera = dataclasses.replace(frame.camera, lidar_to_camera=shift @ frame.camera.lidar_to_camera)
        moved.append(dataclasses.replace(sample, cameras=[dataclasses.replace(frame, camera=camera)]))
    path = tmp_path / "moving"
    summary = write_bag(moved, path, progress=False)
    assert summary.messages["/tf_static"] == 1 and summary.messages["/tf"] == 2  # from the first move on
    with AnyReader([path]) as reader:
        cameras = BagCameras(BagLookup(reader), max_offset_ns=50_000_000)
        for stamp, sample in zip(summary.sweep_stamps, moved, strict=True):
            (frame,) = cameras.frames("lidar", stamp, Counter())
            np.testing.assert_allclose(frame.camera.lidar_to_camera, sample.cameras[0].camera.lidar_to_camera,
                                       atol=1e-12)


def test_replay_labels_every_sweep_like_the_segmenter(bag, samples, checkpoint, tmp_path, capsys):
    out, metrics_file = tmp_path / "labelled", tmp_path / "metrics.json"
    status = main([str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--metrics", str(metrics_file),
                   "--no-progress"])
    assert status == 0
    assert "3 sweeps labelled, 3 evaluated, 0 skipped" in capsys.readouterr().out

    segmenter = Segmenter.from_checkpoint(checkpoint)
    direct = [segmenter(sample.points) for sample in samples]
    expected, _ = evaluate_labels([labels for labels, _ in direct], [s.labels for s in samples],
                                  segmenter.class_names, segmenter.vocabulary.seen)
    assert expected["miou"] > 15.0  # the checkpoint learned something, so equal metrics mean something

    with AnyReader([out]) as reader:
        assert set(reader.topics) == {"/points_labelled"}
    labelled = read_topic(out, "/points_labelled")
    assert [t for t, _ in labelled] == [BASE_NS + index * 100_000_000 for index in range(3)]
    for (_, message), (labels, scores), sample in zip(labelled, direct, samples, strict=True):
        assert [f.name for f in message.fields] == ["x", "y", "z", "intensity", "label", "score"]
        assert stamp_ns(message) == BASE_NS + round(sample.timestamp * 1e9)
        np.testing.assert_array_equal(read_labels(message), labels)
        np.testing.assert_allclose(read_points(message)["score"], scores, rtol=1e-6)
        np.testing.assert_array_equal(read_xyz_intensity(message), sample.points)

    written = json.loads(metrics_file.read_text())
    for key in ("miou", "miou_seen", "miou_unseen", "hiou"):
        assert written[key] == pytest.approx(expected[key], abs=1e-9), key
    assert written["iou_per_class"] == pytest.approx(
        {name: value for name, value in expected["iou_per_class"].items()}, abs=1e-9)
    assert written["points"] == expected["points"] == sum(int((s.labels >= 0).sum()) for s in samples)
    assert written["sweeps"] == 3 and written["skipped"] == {}
    for stage in ("decode", "preprocess", "inference", "fusion", "postprocess", "total", "encode"):
        latency = written["latency_ms"][stage]
        assert 0.0 <= latency["p50"] <= latency["p95"] <= latency["p99"], stage
    assert written["latency_ms"]["total"]["p50"] >= written["latency_ms"]["inference"]["p50"]


def test_replay_decodes_each_message_once(bag, checkpoint, tmp_path, monkeypatch):
    # The network's input and the labelled output's fields come from one decoding of each sweep.
    from clip_seg3d_ros.ros import pointcloud2
    from clip_seg3d_ros.tools import replay

    decoded = []  # the messages themselves, kept alive so that no two share an id

    def counting_read_points(message):
        decoded.append(message)
        return pointcloud2_read_points(message)

    pointcloud2_read_points = pointcloud2.read_points
    monkeypatch.setattr(pointcloud2, "read_points", counting_read_points)
    monkeypatch.setattr(replay, "read_points", counting_read_points)
    report = replay_bag(bag, node_runtime(checkpoint), out=tmp_path / "labelled", progress=False)
    assert report.sweeps == 3 and report.evaluated == 3
    assert len(decoded) == 6  # three sweeps and their three ground-truth clouds
    assert max(Counter(map(id, decoded)).values()) == 1


def test_to_bag_command_writes_a_sqlite3_bag_that_replays(tmp_path, checkpoint):
    out = tmp_path / "kitti_like"
    assert to_bag.main(["--dataset", "synthetic", "--scenes", "1", "--seed", "5", "--out", str(out),
                        "--storage", "sqlite3", "--no-images"]) == 0
    assert (out / "kitti_like.db3").is_file()
    with AnyReader([out]) as reader:
        assert {topic: info.msgcount for topic, info in reader.topics.items()} == {"/points": 1, "/points_gt": 1}
    report = replay_bag(out, node_runtime(checkpoint), progress=False)
    assert (report.sweeps, report.evaluated, dict(report.skipped)) == (1, 1, {})
    assert report.metrics["points"] > 50_000  # the full 64-beam sweep


def test_bag_without_message_definitions_replays_like_a_humble_recording(samples, tmp_path, checkpoint):
    """ROS 2 Humble's recorder stores no message definitions or type hashes; replay reads them as Humble's."""
    path = tmp_path / "humble"
    write_bag(samples[:1], path, storage="sqlite3", progress=False)
    with sqlite3.connect(next(path.glob("*.db3"))) as database:
        database.execute("DELETE FROM message_definitions")
        database.execute("UPDATE topics SET type_description_hash = ''")
    metadata = path / "metadata.yaml"
    metadata.write_text(re.sub(r"type_description_hash: *\n? *RIHS01_\w+", "type_description_hash: ''",
                               metadata.read_text()))
    with pytest.raises(Exception, match="no type definitions"):  # what a plain AnyReader makes of it
        AnyReader([path]).open()
    report = replay_bag(path, node_runtime(checkpoint), progress=False)
    assert (report.sweeps, report.evaluated) == (1, 1)


class RecordingRuntime(SegmentRuntime):
    """The node's runtime, also keeping the camera frames each sweep was given."""

    frames: list

    def process(self, points, camera_frames=()):
        self.frames.append(list(camera_frames))
        return super().process(points, camera_frames)


def test_use_cameras_gives_the_runtime_each_sweeps_camera_frames(bag, samples, checkpoint):
    runtime = RecordingRuntime.load(RuntimeSettings(checkpoint=str(checkpoint), device="cpu"))
    runtime.frames = []
    report = replay_bag(bag, runtime, use_cameras=True, progress=False)
    assert report.sweeps == 3 and not report.camera_issues
    for frames, sample in zip(runtime.frames, samples, strict=True):
        assert [frame.camera.name for frame in frames] == ["front"]
        np.testing.assert_array_equal(frames[0].image, sample.cameras[0].image)
        np.testing.assert_allclose(frames[0].camera.lidar_to_camera, sample.cameras[0].camera.lidar_to_camera,
                                   atol=1e-12)


def _cloud(points_xyzi: np.ndarray, stamp: int):
    time_type, header_type = TYPESTORE.types["builtin_interfaces/msg/Time"], TYPESTORE.types["std_msgs/msg/Header"]
    header = header_type(stamp=time_type(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="lidar")
    points = np.zeros(len(points_xyzi), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for column, name in enumerate(points.dtype.names):
        points[name] = points_xyzi[:, column]
    return create_cloud(points, header, PointCloud2Types.from_rosbags(TYPESTORE))


def _write_raw_bag(path: Path, messages: list[tuple[int, object | bytes]]) -> None:
    """/points messages as given: a message object is serialised, bytes are written as they are."""
    with Writer(path, version=8) as writer:
        connection = writer.add_connection("/points", CLOUD, typestore=TYPESTORE)
        for log_time, message in messages:
            raw = message if isinstance(message, bytes) else TYPESTORE.serialize_cdr(message, CLOUD)
            writer.write(connection, log_time, raw)


def test_malformed_clouds_are_skipped_and_counted_by_reason(samples, checkpoint, tmp_path):
    good = [_cloud(sample.points, BASE_NS + i * 10**8) for i, sample in enumerate(samples[:2])]
    short = _cloud(samples[2].points, BASE_NS + 3 * 10**8)
    short.data = short.data[:-5]
    unknown = _cloud(samples[2].points, BASE_NS + 4 * 10**8)
    unknown.fields[3].datatype = 11
    narrow = _cloud(samples[2].points, BASE_NS + 5 * 10**8)
    narrow.row_step = narrow.row_step - 16
    garbage = bytes(TYPESTORE.serialize_cdr(good[0], CLOUD))[:60]  # CDR cut short
    messages = [good[0], short, unknown, garbage, narrow, good[1]]
    path = tmp_path / "malformed"
    _write_raw_bag(path, [(BASE_NS + i * 10**8, m) for i, m in enumerate(messages)])

    report = replay_bag(path, node_runtime(checkpoint), out=tmp_path / "labelled", progress=False)
    assert report.sweeps == 2
    assert dict(report.skipped) == {
        "malformed cloud: data size": 1,
        "malformed cloud: row_step too small": 1,
        "malformed cloud: unknown datatype": 1,
        "undecodable message": 1,
    }
    assert report.unevaluated == {"no ground-truth topic": 2}
    assert [stamp_ns(m) for _, m in read_topic(tmp_path / "labelled", "/points_labelled")] == [
        BASE_NS, BASE_NS + 10**8]


def _assert_fails_in_one_line(arguments: list[str], message: str, capsys) -> None:
    assert main([*arguments, "--no-progress"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error, error
    assert "Traceback" not in error and len(error.splitlines()) == 1, error


def test_missing_bag_is_one_clear_error(tmp_path, checkpoint, capsys):
    _assert_fails_in_one_line([str(tmp_path / "nothing"), "--checkpoint", str(checkpoint)], "no such bag", capsys)


def test_truncated_bag_is_one_clear_error(bag, tmp_path, checkpoint, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    storage = next(broken.glob("*.mcap"))
    os.truncate(storage, storage.stat().st_size // 3)
    _assert_fails_in_one_line([str(broken), "--checkpoint", str(checkpoint)], "truncated or corrupt", capsys)


def test_truncated_sqlite3_bag_is_one_clear_error(samples, tmp_path, checkpoint, capsys):
    path = tmp_path / "sqlite"
    write_bag(samples[:2], path, storage="sqlite3", progress=False)
    database = next(path.glob("*.db3"))
    os.truncate(database, database.stat().st_size // 3)
    _assert_fails_in_one_line([str(path), "--checkpoint", str(checkpoint)], "truncated or corrupt", capsys)


def test_corrupt_metadata_is_one_clear_error(bag, tmp_path, checkpoint, capsys):
    broken = tmp_path / "broken_metadata"
    shutil.copytree(bag, broken)
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping\n")
    _assert_fails_in_one_line([str(broken), "--checkpoint", str(checkpoint)], "cannot open the bag", capsys)


def test_missing_points_topic_is_one_clear_error(bag, checkpoint, capsys):
    _assert_fails_in_one_line([str(bag), "--checkpoint", str(checkpoint), "--points-topic", "/velodyne_points"],
                              "no topic /velodyne_points", capsys)


def test_clouds_without_x_are_one_clear_error(samples, tmp_path, checkpoint, capsys):
    clouds = []
    for i, sample in enumerate(samples[:2]):
        cloud = _cloud(sample.points, BASE_NS + i * 10**8)
        cloud.fields = cloud.fields[1:]
        clouds.append((BASE_NS + i * 10**8, cloud))
    _write_raw_bag(tmp_path / "no_x", clouds)
    _assert_fails_in_one_line([str(tmp_path / "no_x"), "--checkpoint", str(checkpoint)],
                              "no cloud on /points could be labelled (malformed cloud: no x/y/z field: 2)", capsys)


def test_replay_refuses_an_existing_output_bag(bag, checkpoint, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        replay_bag(bag, node_runtime(checkpoint), out=tmp_path / "exists",
                   progress=False)


def test_use_cameras_without_clip_weights_is_one_clear_error(bag, checkpoint, tmp_path, capsys):
    missing = tmp_path / "ViT-B-16.safetensors"
    _assert_fails_in_one_line([str(bag), "--checkpoint", str(checkpoint), "--use-cameras", "--clip-model",
                               "ViT-B-16", "--clip-weights", str(missing)], "cannot load the CLIP model", capsys)


def test_use_cameras_with_a_clip_model_name_but_no_weights_is_one_clear_error(bag, checkpoint, capsys):
    """Never a randomly initialised CLIP: the node refuses this, and replay builds the node's runtime."""
    _assert_fails_in_one_line([str(bag), "--checkpoint", str(checkpoint), "--use-cameras", "--clip-model",
                               "ViT-B-16"], "no CLIP model to load", capsys)


def test_replay_takes_the_nodes_settings(bag, checkpoint, tmp_path):
    """The node's parameters as options: a vocabulary subset labels only those classes; bad values are refused."""
    metrics = tmp_path / "metrics.json"
    assert main([str(bag), "--checkpoint", str(checkpoint), "--vocabulary", "road", "car", "--device", "cpu",
                 "--sparse-backend", "native", "--metrics", str(metrics), "--no-progress"]) == 0
    written = json.loads(metrics.read_text())
    predicted = {name for name, iou in written["iou_per_class"].items() if iou is not None and iou > 0}
    assert predicted <= {"road", "car"} and "road" in predicted
    runtime = node_runtime(checkpoint, vocabulary=("road", "car"))
    assert runtime.class_names == ["road", "car"]
    with pytest.raises(ValueError, match="score_threshold"):
        node_runtime(checkpoint, score_threshold=1.5)


def test_empty_clouds_are_their_own_skip_reason(samples, checkpoint, tmp_path):
    """A recorder writes width-0 clouds (a Humble bag had one): skipped as "empty cloud", never "labelled"."""
    empty = _cloud(np.zeros((0, 4), dtype=np.float32), BASE_NS)
    assert (empty.height, empty.width, len(empty.data)) == (1, 0, 0)
    path = tmp_path / "with_empty"
    _write_raw_bag(path, [(BASE_NS, empty), (BASE_NS + 10**8, _cloud(samples[0].points, BASE_NS + 10**8))])
    report = replay_bag(path, node_runtime(checkpoint), progress=False)
    assert (report.sweeps, dict(report.skipped)) == (1, {"empty cloud": 1})


def test_huge_layouts_are_a_named_reason_not_undecodable(samples, checkpoint, tmp_path):
    """point_step / offset / width >= 2**31 are legal uint32s that numpy cannot hold ("won't fit into a C int")."""
    huge_step = _cloud(samples[0].points, BASE_NS + 10**8)
    huge_step.point_step = 2**31
    huge_offset = _cloud(samples[0].points, BASE_NS + 2 * 10**8)
    huge_offset.fields[3].offset = 2**32 - 1
    huge_width = _cloud(samples[0].points, BASE_NS + 3 * 10**8)
    huge_width.width = 2**31
    good = _cloud(samples[0].points, BASE_NS)
    path = tmp_path / "huge"
    _write_raw_bag(path, [(BASE_NS + i * 10**8, m) for i, m in enumerate([good, huge_step, huge_offset, huge_width])])
    report = replay_bag(path, node_runtime(checkpoint), progress=False)
    assert (report.sweeps, dict(report.skipped)) == (1, {"malformed cloud: layout too large": 3})


def _nanometre_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """A valid checkpoint whose 1 nm voxels put every point beyond the voxel grid."""
    payload = torch.load(checkpoint, weights_only=True)
    payload["model_config"]["voxel_size"] = 1e-9
    torch.save(payload, folder / "nanometre.pt")
    return folder / "nanometre.pt"


def test_points_off_the_voxel_grid_are_ignored_not_the_sweeps(bag, checkpoint, tmp_path):
    out = tmp_path / "labelled"
    report = replay_bag(bag, node_runtime(_nanometre_checkpoint(checkpoint, tmp_path)), out=out, progress=False)
    assert report.sweeps == 3 and not report.skipped
    for _, message in read_topic(out, "/points_labelled"):
        assert (read_labels(message) == -1).all()


def test_a_replay_that_labels_nothing_fails_in_one_line_and_leaves_no_bag(bag, samples, checkpoint, tmp_path,
                                                                          capsys, monkeypatch):
    def nan_logits(self, prepared):
        return torch.full((len(prepared.voxels.coords), len(self.vocabulary)), float("nan"))

    out = tmp_path / "labelled"
    with monkeypatch.context() as patch:  # a broken network: every sweep's probabilities are NaN
        patch.setattr(Segmenter, "infer_logits", nan_logits)
        _assert_fails_in_one_line([str(bag), "--checkpoint", str(checkpoint), "--out", str(out)],
                                  "no cloud on /points could be labelled (non-finite output: 3)", capsys)
    assert not out.exists()

    empty_only = tmp_path / "empty_only"
    _write_raw_bag(empty_only, [(BASE_NS + i, _cloud(np.zeros((0, 4), dtype=np.float32), BASE_NS + i))
                                for i in range(2)])
    _assert_fails_in_one_line([str(empty_only), "--checkpoint", str(checkpoint), "--out", str(out)],
                              "no cloud on /points could be labelled (empty cloud: 2)", capsys)
    assert not out.exists()


def test_an_existing_output_folder_survives_a_failed_replay(bag, checkpoint, tmp_path, capsys):
    """Replay removes only the output it created itself."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_fails_in_one_line([str(bag), "--checkpoint", str(checkpoint), "--out", str(out)], "exists already",
                              capsys)
    assert (out / "keep.txt").read_text() == "mine"


def _rewrite_with_one_stamp(source: Path, path: Path, shared_ns: int) -> None:
    """``source``'s /points and /points_gt with every header stamp set to ``shared_ns``, log times kept."""
    with Writer(path, version=8) as writer:
        connections = {topic: writer.add_connection(topic, CLOUD, typestore=TYPESTORE)
                       for topic in ("/points", "/points_gt")}
        for topic, connection in connections.items():
            for log_time, message in read_topic(source, topic):
                message.header.stamp.sec, message.header.stamp.nanosec = divmod(shared_ns, 10**9)
                writer.write(connection, log_time,
                             TYPESTORE.serialize_cdr(message, CLOUD))


def test_sweeps_sharing_a_stamp_are_paired_with_ground_truth_by_log_time(bag, checkpoint, tmp_path, caplog):
    # Every sweep and its ground truth carry one header stamp; the log times (as to_bag writes them) still pair
    # each sweep with its own ground truth, so the metrics are those of the original bag.
    original = replay_bag(bag, node_runtime(checkpoint), progress=False)
    shared = tmp_path / "shared"
    _rewrite_with_one_stamp(bag, shared, BASE_NS)
    report = replay_bag(shared, node_runtime(checkpoint), progress=False)
    assert (report.sweeps, report.evaluated) == (3, 3) and not report.unevaluated
    assert report.metrics["iou_per_class"] == pytest.approx(original.metrics["iou_per_class"], abs=1e-12)
    assert "/points: 2 messages share their header stamp with another" in caplog.text


def test_a_shared_stamp_without_a_matching_log_time_is_not_evaluated(bag, checkpoint, tmp_path):
    # The ground truth of the second sweep logged 1 ms late: that sweep cannot be told from the others' ground
    # truth and is counted as unevaluated, not scored against another sweep's labels.
    sweep_log_times = [log_time for log_time, _ in read_topic(bag, "/points")]
    shared = tmp_path / "shared"
    _rewrite_with_one_stamp(bag, shared, BASE_NS)
    with Writer(tmp_path / "late", version=8) as writer:
        connections = {topic: writer.add_connection(topic, CLOUD, typestore=TYPESTORE)
                       for topic in ("/points", "/points_gt")}
        for topic, connection in connections.items():
            for log_time, message in read_topic(shared, topic):
                late = topic == "/points_gt" and log_time == sweep_log_times[1]
                writer.write(connection, log_time + 10**6 * late, TYPESTORE.serialize_cdr(message, CLOUD))
    report = replay_bag(tmp_path / "late", node_runtime(checkpoint), progress=False)
    assert (report.sweeps, report.evaluated) == (3, 2)
    assert report.unevaluated == {"ambiguous ground truth: the stamp is shared and no log time matches": 1}
