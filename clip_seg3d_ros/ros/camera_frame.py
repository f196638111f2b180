"""A camera's ``sensor_msgs/Image`` + ``CameraInfo`` + the LiDAR-to-camera transform -> a :class:`CameraFrame`.

What the fusion needs of one camera at one sweep, built from messages without ROS (duck-typed on their
fields, so rclpy's and rosbags' messages both work). The transform comes from TF in the node
(``lookup_transform(camera frame, cloud frame)``, turned into a matrix by
:func:`clip_seg3d_ros.ros.tf.transform_to_matrix`) and from :class:`clip_seg3d_ros.ros.tf.TransformBuffer`
in replay. Calibrations that would project points to the wrong pixels are refused, not used: an
uncalibrated CameraInfo (K all zero), binning, a region of interest, or an image of another size than the
calibration's.
"""

from __future__ import annotations

import numpy as np

from clip_seg3d_ros.geometry.calibration import camera_from_camera_info
from clip_seg3d_ros.ros.image import image_to_rgb
from clip_seg3d_ros.ros.tf import stamp_to_ns
from clip_seg3d_ros.sample import CameraFrame


def camera_frame(rgb: np.ndarray, camera_info, lidar_to_camera: np.ndarray, timestamp: float = 0.0,
                 name: str | None = None) -> CameraFrame:
    """A CameraFrame of a decoded (H, W, 3) uint8 image; ValueError when the calibration does not fit it."""
    k = np.asarray(camera_info.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or k[0] == 0 or k[4] == 0:
        raise ValueError("CameraInfo has no intrinsics (K is zero): the camera is not calibrated")
    binning = (int(getattr(camera_info, "binning_x", 0)), int(getattr(camera_info, "binning_y", 0)))
    if max(binning) > 1:
        raise ValueError(f"CameraInfo binning {binning} is not supported (K is for the full-resolution image)")
    roi = getattr(camera_info, "roi", None)
    if roi is not None and int(roi.width) and int(roi.height) and (
        int(roi.width), int(roi.height)) != (int(camera_info.width), int(camera_info.height)):
        raise ValueError(f"CameraInfo region of interest {int(roi.width)}x{int(roi.height)} is not supported")
    camera = camera_from_camera_info(camera_info, lidar_to_camera, name)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[:2] != (camera.height, camera.width):
        raise ValueError(
            f"camera {camera.name}: the image is {rgb.shape[1]}x{rgb.shape[0]}, its CameraInfo says "
            f"{camera.width}x{camera.height}"
        )
    return CameraFrame(camera=camera, image=rgb, timestamp=timestamp)


def camera_frame_from_messages(image_msg, camera_info, lidar_to_camera: np.ndarray) -> CameraFrame:
    """:func:`camera_frame` of an Image message (rgb8/bgr8/mono8...), named after its frame, stamped with its time."""
    frame_id = str(image_msg.header.frame_id) or str(camera_info.header.frame_id) or None
    return camera_frame(
        image_to_rgb(image_msg),
        camera_info,
        lidar_to_camera,
        timestamp=stamp_to_ns(image_msg.header.stamp) * 1e-9,
        name=frame_id,
    )
