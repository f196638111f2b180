"""nuScenes with lidarseg, read straight from the json tables (no devkit needed).

Layout: ``ROOT/VERSION/*.json``, ``ROOT/samples/{LIDAR_TOP,CAM_*}/...``, ``ROOT/lidarseg/VERSION/*.bin``.
Key frames only. Labels: the 32 lidarseg categories mapped to the 16 evaluation classes of the lidarseg
challenge, as indices 0..15, -1 for ignored categories and unlabelled sweeps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.geometry.calibration import nuscenes_camera
from clip_seg3d_ros.sample import IGNORE_INDEX, CameraFrame, DatasetError, Sample

NUSCENES_CLASSES = [
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
    "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation",
]
# Not confirmed for the paper: our analogue of the SemanticKITTI split (two vehicles, a two-wheeler, a small
# piece of road furniture). Configurable in the dataset config.
NUSCENES_UNSEEN = ["motorcycle", "truck", "bicycle", "traffic_cone"]

# lidarseg category name -> evaluation class (nuScenes lidarseg challenge); absent names are ignored.
CATEGORY_TO_CLASS = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.vegetation": "vegetation",
}
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]


class NuScenes:
    """Key-frame sweeps of ``scenes`` (scene names; all when None) with up to six cameras each."""

    def __init__(
        self,
        root: str | Path,
        version: str = "v1.0-mini",
        scenes: Sequence[str] | None = None,
        cameras: Sequence[str] = CAMERAS,
        with_images: bool = True,
    ) -> None:
        self.root = Path(root)
        self.cameras = list(cameras)
        self.with_images = with_images
        self.class_names = list(NUSCENES_CLASSES)
        tables = self.root / version
        if not tables.is_dir():
            raise FileNotFoundError(f"no nuScenes tables at {tables}")

        def load(name: str, required: bool = True) -> list[dict]:
            path = tables / f"{name}.json"
            if not path.exists() and not required:
                return []
            return json.loads(path.read_text())

        self.calibrated_sensor = {r["token"]: r for r in load("calibrated_sensor")}
        self.ego_pose = {r["token"]: r for r in load("ego_pose")}
        channel_of_sensor = {r["token"]: r["channel"] for r in load("sensor")}
        self.lidarseg = {r["sample_data_token"]: r["filename"] for r in load("lidarseg", required=False)}
        category_index = {r["index"]: r["name"] for r in load("category") if "index" in r}
        self.label_lookup = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for index, name in category_index.items():
            if name in CATEGORY_TO_CLASS:
                self.label_lookup[index] = NUSCENES_CLASSES.index(CATEGORY_TO_CLASS[name])

        # Key-frame sample_data of every sample, by channel.
        self.frames: dict[str, dict[str, dict]] = {}
        for record in load("sample_data"):
            if not record.get("is_key_frame", False):
                continue
            channel = channel_of_sensor[self.calibrated_sensor[record["calibrated_sensor_token"]]["sensor_token"]]
            self.frames.setdefault(record["sample_token"], {})[channel] = record
        samples = load("sample")
        if scenes is not None:
            scene_tokens = {r["token"] for r in load("scene") if r["name"] in set(scenes)}
            samples = [s for s in samples if s["scene_token"] in scene_tokens]
        self.samples = sorted((s for s in samples if "LIDAR_TOP" in self.frames.get(s["token"], {})),
                              key=lambda s: s["timestamp"])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        sample = self.samples[index]
        frames = self.frames[sample["token"]]
        lidar = frames["LIDAR_TOP"]
        points = read_scan(self.root / lidar["filename"], values_per_point=5)
        labels = None
        if lidar["token"] in self.lidarseg:
            raw = np.fromfile(self.root / self.lidarseg[lidar["token"]], dtype=np.uint8)
            if len(raw) != len(points):
                raise DatasetError(f"{self.lidarseg[lidar['token']]}: {len(raw)} labels for {len(points)} points")
            labels = self.label_lookup[raw]
        cameras = []
        for channel in self.cameras if self.with_images else []:
            if channel not in frames:
                continue
            record = frames[channel]
            image = np.asarray(Image.open(self.root / record["filename"]).convert("RGB"))
            camera = nuscenes_camera(
                channel,
                self.calibrated_sensor[record["calibrated_sensor_token"]],
                self.calibrated_sensor[lidar["calibrated_sensor_token"]],
                self.ego_pose[lidar["ego_pose_token"]],
                self.ego_pose[record["ego_pose_token"]],
                width=image.shape[1],
                height=image.shape[0],
            )
            cameras.append(CameraFrame(camera=camera, image=image, timestamp=record["timestamp"] * 1e-6))
        return Sample(name=sample["token"], points=points, class_names=self.class_names, labels=labels,
                      cameras=cameras, timestamp=lidar["timestamp"] * 1e-6)
