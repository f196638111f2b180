"""``sensor_msgs/Image`` <-> (H, W, 3) uint8 RGB numpy arrays, without ROS (duck-typed on message fields).

Only the 8-bit colour and grey encodings are read: they are what cameras publish for CLIP, and anything else
(Bayer, 16-bit, compressed) needs a debayering or decoding node upstream, so it is refused with a clear error.
"""

from __future__ import annotations

import numpy as np

# encoding -> (channels, channel order to take for RGB)
_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
    "8UC3": (3, (0, 1, 2)),
    "8UC1": (1, (0, 0, 0)),
}


class ImageError(ValueError):
    """An Image message that cannot be read as 8-bit RGB; the message says why."""


def image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an rgb8, bgr8, rgba8, bgra8 or mono8 Image (rows may be padded: ``step``)."""
    encoding = str(msg.encoding)
    if encoding not in _ENCODINGS:
        raise ImageError(f"image encoding {encoding!r} is not supported (use one of {sorted(_ENCODINGS)})")
    channels, order = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    if step < width * channels:
        raise ImageError(f"image step {step} is smaller than width * channels = {width * channels}")
    try:
        raw = np.frombuffer(msg.data, dtype=np.uint8)  # numpy (rosbags), array.array (rclpy), bytes: no copy
    except TypeError:
        raw = np.asarray(msg.data, dtype=np.uint8)  # a list of ints
    if raw.size < height * step:
        raise ImageError(f"image data has {raw.size} bytes, expected height * step = {height * step}")
    pixels = raw[: height * step].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def rgb_image_fields(image: np.ndarray) -> dict:
    """The Image fields (but the header) of an (H, W, 3) uint8 RGB array, as an ``rgb8`` image.

    ``data`` is a flat uint8 numpy array, which rosbags' messages take as it is (rclpy's want
    ``array.array('B', data.tobytes())``).
    """
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": width * 3,
        "data": image.reshape(-1),
    }
