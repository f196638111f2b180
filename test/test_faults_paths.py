"""Fault injection, paths: camera names from a dataset's calibration can neither leave the dataset nor merge."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from clip_seg3d_ros.datasets.folder import FolderDataset
from clip_seg3d_ros.geometry.camera import CameraModel, camera_namespace, check_camera_names
from clip_seg3d_ros.ros.bag_writer import write_bag
from clip_seg3d_ros.sample import CameraFrame, DatasetError, Sample
from clip_seg3d_ros.tools import to_bag

K = [[100.0, 0.0, 16.0], [0.0, 100.0, 12.0], [0.0, 0.0, 1.0]]


def folder_dataset(root, camera_names):
    (root / "scans").mkdir(parents=True)
    np.zeros((10, 4), dtype=np.float32).tofile(root / "scans" / "000.bin")
    cameras = [{"name": name, "K": K, "width": 32, "height": 24, "lidar_to_camera": np.eye(4).tolist()}
               for name in camera_names]
    (root / "calib.yaml").write_text(yaml.safe_dump({"classes": ["road"], "cameras": cameras}))
    return root


@pytest.mark.parametrize(("names", "words"), [
    (["../../outside"], "is not a plain name"),
    (["front/left"], "is not a plain name"),
    ([".."], "is not a plain name"),
    ([""], "is not a plain name"),
    (["Front", "front!"], "'Front' and 'front!' both become 'front'"),
])
def test_a_calibrations_bad_camera_names_are_refused_naming_the_file(tmp_path, names, words):
    root = folder_dataset(tmp_path / "data", names)
    with pytest.raises(DatasetError, match="calib.yaml: invalid camera entry") as caught:
        FolderDataset(root)
    assert words in str(caught.value)


def test_a_camera_name_cannot_read_an_image_outside_the_dataset(tmp_path):
    # Before the check, images/../../secret/000.png was read as the camera's image.
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(secret / "000.png")
    root = folder_dataset(tmp_path / "data", ["../../secret"])
    (root / "images").mkdir()
    with pytest.raises(DatasetError, match="not a plain name"):
        FolderDataset(root)


def test_to_bag_refuses_cameras_that_would_share_a_topic_in_one_line(tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", ["cam 1", "cam_1"])
    assert to_bag.main(["--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "bag")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "both become 'cam_1'" in error
    assert not (tmp_path / "bag").exists()


def test_the_bag_writer_keeps_one_camera_per_ros_name_across_sweeps(tmp_path):
    def sample(name: str, camera: str) -> Sample:
        model = CameraModel(camera, K=K, width=32, height=24)
        frame = CameraFrame(camera=model, image=np.zeros((24, 32, 3), dtype=np.uint8))
        return Sample(name=name, points=np.zeros((5, 4), np.float32), class_names=["road"], cameras=[frame])

    with pytest.raises(ValueError, match="sample 1: camera names 'Left' and 'left' both become 'left'"):
        write_bag([sample("0", "Left"), sample("1", "left")], tmp_path / "bag", progress=False)
    assert camera_namespace("3D cam") == "camera_3d_cam"
    check_camera_names(["front", "rear", "cam_2"])  # plain, distinct names pass
