"""Pairing camera images with LiDAR sweeps, free of ROS: the sweep drives, every camera gives what it has.

Per camera the last ``depth`` images (by header stamp) and the latest CameraInfo are kept. A sweep takes, per
camera, the image whose stamp is nearest its own within ``slop``, or none: a camera that is dead, late or
without CameraInfo is left out of that sweep (and counted by reason), it never delays or stops labelling.
(message_filters' ApproximateTimeSynchronizer instead waits for an image of EVERY camera: one dead camera
stops all output. Autoware's LiDAR-camera fusion pairs the way this module does.) Memory is bounded: depth
images per camera, whatever the rates.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Image = TypeVar("Image")
Info = TypeVar("Info")

NO_IMAGE = "no_image_within_slop"
NO_CAMERA_INFO = "missing_camera_info"


@dataclass
class Pairing(Generic[Image, Info]):
    """What one sweep gets: (camera, image, info) for each camera that has them, and why the others are out."""

    views: list[tuple[str, Image, Info]] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # camera -> reason


class CameraBuffer(Generic[Image, Info]):
    """Thread-safe: the executor adds messages while the worker thread pairs sweeps."""

    def __init__(self, cameras: Sequence[str], depth: int, slop_ns: int) -> None:
        if depth < 1 or slop_ns < 0:
            raise ValueError(f"depth must be >= 1 and slop >= 0, got {depth} and {slop_ns} ns")
        self.cameras = list(cameras)
        self.slop_ns = int(slop_ns)
        self._images: dict[str, deque[tuple[int, Image]]] = {camera: deque(maxlen=depth) for camera in cameras}
        self._infos: dict[str, Info] = {}
        self._lock = threading.Lock()

    def add_image(self, camera: str, stamp_ns: int, image: Image) -> None:
        with self._lock:
            self._images[camera].append((int(stamp_ns), image))

    def add_info(self, camera: str, info: Info) -> None:
        with self._lock:
            self._infos[camera] = info

    def pair(self, stamp_ns: int) -> Pairing[Image, Info]:
        """Per camera, the image nearest ``stamp_ns`` within the slop (ties: the earlier), and its CameraInfo."""
        pairing: Pairing[Image, Info] = Pairing()
        with self._lock:
            for camera in self.cameras:
                candidates = [(abs(stamp - stamp_ns), stamp, image) for stamp, image in self._images[camera]
                              if abs(stamp - stamp_ns) <= self.slop_ns]
                if not candidates:
                    pairing.left_out[camera] = NO_IMAGE
                elif camera not in self._infos:
                    pairing.left_out[camera] = NO_CAMERA_INFO
                else:
                    _, _, image = min(candidates, key=lambda candidate: candidate[:2])
                    pairing.views.append((camera, image, self._infos[camera]))
        return pairing
