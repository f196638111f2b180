"""Dataset loaders on tiny trees built from the real sample frames."""

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import sample_folder
from PIL import Image
from test_geometry import KITTI_CALIB

from clip_seg3d_ros.datasets.folder import FolderDataset
from clip_seg3d_ros.datasets.nuscenes import NUSCENES_CLASSES, NuScenes
from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES, SemanticKITTI
from clip_seg3d_ros.geometry.calibration import rellis_camera


def test_semantickitti_tree(tmp_path, kitti_scan):
    source = sample_folder("semantickitti_spvnas_000000")
    sequence = tmp_path / "sequences" / "08"
    for sub in ("velodyne", "labels", "image_2"):
        (sequence / sub).mkdir(parents=True)
    shutil.copy(source / "000000.bin", sequence / "velodyne" / "000000.bin")
    shutil.copy(source / "000000.label", sequence / "labels" / "000000.label")
    shutil.copy(source / "000000.bin", sequence / "velodyne" / "000001.bin")  # a second scan, unlabelled
    (sequence / "calib.txt").write_text(KITTI_CALIB)
    (sequence / "times.txt").write_text("0.000000e+00\n1.036400e-01\n")
    Image.new("RGB", (1226, 370), (90, 90, 90)).save(sequence / "image_2" / "000000.png")

    dataset = SemanticKITTI(tmp_path, sequences=[8])
    assert len(dataset) == 2 and dataset.class_names == SEMANTICKITTI_CLASSES
    sample = dataset[0]
    points, raw_learned, names = kitti_scan  # 0 = unlabelled, 1..19 from the yaml's learning_map
    assert sample.name == "08/000000" and sample.points.shape == (123389, 4)
    np.testing.assert_array_equal(sample.labels, raw_learned - 1)
    histogram = np.bincount(sample.labels[sample.labels >= 0], minlength=19)
    assert histogram.sum() == (raw_learned > 0).sum() and histogram[SEMANTICKITTI_CLASSES.index("road")] > 0
    assert [names[i + 1] for i in range(19)] == SEMANTICKITTI_CLASSES  # our order is the yaml's
    camera = sample.cameras[0].camera
    assert (camera.width, camera.height) == (1226, 370) and camera.K[0, 0] == 718.856
    second = dataset[1]
    assert second.labels is None and second.cameras == [] and second.timestamp == pytest.approx(0.10364)


def _record(transform):
    return {"rotation": transform["rotation_wxyz"], "translation": transform["translation_xyz_m"]}


