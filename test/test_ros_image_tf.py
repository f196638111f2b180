"""Image messages -> RGB arrays, and the small TF buffer replay uses (tree walks, timed transforms)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import transforms3d

from clip_seg3d_ros.geometry.transforms import invert_transform
from clip_seg3d_ros.ros.image import ImageError, image_to_rgb, rgb_image_fields
from clip_seg3d_ros.ros.tf import TransformBuffer, TransformError, matrix_to_translation_quaternion


def image_message(pixels: np.ndarray, encoding: str, step_padding: int = 0):
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    rows = np.zeros((height, width * channels + step_padding), dtype=np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=rows.shape[1],
                           data=rows.reshape(-1).tobytes())


def test_colour_and_grey_encodings_become_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(image_message(rgb, "rgb8", step_padding=3)), rgb)
    np.testing.assert_array_equal(image_to_rgb(image_message(rgb[:, :, ::-1], "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(image_message(rgba[:, :, [2, 1, 0, 3]], "bgra8")), rgb)
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(image_message(grey, "mono8")), np.repeat(grey[:, :, None], 3, axis=2))
    fields = rgb_image_fields(rgb)
    assert (fields["encoding"], fields["step"]) == ("rgb8", 15)
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**fields)), rgb)


def test_unreadable_images_raise_image_error():
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="'bayer_rggb8' is not supported"):
        image_to_rgb(image_message(rgb, "bayer_rggb8"))
    short = image_message(rgb, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(ImageError, match="59 bytes, expected height \\* step = 60"):
        image_to_rgb(short)


def transform(parent: str, child: str, matrix: np.ndarray, stamp_ns: int = 0):
    translation, quaternion = matrix_to_translation_quaternion(matrix)
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)),
        child_frame_id=child,
        transform=SimpleNamespace(translation=SimpleNamespace(**dict(zip("xyz", translation, strict=True))),
                                  rotation=SimpleNamespace(**dict(zip("xyzw", quaternion, strict=True)))),
    )


def pose(yaw: float, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = transforms3d.euler.euler2mat(0.3, -0.2, yaw)
    matrix[:3, 3] = translation
    return matrix


def test_lookup_walks_the_tree_up_and_down():
    lidar_in_base, camera_link_in_base, optical_in_link = (
        pose(0.1, [1.0, 0.0, 1.8]), pose(-0.4, [1.5, 0.2, 1.4]), pose(1.2, [0.0, 0.0, 0.0]))
    buffer = TransformBuffer()
    buffer.add([transform("base_link", "lidar", lidar_in_base),
                transform("base_link", "camera_link", camera_link_in_base)], static=True)
    buffer.add([transform("camera_link", "optical", optical_in_link)], static=True)
    # p_optical = inv(optical_in_link) inv(camera_link_in_base) lidar_in_base p_lidar
    expected = invert_transform(optical_in_link) @ invert_transform(camera_link_in_base) @ lidar_in_base
    np.testing.assert_allclose(buffer.lookup("optical", "lidar"), expected, atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("lidar", "optical"), invert_transform(expected), atol=1e-12)
    with pytest.raises(TransformError, match="no transform from 'lidar' to 'elsewhere'"):
        buffer.lookup("elsewhere", "lidar")


def test_timed_transforms_hold_from_their_first_stamp_and_are_taken_at_the_nearest_stamp():
    buffer = TransformBuffer()
    buffer.add([transform("lidar", "camera", pose(0.0, [0.0, 0.0, 0.0]))], static=True)
    buffer.add([transform("lidar", "camera", pose(0.0, [1.0, 0.0, 0.0]), stamp_ns=100),
                transform("lidar", "camera", pose(0.0, [2.0, 0.0, 0.0]), stamp_ns=200)], static=False)
    # camera -> lidar is the camera's pose; lidar -> camera its inverse: check the translation of the pose.
    assert buffer.lookup("lidar", "camera", stamp_ns=50)[0, 3] == pytest.approx(0.0)  # static until it moved
    assert buffer.lookup("lidar", "camera", stamp_ns=140)[0, 3] == pytest.approx(1.0)
    assert buffer.lookup("lidar", "camera", stamp_ns=160)[0, 3] == pytest.approx(2.0)
    assert buffer.lookup("lidar", "camera", stamp_ns=10**9)[0, 3] == pytest.approx(2.0)
