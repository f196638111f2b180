"""Writing rosbag2 files (mcap or sqlite3) with the rosbags package: datasets as a robot's recording, and
labelled clouds. Also the bag layout's constants that the reader (:mod:`clip_seg3d_ros.ros.bag_reader`),
replay and to_bag share.

Topics :func:`write_bag` writes (ROS 2 Humble message definitions, CDR):

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
has no times) gets the previous stamp + ``period_s``. Cameras keep their offset to their sweep. Each message
is logged at its header stamp. The dataset's class names are stored in the bag's metadata
(``custom_data``, key :data:`CLASS_NAMES_KEY`), so replay can match ground-truth indices to a vocabulary.

:class:`LabelledBagWriter` writes replay's output: one ``/points_labelled`` cloud per labelled sweep.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from clip_seg3d_ros.geometry.calibration import camera_info_fields
from clip_seg3d_ros.geometry.camera import camera_namespace, check_camera_names
from clip_seg3d_ros.geometry.transforms import invert_transform
from clip_seg3d_ros.ros.bag_reader import CLASS_NAMES_KEY, BagError, one_line
from clip_seg3d_ros.ros.image import rgb_image_fields
from clip_seg3d_ros.ros.mcap_checksums import add_chunk_crcs
from clip_seg3d_ros.ros.pointcloud2 import LABEL_IGNORED, PointCloud2Types, create_cloud, create_labelled_cloud
from clip_seg3d_ros.ros.tf import matrix_to_translation_quaternion
from clip_seg3d_ros.sample import CameraFrame, Sample

POINTS_TOPIC = "/points"
LABELLED_TOPIC = "/points_labelled"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
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
        self.camera_names: dict[str, str] = {}  # ROS name -> camera name, one each

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
        self._check_camera_names(sample)
        camera_stamps = [stamp_ns + seconds_to_ns(frame.timestamp - sample.timestamp) for frame in sample.cameras]
        self._write_transforms(sample.cameras, camera_stamps, stamp_ns)
        for frame, camera_stamp in zip(sample.cameras, camera_stamps, strict=True):
            self._write_camera(frame, camera_stamp)

    def _check_camera_names(self, sample: Sample) -> None:
        """Each camera keeps its own topics and frame, within a sweep and across the bag."""
        names = [frame.camera.name for frame in sample.cameras]
        try:
            check_camera_names(names)
            for name in names:
                if self.camera_names.setdefault(camera_namespace(name), name) != name:
                    raise ValueError(f"camera names {self.camera_names[camera_namespace(name)]!r} and {name!r} both "
                                     f"become {camera_namespace(name)!r} as ROS names")
        except ValueError as error:
            raise ValueError(f"sample {sample.name}: {error}") from error

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
    if storage == "mcap":
        add_chunk_crcs(mcap_file(out))
    return summary


def mcap_file(bag: str | Path) -> Path:
    """The one storage file of an MCAP bag the project writes (rosbags names it after the folder)."""
    bag = Path(bag)
    return bag / f"{bag.name}.mcap"


class LabelledBagWriter:
    """The output bag: one ``/points_labelled`` cloud per labelled sweep, logged at its input's bag time."""

    def __init__(self, path: str | Path, storage: str) -> None:
        if storage not in STORAGES:
            raise BagError(f"output storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.cloud_types = PointCloud2Types.from_rosbags(self.typestore)
        self.path, self.storage = Path(path), storage
        try:
            self.writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
            self.writer.open()
        except WriterError as error:
            raise BagError(f"cannot write the labelled bag: {one_line(error)}") from error
        self.connection = self.writer.add_connection(LABELLED_TOPIC, CLOUD_TYPE, typestore=self.typestore)

    def write(self, message, labels: np.ndarray, scores: np.ndarray, log_time: int,
              points: np.ndarray | None = None) -> None:
        """The labelled cloud of ``message`` (``points``: its decoded points, when the caller has them)."""
        labelled = create_labelled_cloud(message, labels, scores, self.cloud_types, points)
        labelled.header = self._header(message.header)
        self.writer.write(self.connection, log_time, self.typestore.serialize_cdr(labelled, CLOUD_TYPE))

    def _header(self, header):
        """A copy of the input's header in the output bag's own message types (the reader's are other classes)."""
        types = self.typestore.types
        stamp = types["builtin_interfaces/msg/Time"](sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(header.frame_id))

    def close(self) -> None:
        self.writer.close()
        if self.storage == "mcap":
            add_chunk_crcs(mcap_file(self.path))

    def abort(self) -> None:
        self.writer.abort()
