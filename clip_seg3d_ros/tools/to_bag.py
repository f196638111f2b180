"""Write a dataset as a rosbag2 (mcap or sqlite3) that looks like a robot's recording, for replay and the node.

    python -m clip_seg3d_ros.tools.to_bag --dataset synthetic --scenes 20 --out synthetic_bag
    python -m clip_seg3d_ros.tools.to_bag --dataset semantickitti --root KITTI --sequences 08 --out kitti08
    python -m clip_seg3d_ros.tools.to_bag --dataset nuscenes --root NUSCENES --scene-names scene-0061 --out nu
    python -m clip_seg3d_ros.tools.to_bag --dataset folder --root MY_DATA --out mine --storage sqlite3

Topics (ROS 2 Humble message definitions, CDR):

    /points                   sensor_msgs/msg/PointCloud2  x y z intensity (float32), LiDAR frame
    /points_gt                sensor_msgs/msg/PointCloud2  the same points plus `label` (UINT16, 65535 = none)
    /<camera>/image_raw       sensor_msgs/msg/Image        rgb8, the camera's optical frame
    /<camera>/camera_info     sensor_msgs/msg/CameraInfo   plumb_bob, K, P, size
    /tf_static                tf2_msgs/msg/TFMessage       LiDAR -> camera optical frames (transient local)
    /tf                       tf2_msgs/msg/TFMessage       only for a camera whose transform changes between
                                                           sweeps (nuScenes: the ego motion between the
                                                           LiDAR's and the camera's timestamps; KITTI: each
                                                           sequence's calibration), from its first change on

Stamps: base time + the sample's timestamp (Sample.timestamp; synthetic scenes are 0.1 s apart), so stamps
are not 0; nuScenes' are absolute already (base 0). A sweep whose time does not advance (the folder format
has no times) gets the previous stamp + ``--period``. Cameras keep their offset to their sweep. Each message
is logged at its header stamp. The dataset's class names are stored in the bag's metadata
(``custom_data``, key :data:`CLASS_NAMES_KEY`), so replay can match ground-truth indices to a vocabulary.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from clip_seg3d_ros.datasets.sample import CameraFrame, Sample
from clip_seg3d_ros.geometry.calibration import camera_info_fields
from clip_seg3d_ros.geometry.transforms import invert_transform
from clip_seg3d_ros.ros.bag_reader import CLASS_NAMES_KEY
from clip_seg3d_ros.ros.image import rgb_image_fields
from clip_seg3d_ros.ros.pointcloud2 import LABEL_IGNORED, PointCloud2Types, create_cloud
from clip_seg3d_ros.ros.tf import matrix_to_translation_quaternion

POINTS_TOPIC = "/points"
GT_TOPIC = "/points_gt"
TF_STATIC_TOPIC = "/tf_static"
TF_TOPIC = "/tf"
DEFAULT_BASE_TIME_S = 1_700_000_000  # 2023-11-14: stamps of datasets with relative times start here
BAG_VERSION = 8  # rosbag2 metadata version 8 (Iron and later read it; the oldest rosbags writes)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
NS_PER_S = 1_000_000_000
# A camera whose LiDAR -> camera transform moves more than this between sweeps goes on /tf as well.
TRANSFORM_TOLERANCE = 1e-6

POINTS_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
GT_DTYPE = np.dtype({
    "names": ["x", "y", "z", "intensity", "label"],
    "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
    "offsets": [0, 4, 8, 12, 16],
    "itemsize": 20,  # 2 bytes of padding keep every point's floats 4-byte aligned
})
# Latched, like tf2's static broadcaster: late subscribers to a played-back /tf_static still get it.
TF_STATIC_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=1,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL,
    deadline=QosTime(0, 0),
    lifespan=QosTime(0, 0),
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=QosTime(0, 0),
    avoid_ros_namespace_conventions=False,
)


def camera_namespace(camera_name: str) -> str:
    """A valid ROS name for a camera: lower case, anything but letters, digits and _ replaced by _."""
    name = re.sub(r"[^a-z0-9_]", "_", camera_name.lower()).strip("_") or "camera"
    return f"camera_{name}" if name[0].isdigit() else name


def optical_frame(camera_name: str) -> str:
    return f"{camera_namespace(camera_name)}_optical_frame"


def seconds_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


@dataclass
class BagSummary:
    """What :func:`write_bag` wrote: sweeps, their stamps (ns), message count per topic."""

    path: Path
    sweep_stamps: list[int] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)


class SampleWriter:
    """Writes :class:`Sample`s into an open rosbags ``Writer``: sweep, ground truth, cameras and their TF."""

    def __init__(self, writer: Writer, lidar_frame: str = "lidar") -> None:
        self.writer = writer
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.types = self.typestore.types
        self.cloud_types = PointCloud2Types.from_rosbags(self.typestore)
        self.lidar_frame = lidar_frame
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self.static_transforms: dict[str, np.ndarray] = {}  # camera optical frame -> lidar_to_camera written
        self.moving_frames: set[str] = set()  # optical frames whose transform changed since /tf_static

    def _write(self, topic: str, msgtype: str, message, stamp_ns: int, qos: Sequence[Qos] = ()) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(qos)
            )
        self.writer.write(self.connections[topic], stamp_ns, self.typestore.serialize_cdr(message, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def header(self, stamp_ns: int, frame_id: str):
        stamp = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def write(self, sample: Sample, stamp_ns: int) -> None:
        header = self.header(stamp_ns, self.lidar_frame)
        points = np.zeros(len(sample.points), dtype=POINTS_DTYPE)
        for column, name in enumerate(POINTS_DTYPE.names):
            points[name] = sample.points[:, column]
        cloud_type = "sensor_msgs/msg/PointCloud2"
        self._write(POINTS_TOPIC, cloud_type, create_cloud(points, header, self.cloud_types), stamp_ns)
        if sample.labels is not None:
            truth = np.zeros(len(points), dtype=GT_DTYPE)
            for name in POINTS_DTYPE.names:
                truth[name] = points[name]
            truth["label"] = np.where(sample.labels < 0, LABEL_IGNORED, sample.labels)
            self._write(GT_TOPIC, cloud_type, create_cloud(truth, header, self.cloud_types), stamp_ns)
        camera_stamps = [stamp_ns + seconds_to_ns(frame.timestamp - sample.timestamp) for frame in sample.cameras]
        self._write_transforms(sample.cameras, camera_stamps, stamp_ns)
        for frame, camera_stamp in zip(sample.cameras, camera_stamps, strict=True):
            self._write_camera(frame, camera_stamp)

    def _transform_message(self, frames: Sequence[CameraFrame], stamps: Sequence[int]):
        """TFMessage: each camera's optical frame as a child of the LiDAR frame (its pose in the LiDAR frame)."""
        transforms = []
        for frame, stamp_ns in zip(frames, stamps, strict=True):
            translation, quaternion = matrix_to_translation_quaternion(invert_transform(frame.camera.lidar_to_camera))
            transforms.append(self.types["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, self.lidar_frame),
                child_frame_id=optical_frame(frame.camera.name),
                transform=self.types["geometry_msgs/msg/Transform"](
                    translation=self.types["geometry_msgs/msg/Vector3"](*translation),
                    rotation=self.types["geometry_msgs/msg/Quaternion"](*quaternion),
                ),
            ))
        return self.types["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def _write_transforms(self, frames: Sequence[CameraFrame], camera_stamps: Sequence[int], stamp_ns: int) -> None:
        """A camera's first transform goes on /tf_static; once it has moved, every later one goes on /tf too.

        Readers take a timed transform from its stamp on and the static one before the first timed stamp
        (:class:`clip_seg3d_ros.ros.tf.TransformBuffer`), so every sweep gets its own sample's transform.
        """
        frames_by_name = {optical_frame(frame.camera.name): i for i, frame in enumerate(frames)}
        new = [i for name, i in frames_by_name.items() if name not in self.static_transforms]
        if new:
            for i in new:
                self.static_transforms[optical_frame(frames[i].camera.name)] = frames[i].camera.lidar_to_camera
            message = self._transform_message([frames[i] for i in new], [stamp_ns] * len(new))
            self._write(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", message, stamp_ns, qos=[TF_STATIC_QOS])
        for name, i in frames_by_name.items():
            if not np.allclose(frames[i].camera.lidar_to_camera, self.static_transforms[name], rtol=0.0,
                               atol=TRANSFORM_TOLERANCE):
                self.moving_frames.add(name)
        moving = [i for name, i in frames_by_name.items() if name in self.moving_frames]
        if moving:
            message = self._transform_message([frames[i] for i in moving], [camera_stamps[i] for i in moving])
            self._write(TF_TOPIC, "tf2_msgs/msg/TFMessage", message, stamp_ns)

    def _write_camera(self, frame: CameraFrame, stamp_ns: int) -> None:
        namespace, header = camera_namespace(frame.camera.name), self.header(stamp_ns, optical_frame(frame.camera.name))
        image = self.types["sensor_msgs/msg/Image"](header=header, **rgb_image_fields(frame.image))
        self._write(f"/{namespace}/image_raw", "sensor_msgs/msg/Image", image, stamp_ns)
        fields = {name: np.asarray(value, dtype=np.float64) if name in "dkrp" else value
                  for name, value in camera_info_fields(frame.camera).items()}
        region = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        info = self.types["sensor_msgs/msg/CameraInfo"](header=header, binning_x=0, binning_y=0, roi=region, **fields)
        self._write(f"/{namespace}/camera_info", "sensor_msgs/msg/CameraInfo", info, stamp_ns)


def write_bag(
    samples: Iterable[Sample],
    out: str | Path,
    *,
    storage: str = "mcap",
    lidar_frame: str = "lidar",
    base_time_s: int = DEFAULT_BASE_TIME_S,
    period_s: float = 0.1,
    class_names: Sequence[str] | None = None,
    total: int | None = None,
    progress: bool = True,
) -> BagSummary:
    """Write ``samples`` as a new rosbag2 at ``out`` (a folder; an existing one is refused: WriterError)."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    summary = BagSummary(path=Path(out))
    with Writer(out, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as writer:  # aborts on an error
        sample_writer = SampleWriter(writer, lidar_frame)
        names = list(class_names) if class_names is not None else None
        for sample in tqdm(samples, total=total, desc="to_bag", unit="sweep", disable=not progress):
            stamp_ns = base_time_s * NS_PER_S + seconds_to_ns(sample.timestamp)
            if summary.sweep_stamps and stamp_ns <= summary.sweep_stamps[-1]:
                stamp_ns = summary.sweep_stamps[-1] + seconds_to_ns(period_s)
            sample_writer.write(sample, stamp_ns)
            summary.sweep_stamps.append(stamp_ns)
            names = names if names is not None else list(sample.class_names)
        if names:
            writer.set_custom_data(CLASS_NAMES_KEY, json.dumps(names))
        summary.messages = dict(sample_writer.counts)
    return summary


def load_samples(args: argparse.Namespace) -> tuple[Iterable[Sample], int, list[str], int]:
    """The chosen dataset's samples (lazily), their number, class names and the base time for its stamps."""
    base_time = DEFAULT_BASE_TIME_S
    if args.dataset == "synthetic":
        from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig

        world = SyntheticWorld(WorldConfig(seed=args.seed, cameras=() if args.no_images else WorldConfig().cameras))
        count = args.scenes if args.limit is None else min(args.scenes, args.limit)
        return (world.scene(i) for i in range(count)), count, world.class_names, base_time
    if args.root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root")
    if args.dataset == "semantickitti":
        from clip_seg3d_ros.datasets.semantickitti import SemanticKITTI

        dataset = SemanticKITTI(args.root, args.sequences, with_images=not args.no_images)
    elif args.dataset == "nuscenes":
        from clip_seg3d_ros.datasets.nuscenes import NuScenes

        dataset = NuScenes(args.root, version=args.version, scenes=args.scene_names, with_images=not args.no_images)
        base_time = 0  # nuScenes timestamps are absolute (microseconds since the epoch)
    else:
        from clip_seg3d_ros.datasets.folder import FolderDataset

        dataset = FolderDataset(args.root)
    count = len(dataset) if args.limit is None else min(len(dataset), args.limit)
    samples = (dataset[i] for i in range(count))
    if args.no_images and args.dataset == "folder":
        samples = (Sample(s.name, s.points, s.class_names, s.labels, [], s.timestamp) for s in samples)
    return samples, count, list(dataset.class_names), base_time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=["synthetic", "semantickitti", "nuscenes", "folder"])
    parser.add_argument("--root", type=Path, help="dataset root (not for synthetic)")
    parser.add_argument("--out", required=True, type=Path, help="the bag folder to create (must not exist)")
    parser.add_argument("--storage", default="mcap", choices=sorted(STORAGES))
    parser.add_argument("--scenes", type=int, default=10, help="synthetic: number of scenes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: world seed")
    parser.add_argument("--sequences", nargs="+", default=["08"], help="SemanticKITTI sequences (default 08)")
    parser.add_argument("--version", default="v1.0-mini", help="nuScenes version folder (default v1.0-mini)")
    parser.add_argument("--scene-names", nargs="+", help="nuScenes scene names (default: all)")
    parser.add_argument("--limit", type=int, help="write at most this many sweeps")
    parser.add_argument("--no-images", action="store_true", help="LiDAR and ground truth only")
    parser.add_argument("--lidar-frame", default="lidar", help="frame_id of the clouds (default lidar)")
    parser.add_argument("--base-time", type=int, help="seconds added to the data's timestamps (default "
                        f"{DEFAULT_BASE_TIME_S}; 0 for nuScenes, whose times are absolute)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between sweeps without times")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        samples, count, class_names, base_time = load_samples(args)
        summary = write_bag(
            samples, args.out, storage=args.storage, lidar_frame=args.lidar_frame,
            base_time_s=base_time if args.base_time is None else args.base_time, period_s=args.period,
            class_names=class_names, total=count,
        )
    except (FileNotFoundError, ValueError, WriterError) as error:
        print(f"to_bag: {error}", file=sys.stderr)
        return 1
    topics = ", ".join(f"{topic} {count}" for topic, count in sorted(summary.messages.items()))
    print(f"wrote {len(summary.sweep_stamps)} sweeps to {summary.path}: {topics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
