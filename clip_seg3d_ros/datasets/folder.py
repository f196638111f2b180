"""A plain folder of your own data: the format to use when you bring a robot's recordings.

    ROOT/
      calib.yaml               classes and cameras (below)
      scans/NAME.bin|.npy      float32 (N, 4) x, y, z, intensity (.bin) or (N, 3|4) .npy, LiDAR frame
      labels/NAME.npy          optional: (N,) int class indices into `classes`, -1 = unlabelled
      images/CAMERA/NAME.png   optional, one folder per camera (.png or .jpg)

    calib.yaml:
      classes: [road, car, ...]          # the names of the label indices (needed when labels exist)
      cameras:                           # optional
        - name: front
          K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
          width: 1280
          height: 720
          distortion: [k1, k2, p1, p2, k3]          # optional, OpenCV plumb_bob
          lidar_to_camera: [[...], [...], [...], [0, 0, 0, 1]]   # p_cam = T @ p_lidar
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.geometry.camera import CameraModel, check_camera_names
from clip_seg3d_ros.sample import CameraFrame, DatasetError, Sample


class FolderDataset:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        calib_file = self.root / "calib.yaml"
        try:
            config = (yaml.safe_load(calib_file.read_text()) if calib_file.exists() else None) or {}
        except yaml.YAMLError as error:
            raise DatasetError(f"{calib_file}: not valid YAML: {' '.join(str(error).split())}") from error
        if not isinstance(config, dict):
            raise DatasetError(f"{calib_file}: expected a mapping of classes and cameras, got {type(config).__name__}")
        self.class_names = [str(name) for name in config.get("classes", [])]
        try:
            self.cameras = [
                CameraModel(
                    name=str(entry["name"]),
                    K=entry["K"],
                    width=int(entry["width"]),
                    height=int(entry["height"]),
                    lidar_to_camera=entry["lidar_to_camera"],
                    distortion=entry.get("distortion", [0.0] * 5),
                )
                for entry in config.get("cameras", [])
            ]
            check_camera_names([camera.name for camera in self.cameras])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{calib_file}: invalid camera entry: {error}") from error
        self.scans = sorted(p for p in (self.root / "scans").glob("*") if p.suffix in {".bin", ".npy"})
        if not self.scans:
            raise FileNotFoundError(f"no .bin or .npy scans in {self.root / 'scans'}")

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Sample:
        scan = self.scans[index]
        points = read_scan(scan)
        labels = None
        label_file = self.root / "labels" / f"{scan.stem}.npy"
        if label_file.exists():
            labels = np.load(label_file).astype(np.int64).ravel()
            if labels.size and (labels.max() >= len(self.class_names) or labels.min() < -1):
                top = len(self.class_names) - 1
                raise DatasetError(f"{label_file}: labels outside -1..{top} (see the classes in calib.yaml)")
        frames = []
        for camera in self.cameras:
            for suffix in (".png", ".jpg"):
                image_file = self.root / "images" / camera.name / f"{scan.stem}{suffix}"
                if image_file.exists():
                    frames.append(CameraFrame(camera=camera, image=np.asarray(Image.open(image_file).convert("RGB"))))
                    break
        return Sample(name=scan.stem, points=points, class_names=self.class_names, labels=labels, cameras=frames)

