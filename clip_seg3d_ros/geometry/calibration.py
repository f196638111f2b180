"""Calibration parsers for the formats users have, each producing :class:`CameraModel`s.

- KITTI odometry ``calib.txt`` (P0..P3 3x4 projections of the rectified cameras, ``Tr`` velodyne -> cam0);
- nuScenes calibrated_sensor + ego_pose chains (LiDAR at its timestamp -> global -> ego at the camera's
  timestamp -> camera);
- ROS ``sensor_msgs/CameraInfo`` (duck-typed: rclpy or rosbags messages, or anything with the same fields);
- the RELLIS-3D example files (``camera_info.txt``, ``camera_distortion.yaml``, ``transforms.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from clip_seg3d_ros.geometry.camera import CameraModel
from clip_seg3d_ros.geometry.transforms import invert_transform, transform_from_quaternion

KITTI_IMAGE_SIZE = (1241, 376)  # (width, height) of most odometry sequences; 00-02 and 13-21 use 1226x370


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Every ``KEY: 12 numbers`` line of a KITTI calib.txt, as a 3x4 matrix (``Tr`` made 4x4)."""
    matrices = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, values = line.partition(":")
        try:
            numbers = np.array([float(value) for value in values.split()])
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from error
        if numbers.size != 12:
            raise ValueError(f"{path}:{number}: {key.strip()} has {numbers.size} numbers, expected 12")
        matrices[key.strip()] = numbers.reshape(3, 4)
    if "Tr" not in matrices:
        raise ValueError(f"{path}: no 'Tr' (velodyne -> camera 0) line")
    matrices["Tr"] = np.vstack([matrices["Tr"], [0.0, 0.0, 0.0, 1.0]])
    return matrices


def kitti_camera(path: str | Path, camera: str = "P2", image_size: tuple[int, int] = KITTI_IMAGE_SIZE) -> CameraModel:
    """The rectified camera ``camera`` (P2 = left colour, image_2) of a KITTI odometry calib.txt.

    P_i = K [I | t_i] with t_i the offset of camera i from camera 0 in the rectified frame, so
    lidar_to_camera = [I | K^-1 P_i[:, 3]] @ Tr: the LiDAR point in camera 0's frame, shifted to camera i.
    """
    matrices = read_kitti_calib(path)
    if camera not in matrices:
        raise ValueError(f"{path}: no {camera!r} line; found {sorted(matrices)}")
    projection = matrices[camera]
    intrinsics = projection[:, :3]
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(intrinsics, projection[:, 3])
    width, height = image_size
    return CameraModel(name=camera, K=intrinsics, width=width, height=height, lidar_to_camera=shift @ matrices["Tr"])


def pose_matrix(record: Mapping) -> np.ndarray:
    """4x4 from a nuScenes calibrated_sensor / ego_pose record: ``rotation`` (w, x, y, z), ``translation``."""
    return transform_from_quaternion(record["rotation"], record["translation"])


def nuscenes_lidar_to_camera(
    lidar_sensor: Mapping, lidar_ego_pose: Mapping, camera_ego_pose: Mapping, camera_sensor: Mapping
) -> np.ndarray:
    """LiDAR (at its timestamp) -> camera (at its timestamp), through the global frame.

    The two ego poses differ by the vehicle's motion between the LiDAR and the camera timestamps (up to
    about 0.4 m at city speed), which is why the static chain cam<-ego<-lidar is not enough.
    """
    lidar_to_global = pose_matrix(lidar_ego_pose) @ pose_matrix(lidar_sensor)
    global_to_camera = invert_transform(pose_matrix(camera_sensor)) @ invert_transform(pose_matrix(camera_ego_pose))
    return global_to_camera @ lidar_to_global


def nuscenes_camera(
    name: str,
    camera_sensor: Mapping,
    lidar_sensor: Mapping,
    lidar_ego_pose: Mapping,
    camera_ego_pose: Mapping,
    width: int = 1600,
    height: int = 900,
) -> CameraModel:
    """A nuScenes camera; ``camera_sensor['camera_intrinsic']`` is its 3x3 K (nuScenes images are undistorted)."""
    return CameraModel(
        name=name,
        K=np.asarray(camera_sensor["camera_intrinsic"], dtype=np.float64),
        width=width,
        height=height,
        lidar_to_camera=nuscenes_lidar_to_camera(lidar_sensor, lidar_ego_pose, camera_ego_pose, camera_sensor),
    )


_PLUMB_BOB_MODELS = {"plumb_bob", "rational_polynomial", ""}


def camera_from_camera_info(info, lidar_to_camera: np.ndarray, name: str | None = None) -> CameraModel:
    """A CameraModel from a ``sensor_msgs/CameraInfo`` (fields k, d, distortion_model, width, height).

    plumb_bob (k1 k2 p1 p2 k3) is supported, and rational_polynomial when its extra coefficients k4..k6
    are zero; fisheye (equidistant) models are refused rather than projected wrongly.
    """
    model = str(info.distortion_model)
    coefficients = np.asarray(info.d, dtype=np.float64).ravel()
    if model not in _PLUMB_BOB_MODELS or np.any(coefficients[5:]):
        raise ValueError(f"distortion model {model!r} with coefficients {coefficients.tolist()} is not supported")
    frame = getattr(getattr(info, "header", None), "frame_id", "") or "camera"
    return CameraModel(
        name=name or frame,
        K=np.asarray(info.k, dtype=np.float64).reshape(3, 3),
        width=int(info.width),
        height=int(info.height),
        lidar_to_camera=lidar_to_camera,
        distortion=coefficients[:5],
    )


def camera_info_fields(camera: CameraModel) -> dict:
    """The CameraInfo fields of ``camera`` (to fill an rclpy or rosbags message): k, d, r, p, sizes, model."""
    projection = np.zeros((3, 4))
    projection[:, :3] = camera.K
    return {
        "width": camera.width,
        "height": camera.height,
        "distortion_model": "plumb_bob",
        "d": camera.distortion.tolist(),
        "k": camera.K.ravel().tolist(),
        "r": np.eye(3).ravel().tolist(),
        "p": projection.ravel().tolist(),
    }


def rellis_camera(folder: str | Path, image_size: Sequence[int] = (1920, 1200)) -> CameraModel:
    """The RELLIS-3D Basler camera from ``camera_info.txt`` (fx fy cx cy), ``camera_distortion.yaml`` and
    ``transforms.yaml`` (the camera's pose in the Ouster frame, quaternion w x y z + translation)."""
    folder = Path(folder)
    fx, fy, cx, cy = (float(value) for value in (folder / "camera_info.txt").read_text().split())
    distortion = yaml.safe_load((folder / "camera_distortion.yaml").read_text())
    pose = yaml.safe_load((folder / "transforms.yaml").read_text())["os1_cloud_node-pylon_camera_node"]
    quaternion, translation = [pose["q"][axis] for axis in "wxyz"], [pose["t"][axis] for axis in "xyz"]
    camera_in_lidar = transform_from_quaternion(quaternion, translation)
    return CameraModel(
        name="pylon_camera_node",
        K=np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]),
        width=int(image_size[0]),
        height=int(image_size[1]),
        lidar_to_camera=invert_transform(camera_in_lidar),
        distortion=[distortion[key] for key in ("k1", "k2", "p1", "p2", "k3")],
    )
