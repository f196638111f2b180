"""Reading rosbag2 files for replay: opening any bag, messages by header stamp, camera frames of a sweep.

Every failure of the bag itself (missing, truncated, corrupt, a database or decompression error) becomes one
:class:`BagError` with a one-line message; rosbags, apsw and zstd each raise their own exception types, so
they are caught here at the reader's boundary and nowhere else.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from clip_seg3d_ros.ros.camera_frame import camera_frame
from clip_seg3d_ros.ros.image import image_to_rgb
from clip_seg3d_ros.ros.tf import TransformBuffer, TransformError, stamp_to_ns
from clip_seg3d_ros.sample import CameraFrame

log = logging.getLogger(__name__)

CLASS_NAMES_KEY = "clip_seg3d_ros.class_names"  # the bag metadata's custom_data key for the class names


class BagError(RuntimeError):
    """A bag that cannot be read (missing, truncated, corrupt, or without what is asked of it)."""


def one_line(error: BaseException) -> str:
    """An error's text on one line (YAML and database errors span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def read_messages(reader: AnyReader, connections: Sequence, start: int | None = None, stop: int | None = None
                  ) -> Iterator[tuple]:
    """``reader.messages``, with every failure of the reader itself (truncated chunk, bad record, database
    error; rosbags, apsw and zstd each raise their own) turned into a :class:`BagError`."""
    messages = reader.messages(connections=connections, start=start, stop=stop)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as error:  # the reader's errors have no common base class
            path = reader.paths[0]
            raise BagError(f"{path}: cannot read the bag (truncated or corrupt?): {one_line(error)}") from error
        yield item


@dataclass
class TopicIndex:
    """Header stamps (sorted) of one topic's messages and the bag time each was logged at, for lookups."""

    stamps: list[int] = field(default_factory=list)
    log_times: list[int] = field(default_factory=list)

    def add(self, stamp_ns: int, log_time: int) -> None:
        index = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(index, stamp_ns)
        self.log_times.insert(index, log_time)

    def exact(self, stamp_ns: int) -> int | None:
        index = bisect.bisect_left(self.stamps, stamp_ns)
        return index if index < len(self.stamps) and self.stamps[index] == stamp_ns else None

    def all_at(self, stamp_ns: int) -> list[int]:
        """Every position whose header stamp is ``stamp_ns`` (several where messages share a stamp)."""
        return list(range(bisect.bisect_left(self.stamps, stamp_ns), bisect.bisect_right(self.stamps, stamp_ns)))

    def duplicate_stamps(self) -> int:
        """How many messages share their header stamp with an earlier one."""
        return len(self.stamps) - len(set(self.stamps))

    def nearest(self, stamp_ns: int) -> int | None:
        index = bisect.bisect_left(self.stamps, stamp_ns)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(self.stamps)]
        return min(candidates, key=lambda i: abs(self.stamps[i] - stamp_ns)) if candidates else None


class BagLookup:
    """Random access to messages by (topic, header stamp), on a reader of its own.

    A second reader keeps these lookups from moving the file position under the main iteration (which matters
    for MCAP files without an index, read by scanning).
    """

    def __init__(self, reader: AnyReader) -> None:
        self.reader = reader
        self.indexes: dict[str, TopicIndex] = {}
        self.connections: dict[str, list] = {}  # a recorded topic has one connection per publisher QoS
        for connection in reader.connections:
            self.connections.setdefault(connection.topic, []).append(connection)

    def index(self, topic: str) -> TopicIndex:
        """Read every message of ``topic`` once to record its header stamp (undecodable ones are left out)."""
        if topic not in self.indexes:
            index = TopicIndex()
            for connection, log_time, raw in read_messages(self.reader, self.connections[topic]):
                try:
                    index.add(stamp_to_ns(self.reader.deserialize(raw, connection.msgtype).header.stamp), log_time)
                except Exception as error:  # whatever the bytes are, an undecodable message is left out
                    log.warning("%s: a message at %d cannot be decoded (%s); left out", topic, log_time, error)
            self.indexes[topic] = index
        return self.indexes[topic]

    def fetch(self, topic: str, position: int):
        """The message at ``position`` of ``topic``'s index (deserialised)."""
        index = self.indexes[topic]
        stamp, log_time = index.stamps[position], index.log_times[position]
        for connection, _, raw in read_messages(self.reader, self.connections[topic], start=log_time,
                                                stop=log_time + 1):
            message = self.reader.deserialize(raw, connection.msgtype)
            if stamp_to_ns(message.header.stamp) == stamp:
                return message
        raise BagError(f"{topic}: the message stamped {stamp} ns vanished from the bag")


