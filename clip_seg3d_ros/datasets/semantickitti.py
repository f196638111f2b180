"""SemanticKITTI: ``sequences/XX/{velodyne,labels,image_2,calib.txt,times.txt}``.

Labels go through ``learning_map`` (raw SemanticKITTI ids -> 0..19, 0 = unlabelled) to the 19 evaluation
classes, returned as indices 0..18 with -1 for unlabelled points (see :mod:`clip_seg3d_ros.sample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.geometry.calibration import kitti_camera
from clip_seg3d_ros.sample import IGNORE_INDEX, CameraFrame, Sample

SEMANTICKITTI_CLASSES = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
]
# The zero-shot split of 3DGenZ, followed by the paper.
SEMANTICKITTI_UNSEEN = ["motorcycle", "truck", "bicyclist", "traffic-sign"]

# SemanticKITTI's own colour of each class (semantic-kitti.yaml color_map, BGR there, RGB here), one row per
# SEMANTICKITTI_CLASSES entry; read-only, so that no caller can change every later plot by accident.
_SEMANTICKITTI_RGB = {
    "car": (100, 150, 245), "bicycle": (100, 230, 245), "motorcycle": (30, 60, 150), "truck": (80, 30, 180),
    "other-vehicle": (0, 0, 255), "person": (255, 30, 30), "bicyclist": (255, 40, 200),
    "motorcyclist": (150, 30, 90), "road": (255, 0, 255), "parking": (255, 150, 255), "sidewalk": (75, 0, 75),
    "other-ground": (175, 0, 75), "building": (255, 200, 0), "fence": (255, 120, 50), "vegetation": (0, 175, 0),
    "trunk": (135, 60, 0), "terrain": (150, 240, 80), "pole": (255, 240, 150), "traffic-sign": (255, 0, 0),
}
SEMANTICKITTI_PALETTE = np.array([_SEMANTICKITTI_RGB[name] for name in SEMANTICKITTI_CLASSES], dtype=np.uint8)
SEMANTICKITTI_PALETTE.setflags(write=False)

# semantic-kitti-api config/semantic-kitti.yaml, learning_map: raw id -> 0 (unlabelled) .. 19.
LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6,
    255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}


def raw_to_class_index(raw_labels: np.ndarray) -> np.ndarray:
    """uint32 .label entries (instance << 16 | semantic id) -> class indices 0..18, -1 unlabelled."""
    lookup = np.zeros(max(LEARNING_MAP) + 1, dtype=np.int64)
    for raw, learned in LEARNING_MAP.items():
        lookup[raw] = learned
    semantic = raw_labels.astype(np.uint32) & 0xFFFF
    known = semantic < len(lookup)
    learned = np.where(known, lookup[np.minimum(semantic, len(lookup) - 1)], 0)
    return np.where(learned > 0, learned - 1, IGNORE_INDEX)


class SemanticKITTI:
    """Scans of the given sequences, in order; ``with_images`` loads image_2 with its P2 calibration."""

    def __init__(self, root: str | Path, sequences: Sequence[int | str], with_images: bool = True) -> None:
        self.root = Path(root)
        self.with_images = with_images
        self.scans: list[Path] = []
        for sequence in sequences:
            folder = self.root / "sequences" / f"{int(sequence):02d}"
            scans = sorted((folder / "velodyne").glob("*.bin"))
            if not scans:
                raise FileNotFoundError(f"no scans in {folder / 'velodyne'}")
            self.scans.extend(scans)
        self.class_names = list(SEMANTICKITTI_CLASSES)

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Sample:
        scan = self.scans[index]
        folder, frame = scan.parent.parent, scan.stem
        points = read_scan(scan)
        label_file = folder / "labels" / f"{frame}.label"
        labels = raw_to_class_index(np.fromfile(label_file, dtype=np.uint32)) if label_file.exists() else None
        timestamp = _frame_time(folder / "times.txt", int(frame))
        cameras = []
        image_file = folder / "image_2" / f"{frame}.png"
        if self.with_images and image_file.exists():
            image = np.asarray(Image.open(image_file).convert("RGB"))
            camera = kitti_camera(folder / "calib.txt", "P2", image_size=(image.shape[1], image.shape[0]))
            cameras.append(CameraFrame(camera=camera, image=image, timestamp=timestamp))
        return Sample(name=f"{folder.name}/{frame}", points=points, class_names=self.class_names, labels=labels,
                      cameras=cameras, timestamp=timestamp)


def _frame_time(times_file: Path, frame: int) -> float:
    if not times_file.exists():
        return 0.0
    times = times_file.read_text().split()
    return float(times[frame]) if frame < len(times) else 0.0