def test_nuscenes_tree(tmp_path):
    source = sample_folder("nuscenes_mmdet3d_demo")
    calib = json.loads((source / "calib.json").read_text())
    tables = tmp_path / "v1.0-mini"
    tables.mkdir()
    categories = [("noise", 0), ("flat.driveable_surface", 24), ("static.manmade", 28), ("vehicle.car", 17),
                  ("vehicle.emergency.police", 22)]
    sensors, calibrated, poses, sample_data = [], [], [], []
    channels = [("LIDAR_TOP", calib["lidar"]["file"], calib["lidar"]["timestamp_s"], calib["lidar"], calib["lidar"])]
    channels += [(c["name"], c["image_file"], c["timestamp_s"], c, c) for c in calib["cameras"]]
    for channel, filename, timestamp, sensor_calib, pose_source in channels:
        folder = tmp_path / "samples" / channel
        folder.mkdir(parents=True)
        shutil.copy(source / filename, folder / filename)
        sensors.append({"token": f"s-{channel}", "channel": channel})
        record = {"token": f"c-{channel}", "sensor_token": f"s-{channel}", **_record(sensor_calib["sensor2ego"])}
        if channel != "LIDAR_TOP":
            record["camera_intrinsic"] = sensor_calib["intrinsic_3x3"]
        calibrated.append(record)
        poses.append({"token": f"e-{channel}", **_record(pose_source["ego2global"])})
        sample_data.append({"token": f"d-{channel}", "sample_token": "sample-0", "is_key_frame": True,
                            "filename": f"samples/{channel}/{filename}", "timestamp": int(timestamp * 1e6),
                            "calibrated_sensor_token": f"c-{channel}", "ego_pose_token": f"e-{channel}"})
    points = np.fromfile(source / calib["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    raw = np.where(points[:, 2] < -1.4, 24, 28).astype(np.uint8)
    raw[:100], raw[100:150], raw[150:160] = 0, 17, 22
    (tmp_path / "lidarseg" / "v1.0-mini").mkdir(parents=True)
    raw.tofile(tmp_path / "lidarseg" / "v1.0-mini" / "d-LIDAR_TOP_lidarseg.bin")
    for name, rows in {
        "sensor": sensors, "calibrated_sensor": calibrated, "ego_pose": poses, "sample_data": sample_data,
        "sample": [{"token": "sample-0", "scene_token": "scene-0", "timestamp": 0}],
        "scene": [{"token": "scene-0", "name": "scene-0061"}],
        "category": [{"token": f"k{i}", "name": name, "index": i} for name, i in categories],
        "lidarseg": [{"token": "l0", "sample_data_token": "d-LIDAR_TOP",
                      "filename": "lidarseg/v1.0-mini/d-LIDAR_TOP_lidarseg.bin"}],
    }.items():
        (tables / f"{name}.json").write_text(json.dumps(rows))

    dataset = NuScenes(tmp_path, scenes=["scene-0061"])
    assert len(dataset) == 1 and len(NuScenes(tmp_path, scenes=["another"])) == 0
    sample = dataset[0]
    np.testing.assert_array_equal(sample.points, points[:, :4])
    histogram = {name: int((sample.labels == i).sum()) for i, name in enumerate(NUSCENES_CLASSES)}
    assert histogram["car"] == 50 and (sample.labels == -1).sum() == 110  # noise and police are ignored
    assert histogram["driveable_surface"] == int((raw == 24).sum()) and histogram["manmade"] == int((raw == 28).sum())
    assert [frame.camera.name for frame in sample.cameras] == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT",
                                                                "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]
    by_name = {c["name"]: c for c in calib["cameras"]}
    for frame in sample.cameras:  # the chain through the global frame reproduces mmdet3d's lidar2cam
        expected = np.asarray(by_name[frame.camera.name]["lidar2cam"]["matrix_4x4"])
        np.testing.assert_allclose(frame.camera.lidar_to_camera, expected, atol=1e-5)
        assert frame.image.shape == (900, 1600, 3)
    assert sample.timestamp == pytest.approx(calib["lidar"]["timestamp_s"])


def test_folder_dataset(tmp_path):
    source = sample_folder("rellis3d_000104")
    camera = rellis_camera(source)
    points = np.fromfile(source / "000104.bin", dtype=np.float32).reshape(-1, 4)
    (tmp_path / "scans").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "front").mkdir(parents=True)
    np.save(tmp_path / "scans" / "a.npy", points[:, :3])
    labels = (points[:, 2] > 0).astype(np.int64)
    np.save(tmp_path / "labels" / "a.npy", labels)
    shutil.copy(source / "frame000104-1581624663_149.jpg", tmp_path / "images" / "front" / "a.jpg")
    calib = {"classes": ["ground", "above"], "cameras": [{
        "name": "front", "K": camera.K.tolist(), "width": 1920, "height": 1200,
        "distortion": camera.distortion.tolist(), "lidar_to_camera": camera.lidar_to_camera.tolist()}]}
    (tmp_path / "calib.yaml").write_text(yaml.safe_dump(calib))

    sample = FolderDataset(tmp_path)[0]
    assert sample.class_names == ["ground", "above"]
    np.testing.assert_array_equal(sample.points[:, :3], points[:, :3])
    assert (sample.points[:, 3] == 0).all()  # .npy without intensity
    np.testing.assert_array_equal(sample.labels, labels)
    frame = sample.cameras[0]
    assert frame.image.shape == (1200, 1920, 3)
    np.testing.assert_allclose(frame.camera.lidar_to_camera, camera.lidar_to_camera)

    np.save(tmp_path / "labels" / "a.npy", labels + 5)
    with pytest.raises(ValueError, match="labels outside -1..1"):
        FolderDataset(tmp_path)[0]