class BagCameras:
    """The camera frames of a sweep, rebuilt from a bag: Image + CameraInfo topics of each camera, and TF.

    Cameras are the Image topics with a ``camera_info`` beside them (``/ns/image_raw`` + ``/ns/camera_info``).
    The latest CameraInfo of each camera is used (intrinsics rarely change in a recording).
    """

    def __init__(self, lookup: BagLookup, max_offset_ns: int) -> None:
        self.lookup = lookup
        self.max_offset_ns = max_offset_ns
        self.transforms = TransformBuffer()
        reader = lookup.reader
        tf_topics = {"/tf_static": True, "/tf": False}
        tf_connections = [c for c in reader.connections if c.topic in tf_topics]
        for connection, _, raw in read_messages(reader, tf_connections) if tf_connections else ():
            self.transforms.add(reader.deserialize(raw, connection.msgtype).transforms, tf_topics[connection.topic])
        self.cameras: dict[str, tuple[str, object]] = {}  # image topic -> (name, CameraInfo)
        image_topics = [c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"]
        for topic in sorted(set(image_topics)):
            namespace = topic.rsplit("/", 1)[0]
            info_topic = f"{namespace}/camera_info"
            if info_topic not in lookup.connections:
                log.warning("%s has no %s beside it: not used", topic, info_topic)
                continue
            info = None
            for connection, _, raw in read_messages(reader, lookup.connections[info_topic]):
                info = reader.deserialize(raw, connection.msgtype)
            if info is not None:
                self.cameras[topic] = (namespace.strip("/") or "camera", info)
                lookup.index(topic)
        if not self.cameras:
            log.warning("--use-cameras: the bag has no camera (Image + camera_info topics)")

    def frames(self, lidar_frame: str, stamp_ns: int, issues: Counter) -> list[CameraFrame]:
        """One frame per camera with an image within ``max_offset_ns`` of ``stamp_ns``; problems counted."""
        frames = []
        for topic, (name, info) in self.cameras.items():
            index = self.lookup.indexes[topic]
            position = index.nearest(stamp_ns)
            if position is None or abs(index.stamps[position] - stamp_ns) > self.max_offset_ns:
                issues[f"{name}: no image within the time offset"] += 1
                continue
            image_message = self.lookup.fetch(topic, position)
            optical_frame = str(info.header.frame_id or image_message.header.frame_id)
            try:
                lidar_to_camera = self.transforms.lookup(optical_frame, lidar_frame, index.stamps[position])
                # The node's own checks (uncalibrated K, binning, ROI, image size): one way to make a frame.
                frames.append(camera_frame(image_to_rgb(image_message), info, lidar_to_camera,
                                           timestamp=index.stamps[position] * 1e-9, name=name))
            except (TransformError, ValueError) as error:  # ImageError is a ValueError
                issue = f"{name}: {type(error).__name__}"
                issues[issue] += 1
                if issues[issue] == 1:  # the first time in full; then only counted
                    log.warning("camera %s left out: %s", name, error)
        return frames


def bag_class_names(path: Path) -> list[str] | None:
    """The class names ``to_bag`` stored in the bag's metadata.yaml (None for bags without them)."""
    metadata_file = path / "metadata.yaml" if path.is_dir() else path.parent / "metadata.yaml"
    if not metadata_file.is_file():
        return None
    try:
        metadata = yaml.safe_load(metadata_file.read_text())["rosbag2_bagfile_information"]
        stored = (metadata.get("custom_data") or {}).get(CLASS_NAMES_KEY)
        return [str(name) for name in json.loads(stored)] if stored else None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise BagError(f"{metadata_file}: unreadable class names in the metadata: {one_line(error)}") from error


def open_bag(path: Path) -> AnyReader:
    """An open AnyReader on a rosbag2 folder or a single .mcap / .db3 file; BagError if that fails."""
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    try:
        # Bags recorded by ROS 2 Humble carry no message definitions: read those with Humble's.
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as error:  # rosbags raises its own errors, but also OSError, apsw and struct errors
        raise BagError(f"{path}: cannot open the bag (truncated or corrupt?): {one_line(error)}") from error
    return reader
