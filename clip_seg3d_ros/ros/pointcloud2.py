"""``sensor_msgs/PointCloud2`` <-> numpy structured arrays, without ROS.

Decoding builds one numpy structured dtype from the message's ``fields`` (each field at its byte offset, in
the message's byte order, ``count > 1`` as a sub-array, ``itemsize = point_step``), so the bytes are never
parsed by hand: :func:`read_points` is a zero-copy view on ``msg.data`` whenever rows are not padded
(``row_step == width * point_step``, the usual case), and one copy otherwise. Organised clouds
(``height > 1``) decode to ``height * width`` points in row-major order, the order of the labels that go back.

Encoding takes the message classes as a :class:`PointCloud2Types`, so the same code fills rclpy's messages in
the node and rosbags' messages in bag tools and tests.

Conventions of the labelled output cloud (:func:`create_labelled_cloud`): the input points' bytes and fields
unchanged, then ``label`` (UINT16 class index, :data:`LABEL_IGNORED` = 65535 where the Segmenter gives -1)
and ``score`` (FLOAT32, the softmax probability of the label), in the input's byte order; header, height and
width of the input. Every malformed message raises :class:`PointCloud2Error`, whose message names the problem.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# sensor_msgs/PointField datatype constants -> numpy type codes (byte order added per message).
POINT_FIELD_DTYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_DATATYPE_OF_CODE = {code: datatype for datatype, code in POINT_FIELD_DTYPES.items()}
LABEL_IGNORED = 65535  # the `label` value of points the Segmenter ignores (label -1)
XYZ = ("x", "y", "z")
# numpy keeps a dtype's size and offsets in a C int: a larger point_step or offset (legal uint32) would fail
# inside numpy ("integer won't fit into a C int"). Widths and heights have the same limit, for one rule.
MAX_LAYOUT = 2**31 - 1


class PointCloud2Error(ValueError):
    """A PointCloud2 that cannot be decoded (or points that cannot be encoded); the message says why.

    ``reason`` is a short fixed phrase for the kind of problem (e.g. "data size", "no x/y/z field", "layout
    too large"), so that a replay can count skipped messages by reason while the message carries the numbers.
    Every error raised here names one.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PointCloud2Types:
    """The message classes the encoders build, and how a uint8 array becomes their ``data`` field.

    rosbags' generated dataclasses take a numpy uint8 array; rclpy's messages take an ``array.array('B')``
    (anything else goes through a slow per-element check in rclpy's setter).
    """

    cloud: Callable[..., Any]
    field: Callable[..., Any]
    data: Callable[[np.ndarray], Any]

    @classmethod
    def from_rosbags(cls, typestore) -> PointCloud2Types:
        """Types of a rosbags typestore, e.g. ``get_typestore(Stores.ROS2_HUMBLE)``."""
        return cls(
            cloud=typestore.types["sensor_msgs/msg/PointCloud2"],
            field=typestore.types["sensor_msgs/msg/PointField"],
            data=lambda raw: raw,
        )

    @classmethod
    def from_rclpy(cls) -> PointCloud2Types:
        """Types of the ROS 2 Python ``sensor_msgs`` package (needs a sourced ROS 2 environment)."""
        from sensor_msgs.msg import PointCloud2, PointField  # ROS is optional: imported only here

        def to_array(raw: np.ndarray) -> array.array:
            data = array.array("B")
            data.frombytes(memoryview(np.ascontiguousarray(raw)))
            return data

        return cls(cloud=PointCloud2, field=PointField, data=to_array)


def _message_bytes(data) -> np.ndarray:
    """``msg.data`` as a 1-D uint8 array, without a copy when it exposes a buffer (numpy, array.array, bytes)."""
    try:
        raw = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a plain list of ints (hand-made messages), or a non-contiguous buffer
        try:
            raw = np.asarray(data, dtype=np.uint8)
        except (TypeError, ValueError, OverflowError) as error:
            raise PointCloud2Error(f"data is not a byte sequence: {error}", "data not bytes") from error
    return raw.reshape(-1)


def point_dtype(msg) -> np.dtype:
    """The structured dtype of one point of ``msg`` (validated against ``point_step``; no check of ``data``)."""
    byte_order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    if point_step > MAX_LAYOUT:
        raise PointCloud2Error(f"point_step {point_step} is larger than {MAX_LAYOUT} bytes", "layout too large")
    names, formats, offsets = [], [], []
    for field in msg.fields:
        name, offset, datatype, count = str(field.name), int(field.offset), int(field.datatype), int(field.count)
        if offset > MAX_LAYOUT or count > MAX_LAYOUT:
            raise PointCloud2Error(f"field {name!r}: offset {offset} or count {count} is larger than {MAX_LAYOUT}",
                                   "layout too large")
        if not name:
            raise PointCloud2Error("a field has an empty name", "bad field")
        if name in names:
            raise PointCloud2Error(f"duplicate field name {name!r}", "duplicate field")
        if datatype not in POINT_FIELD_DTYPES:
            raise PointCloud2Error(f"field {name!r} has unknown datatype {datatype} (1..8)", "unknown datatype")
        if count < 1:
            raise PointCloud2Error(f"field {name!r} has count {count} (expected >= 1)", "bad field")
        if offset < 0:
            raise PointCloud2Error(f"field {name!r} has negative offset {offset}", "bad field")
        base = np.dtype(byte_order + POINT_FIELD_DTYPES[datatype])
        end = offset + base.itemsize * count
        if end > point_step:
            raise PointCloud2Error(
                f"field {name!r} ends at byte {end}, beyond point_step {point_step}", "field beyond point_step"
            )
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
    missing = [axis for axis in XYZ if axis not in names]
    if missing:
        raise PointCloud2Error(f"no {'/'.join(missing)} field (fields: {names})", "no x/y/z field")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def read_points(msg) -> np.ndarray:
    """All ``height * width`` points of ``msg`` as a 1-D structured array (row-major for organised clouds).

    A read-only or writable view on ``msg.data`` (so it lives as long as the message and must not be written
    to) unless rows are padded, in which case the padding is dropped in one copy.
    """
    dtype = point_dtype(msg)
    height, width, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    if height < 0 or width < 0:
        raise PointCloud2Error(f"negative size {height}x{width}", "bad size")
    if height > MAX_LAYOUT or width > MAX_LAYOUT:
        raise PointCloud2Error(f"size {height}x{width} is beyond {MAX_LAYOUT} points a side", "layout too large")
    if row_step < width * dtype.itemsize:
        raise PointCloud2Error(
            f"row_step {row_step} is smaller than width * point_step = {width * dtype.itemsize}", "row_step too small"
        )
    raw = _message_bytes(msg.data)
    if raw.size != height * row_step:
        raise PointCloud2Error(
            f"data has {raw.size} bytes, expected height * row_step = {height} * {row_step} = {height * row_step}",
            "data size",
        )
    if height * width == 0:
        return np.zeros(0, dtype=dtype)
    if row_step == width * dtype.itemsize:
        return raw.view(dtype)
    rows = raw.reshape(height, row_step)[:, : width * dtype.itemsize]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def xyz_intensity(points: np.ndarray, intensity_field: str = "intensity") -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity from decoded points, as the Segmenter takes them.

    A cloud without ``intensity_field`` gets intensity 0, which is what the Segmenter's input features use for
    a missing or NaN intensity anyway (``segmenter.point_features``); NaN coordinates are kept (the Segmenter
    labels those points -1).
    """
    present = points.dtype.names or ()
    columns = [*XYZ, intensity_field] if intensity_field in present else list(XYZ)
    for name in columns:
        if name not in present:
            raise PointCloud2Error(f"no {name!r} field (fields: {list(present)})", "no x/y/z field")
        if points.dtype.fields[name][0].shape != ():
            raise PointCloud2Error(f"field {name!r} has count > 1; {', '.join(columns)} must be single values",
                                   "field count > 1")
    out = np.zeros((len(points), 4), dtype=np.float32)
    for column, name in enumerate(columns):
        out[:, column] = points[name]
    return out


def read_xyz_intensity(msg, intensity_field: str = "intensity") -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of ``msg`` (intensity 0 when the cloud has none)."""
    return xyz_intensity(read_points(msg), intensity_field)


def read_labels(msg, field: str = "label") -> np.ndarray:
    """(N,) int64 class indices from an integer field (e.g. ground truth on ``/points_gt``); 65535 -> -1."""
    points = read_points(msg)
    if field not in (points.dtype.names or ()):
        raise PointCloud2Error(f"no {field!r} field (fields: {list(points.dtype.names or ())})", "no label field")
    values = points[field]
    if values.ndim != 1 or values.dtype.kind not in "iu":
        kind = points.dtype.fields[field][0]
        raise PointCloud2Error(f"field {field!r} must be a single integer per point, got {kind}", "label not integer")
    labels = values.astype(np.int64)
    labels[labels == LABEL_IGNORED] = -1
    return labels


def point_fields(dtype: np.dtype, field_class: Callable[..., Any]) -> tuple[list, bool]:
    """PointFields describing a structured dtype, and whether its multi-byte fields are big-endian."""
    if dtype.names is None:
        raise PointCloud2Error(f"points must be a structured array, got dtype {dtype}", "not structured")
    fields, orders = [], set()
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        base = field_dtype.base
        datatype = _DATATYPE_OF_CODE.get(f"{base.kind}{base.itemsize}")
        if datatype is None:
            raise PointCloud2Error(f"field {name!r} has dtype {base}, which PointField cannot describe",
                                   "unknown datatype")
        if base.itemsize > 1:
            orders.add(sys.byteorder == "big" if base.byteorder == "=" else base.byteorder == ">")
        count = int(np.prod(field_dtype.shape)) if field_dtype.shape else 1
        fields.append(field_class(name=name, offset=int(offset), datatype=datatype, count=count))
    if len(orders) > 1:
        raise PointCloud2Error("fields mix big- and little-endian byte orders", "mixed byte orders")
    return fields, orders.pop() if orders else sys.byteorder == "big"


def create_cloud(
    points: np.ndarray,
    header,
    types: PointCloud2Types,
    *,
    height: int = 1,
    width: int | None = None,
    is_dense: bool | None = None,
) -> Any:
    """A PointCloud2 holding ``points`` (a structured array) as they are laid out in memory.

    ``height`` x ``width`` must equal the number of points (``width`` defaults to N / height); ``is_dense``
    defaults to "every x, y, z is finite".
    """
    points = np.ascontiguousarray(points).reshape(-1)
    fields, big_endian = point_fields(points.dtype, types.field)
    width = len(points) // height if width is None and height > 0 else width
    if height < 0 or width is None or width < 0 or height * width != len(points):
        raise PointCloud2Error(f"{len(points)} points do not fill a {height}x{width} cloud", "bad size")
    if is_dense is None:
        names = points.dtype.names
        is_dense = all(np.isfinite(points[axis]).all() for axis in XYZ if axis in names)
    point_step = points.dtype.itemsize
    return types.cloud(
        header=header,
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big_endian,
        point_step=point_step,
        row_step=point_step * width,
        data=types.data(points.view(np.uint8)),
        is_dense=bool(is_dense),
    )


def labelled_point_dtype(dtype: np.dtype, big_endian: bool) -> np.dtype:
    """``dtype`` (minus any ``label``/``score`` field) plus ``label`` uint16 and ``score`` float32 at its end.

    The new fields start at the next 4-byte boundary, ``score`` 4 bytes after ``label``, and the point grows to
    a multiple of 4 bytes, so the float stays aligned in every point.
    """
    kept = [name for name in dtype.names if name not in ("label", "score")]
    start = -(-dtype.itemsize // 4) * 4
    order = ">" if big_endian else "<"
    return np.dtype({
        "names": [*kept, "label", "score"],
        "formats": [dtype.fields[name][0] for name in kept] + [order + "u2", order + "f4"],
        "offsets": [dtype.fields[name][1] for name in kept] + [start, start + 4],
        "itemsize": start + 8,
    })


def create_labelled_cloud(msg, labels: np.ndarray, scores: np.ndarray, types: PointCloud2Types,
                          points: np.ndarray | None = None) -> Any:
    """The input cloud ``msg`` with a ``label`` (UINT16, 65535 = ignored) and a ``score`` (FLOAT32) per point.

    Header, height, width and is_dense are the input's (the points are unchanged); row padding is dropped.
    ``points``: ``read_points(msg)`` where the caller has it already, so that a sweep is decoded once.
    """
    points = read_points(msg) if points is None else points
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if labels.shape != points.shape or scores.shape != points.shape:
        raise PointCloud2Error(f"{labels.size} labels and {scores.size} scores for {points.size} points",
                               "label count")
    if labels.size and (labels.max() >= LABEL_IGNORED or labels.min() < -1):
        raise PointCloud2Error(f"labels must be in -1..{LABEL_IGNORED - 1}, got {labels.min()}..{labels.max()}",
                               "label range")
    dtype = labelled_point_dtype(points.dtype, bool(msg.is_bigendian))
    out = np.zeros(len(points), dtype=dtype)
    out.view(np.uint8).reshape(len(points), dtype.itemsize)[:, : points.dtype.itemsize] = (
        np.ascontiguousarray(points).view(np.uint8).reshape(len(points), points.dtype.itemsize)
    )
    out["score"] = scores
    out["label"] = np.where(labels < 0, LABEL_IGNORED, labels)
    return create_cloud(out, msg.header, types, height=int(msg.height), width=int(msg.width), is_dense=msg.is_dense)


def pack_rgb(colours: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB, the ``rgb`` field RViz and PCL read."""
    colours = np.asarray(colours)
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"colours must be (N, 3) RGB, got shape {colours.shape}")
    rgb = colours.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """The inverse of :func:`pack_rgb`: (N,) float32 -> (N, 3) uint8."""
    bits = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1).astype(np.uint8)


def create_rgb_cloud(
    header,
    xyz: np.ndarray,
    colours: np.ndarray,
    types: PointCloud2Types,
    *,
    height: int = 1,
    width: int | None = None,
) -> Any:
    """An x, y, z, rgb cloud (float32 each; rgb packed as :func:`pack_rgb` does) for RViz's RGB8 colouring."""
    xyz = np.asarray(xyz).reshape(-1, 3)
    if len(colours) != len(xyz):
        raise PointCloud2Error(f"{len(colours)} colours for {len(xyz)} points", "colour count")
    points = np.zeros(len(xyz), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")]))
    for column, axis in enumerate(XYZ):
        points[axis] = xyz[:, column]
    points["rgb"] = pack_rgb(colours)
    return create_cloud(points, header, types, height=height, width=width)
