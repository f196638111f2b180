"""Calibration parsing and projection, checked on the real RELLIS-3D and nuScenes frames and by hand."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import sample_folder
from PIL import Image

from clip_seg3d_ros.geometry import CameraModel, project_points, project_to_cameras, transform_from_quaternion
from clip_seg3d_ros.geometry.calibration import (
    camera_from_camera_info,
    camera_info_fields,
    kitti_camera,
    nuscenes_camera,
    rellis_camera,
)

# KITTI odometry sequence 00 calib.txt (P0 and P2, Tr), as published with the dataset.
KITTI_CALIB = """P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.779761000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01
"""  # noqa: E501


def test_kitti_calib_against_hand_computed_values(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(KITTI_CALIB)
    camera = kitti_camera(path, "P2", image_size=(1241, 376))
    assert camera.K[0, 0] == 718.856 and camera.K[0, 2] == 607.1928 and camera.K[1, 2] == 185.2157
    # P2[:, 3] = K t, solved by hand for t = (tx, ty, tz):
    tz = 3.779761e-03
    tx = (45.38225 - 607.1928 * tz) / 718.856
    ty = (-0.1130887 - 185.2157 * tz) / 718.856
    assert abs(tx - 0.05993) < 1e-4  # the well-known ~6 cm offset of the left colour camera
    tr_translation = np.array([-1.198459927713e-02, -5.403984729748e-02, -2.921968648686e-01])
    np.testing.assert_allclose(camera.lidar_to_camera[:3, 3], tr_translation + [tx, ty, tz], atol=1e-12)
    tr_first_row = [4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03]
    np.testing.assert_allclose(camera.lidar_to_camera[0, :3], tr_first_row)
    # The projection is the KITTI devkit's P2 @ Tr @ [x, y, z, 1].
    p2 = np.array([float(v) for v in KITTI_CALIB.splitlines()[1].split(":")[1].split()]).reshape(3, 4)
    tr = np.vstack([np.array([float(v) for v in KITTI_CALIB.splitlines()[2].split(":")[1].split()]).reshape(3, 4),
                    [0, 0, 0, 1]])
    homogeneous = p2 @ tr @ [12.0, -1.5, -0.8, 1.0]
    projection = project_points(np.array([[12.0, -1.5, -0.8]]), camera)
    np.testing.assert_allclose(projection.pixels[0], homogeneous[:2] / homogeneous[2], atol=1e-9)


def test_kitti_calib_errors_name_the_line(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("P2: 1 2 3\nTr: " + " ".join(["0"] * 12))
    with pytest.raises(ValueError, match=r"calib.txt:1: P2 has 3 numbers"):
        kitti_camera(path)


def test_camera_info_round_trip():
    camera = CameraModel("front", K=[[500.0, 0, 320.5], [0, 505.0, 240.25], [0, 0, 1]], width=640, height=480,
                         lidar_to_camera=transform_from_quaternion([0.5, -0.5, 0.5, -0.5], [0.1, 0.0, -0.2]),
                         distortion=[-0.1, 0.02, 0.001, -0.002, 0.0])
    info = SimpleNamespace(**camera_info_fields(camera), header=SimpleNamespace(frame_id="front_optical"))
    assert info.p[3] == 0 and len(info.k) == 9 and info.distortion_model == "plumb_bob"
    back = camera_from_camera_info(info, camera.lidar_to_camera)
    assert back.name == "front_optical" and (back.width, back.height) == (640, 480)
    np.testing.assert_array_equal(back.K, camera.K)
    np.testing.assert_array_equal(back.distortion, camera.distortion)
    with pytest.raises(ValueError, match="'equidistant'.*not supported"):
        camera_from_camera_info(SimpleNamespace(**{**camera_info_fields(camera), "distortion_model": "equidistant"}),
                                np.eye(4))


def rellis_agreement(folder, camera) -> tuple[float, int]:
    points = np.fromfile(folder / "000104.bin", dtype=np.float32).reshape(-1, 4)
    labels = np.fromfile(folder / "000104.label", dtype=np.uint32) & 0xFFFF
    label_image = np.asarray(Image.open(folder / "frame000104-1581624663_149.png"))
    projection = project_points(points[:, :3], camera)
    rows, cols = projection.pixel_indices()
    point_labels, pixel_labels = labels[projection.point_indices], label_image[rows, cols]
    both = (point_labels != 0) & (pixel_labels != 0)
    return float((point_labels[both] == pixel_labels[both]).mean()), int(both.sum())


def test_rellis_projection_agrees_with_the_2d_labels():
    folder = sample_folder("rellis3d_000104")
    camera = rellis_camera(folder)
    agreement, compared = rellis_agreement(folder, camera)
    assert compared > 5000
    assert agreement >= 0.70, agreement

    # An extrinsic error must show: 5 degrees of pitch or 10 of yaw (rotations about the camera's x and y axes).
    for axis, degrees, ceiling in [((1, 0, 0), 5, 0.45), ((0, 1, 0), 10, 0.55)]:
        half = np.radians(degrees) / 2
        rotation = transform_from_quaternion([np.cos(half), *(np.sin(half) * np.array(axis))], [0, 0, 0])
        perturbed = CameraModel(camera.name, camera.K, camera.width, camera.height,
                                rotation @ camera.lidar_to_camera, camera.distortion)
        perturbed_agreement, _ = rellis_agreement(folder, perturbed)
        assert perturbed_agreement < ceiling, (axis, degrees, perturbed_agreement)


def test_nuscenes_visible_points_match_an_independent_projection():
    folder = sample_folder("nuscenes_mmdet3d_demo")
    calib = json.loads((folder / "calib.json").read_text())
    points = np.fromfile(folder / calib["lidar"]["file"], dtype=np.float32).reshape(-1, 5)

    def record(transform):  # calib.json stores nuScenes-style quaternion + translation records
        return {"rotation": transform["rotation_wxyz"], "translation": transform["translation_xyz_m"]}

    cameras = [
        nuscenes_camera(cam["name"], {**record(cam["sensor2ego"]), "camera_intrinsic": cam["intrinsic_3x3"]},
                        record(calib["lidar"]["sensor2ego"]), record(calib["lidar"]["ego2global"]),
                        record(cam["ego2global"]), cam["width"], cam["height"])
        for cam in calib["cameras"]
    ]
    projections = project_to_cameras(points[:, :3], cameras)
    for cam, projection in zip(calib["cameras"], projections, strict=True):
        # Independent: mmdet3d's lidar2img matrix, applied directly; same depth and border rules.
        image = np.c_[points[:, :3].astype(np.float64), np.ones(len(points))] @ np.asarray(cam["lidar2img_4x4"]).T
        depth = image[:, 2]
        u, v = image[:, 0] / depth, image[:, 1] / depth
        visible = (depth > 0.1) & (u >= -0.5) & (u < cam["width"] - 0.5) & (v >= -0.5) & (v < cam["height"] - 0.5)
        assert len(projection.point_indices) == visible.sum(), cam["name"]
        np.testing.assert_array_equal(projection.point_indices, np.flatnonzero(visible))
        np.testing.assert_allclose(projection.pixels, np.c_[u, v][visible], atol=1e-3)
    assert sum(len(p.point_indices) for p in projections) > 20000
