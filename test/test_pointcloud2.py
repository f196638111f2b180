"""PointCloud2 <-> numpy against messages that went through rosbags' CDR serialisation and back.

Expected values are packed with :mod:`struct`, independently of the numpy structured dtypes the codec uses.
"""

from __future__ import annotations

import array
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from clip_seg3d_ros.evaluation.colors import UNLABELLED_RGB, label_colors
from clip_seg3d_ros.ros.pointcloud2 import (
    LABEL_IGNORED,
    PointCloud2Error,
    PointCloud2Types,
    create_cloud,
    create_labelled_cloud,
    create_rgb_cloud,
    pack_rgb,
    read_labels,
    read_points,
    read_xyz_intensity,
    unpack_rgb,
)

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
TYPES = PointCloud2Types.from_rosbags(TYPESTORE)
PointField = TYPESTORE.types["sensor_msgs/msg/PointField"]
CLOUD = "sensor_msgs/msg/PointCloud2"
# datatype -> (struct code, numpy code, value range for integers)
STRUCT_CODES = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


def header(sec: int = 1_700_000_000, nanosec: int = 123, frame_id: str = "lidar"):
    time_type, header_type = TYPESTORE.types["builtin_interfaces/msg/Time"], TYPESTORE.types["std_msgs/msg/Header"]
    return header_type(stamp=time_type(sec=sec, nanosec=nanosec), frame_id=frame_id)


def round_trip(message):
    """The message as a subscriber or bag reader gets it: serialised to CDR and deserialised by rosbags."""
    return TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(message, CLOUD), CLOUD)


def make_cloud(fields, point_step, data: bytes, height=1, width=None, row_step=None, big_endian=False, dense=True):
    """A rosbags PointCloud2 from (name, offset, datatype, count) tuples and raw bytes, CDR round-tripped."""
    width = width if width is not None else len(data) // point_step // max(height, 1)
    message = TYPES.cloud(
        header=header(),
        height=height,
        width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=big_endian,
        point_step=point_step,
        row_step=row_step if row_step is not None else point_step * width,
        data=np.frombuffer(data, dtype=np.uint8),
        is_dense=dense,
    )
    return round_trip(message)


def random_values(datatype: int, count: int, rng: np.random.Generator) -> list:
    if datatype in (7, 8):
        values = rng.normal(0.0, 1000.0, count)
        return [struct.unpack("f", struct.pack("f", v))[0] for v in values] if datatype == 7 else list(values)
    bits = SIZES[datatype] * 8
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if datatype % 2 else (0, 2**bits - 1)
    return [int(v) for v in rng.integers(low, high, count, endpoint=True)]


def pack(layout, values, height, width, point_step, row_step, big_endian) -> bytes:
    """Bytes of a cloud: ``values[name]`` (height * width rows, lists of ``count`` values) at their offsets."""
    buffer = bytearray(height * row_step)
    order = ">" if big_endian else "<"
    for point in range(height * width):
        row, column = divmod(point, width)
        for name, offset, datatype, count in layout:
            start = row * row_step + column * point_step + offset
            struct.pack_into(f"{order}{count}{STRUCT_CODES[datatype]}", buffer, start, *values[name][point])
    return bytes(buffer)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("datatype", sorted(STRUCT_CODES))
def test_every_datatype_and_byte_order_decodes_to_the_packed_values(datatype, big_endian):
    rng = np.random.default_rng(datatype)
    size = SIZES[datatype]
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("value", 12, datatype, 1)]
    point_step = 12 + size + 3  # padding at the end of each point
    width = 7
    values = {name: [[v] for v in random_values(dt, width, rng)] for name, _, dt, _ in layout}
    if datatype not in (7, 8):  # the type's extremes must survive too
        bits = size * 8
        extremes = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if datatype % 2 else (0, 2**bits - 1)
        values["value"][0], values["value"][1] = [extremes[0]], [extremes[1]]
    data = pack(layout, values, 1, width, point_step, point_step * width, big_endian)
    points = read_points(make_cloud(layout, point_step, data, big_endian=big_endian))

    assert points.dtype.fields["value"][0].itemsize == size
    assert points.dtype.fields["value"][0].kind == ("f" if datatype in (7, 8) else "i" if datatype % 2 else "u")
    np.testing.assert_array_equal(points["value"], np.array(values["value"]).ravel())
    np.testing.assert_array_equal(points["x"], np.array(values["x"], dtype=np.float32).ravel())


def test_unpadded_cloud_decodes_to_a_view_on_the_message_data():
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    values = {name: [[float(i + j)] for i in range(5)] for j, (name, *_) in enumerate(layout)}
    message = make_cloud(layout, 16, pack(layout, values, 1, 5, 16, 80, False))
    points = read_points(message)
    assert np.shares_memory(points, message.data)
    np.testing.assert_array_equal(points["z"], [2.0, 3.0, 4.0, 5.0, 6.0])


def test_organised_cloud_with_padding_between_fields_and_rows():
    # x y z with 2-byte gaps, an int16 ring, point_step 24 (tail padding), row_step 3 points + 10 bytes.
    layout = [("ring", 0, 3, 1), ("x", 2, 7, 1), ("y", 8, 7, 1), ("z", 14, 7, 1)]
    height, width, point_step, row_step = 4, 3, 24, 3 * 24 + 10
    rng = np.random.default_rng(0)
    values = {name: [[v] for v in random_values(dt, height * width, rng)] for name, _, dt, _ in layout}
    message = make_cloud(layout, point_step, pack(layout, values, height, width, point_step, row_step, False),
                         height=height, width=width, row_step=row_step)
    points = read_points(message)
    assert points.shape == (height * width,)  # row-major
    for name in ("ring", "x", "y", "z"):
        np.testing.assert_array_equal(points[name], np.array(values[name]).ravel().astype(points[name].dtype))
    xyzi = read_xyz_intensity(message)
    assert xyzi.dtype == np.float32 and xyzi.shape == (12, 4)
    np.testing.assert_array_equal(xyzi[:, 3], 0.0)  # no intensity field: 0, as the Segmenter treats it


def test_fields_with_count_become_sub_arrays():
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("normal", 12, 8, 3), ("rgba", 36, 2, 4)]
    rng = np.random.default_rng(1)
    values = {"x": [[1.0]] * 6, "y": [[2.0]] * 6, "z": [[3.0]] * 6,
              "normal": [random_values(8, 3, rng) for _ in range(6)],
              "rgba": [random_values(2, 4, rng) for _ in range(6)]}
    points = read_points(make_cloud(layout, 40, pack(layout, values, 1, 6, 40, 240, True), big_endian=True))
    assert points["normal"].shape == (6, 3) and points["rgba"].shape == (6, 4)
    np.testing.assert_array_equal(points["normal"], values["normal"])
    np.testing.assert_array_equal(points["rgba"], values["rgba"])


def test_float64_big_endian_xyz_become_float32_columns():
    layout = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("intensity", 24, 2, 1)]
    values = {"x": [[1.5], [-2.25]], "y": [[1e3], [0.0]], "z": [[-7.0], [3.0]], "intensity": [[200], [7]]}
    message = make_cloud(layout, 25, pack(layout, values, 1, 2, 25, 50, True), big_endian=True)
    np.testing.assert_array_equal(
        read_xyz_intensity(message), np.array([[1.5, 1e3, -7.0, 200.0], [-2.25, 0.0, 3.0, 7.0]], dtype=np.float32)
    )


def test_rclpy_style_data_containers_decode_alike():
    """rclpy delivers ``data`` as array.array('B'); hand-made messages may hold bytes or a list of ints."""
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
    values = {"x": [[1.0], [2.0]], "y": [[3.0], [4.0]], "z": [[5.0], [6.0]]}
    data = pack(layout, values, 1, 2, 12, 24, False)
    fields = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout]
    for container in (array.array("B", data), data, list(data)):
        message = SimpleNamespace(height=1, width=2, fields=fields, is_bigendian=False, point_step=12, row_step=24,
                                  data=container)
        np.testing.assert_array_equal(read_xyz_intensity(message)[:, :3], [[1, 3, 5], [2, 4, 6]])


def _xyzi_cloud(height=1, width=4, big_endian=False):
    order = ">" if big_endian else "<"
    points = np.zeros(height * width, dtype=[("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"),
                                             ("intensity", order + "f4")])
    points["x"] = np.arange(height * width)
    points["y"] = -np.arange(height * width)
    points["z"][1] = np.nan
    points["intensity"] = 0.5
    return points, round_trip(create_cloud(points, header(), TYPES, height=height, is_dense=False))


@pytest.mark.parametrize("big_endian", [False, True])
def test_labelled_cloud_keeps_the_input_and_adds_label_and_score(big_endian):
    points, message = _xyzi_cloud(height=2, width=3, big_endian=big_endian)
    labels = np.array([0, -1, 5, 2, 18, 1], dtype=np.int32)
    scores = np.array([0.9, 0.0, 0.5, 0.25, 1.0, 0.125], dtype=np.float32)
    labelled = round_trip(create_labelled_cloud(message, labels, scores, TYPES))

    assert [f.name for f in labelled.fields] == ["x", "y", "z", "intensity", "label", "score"]
    assert {f.name: f.datatype for f in labelled.fields}["label"] == 4  # UINT16
    assert {f.name: f.datatype for f in labelled.fields}["score"] == 7  # FLOAT32
    assert (labelled.height, labelled.width, labelled.is_dense) == (2, 3, False)
    assert labelled.is_bigendian == big_endian
    assert labelled.header.stamp.sec == 1_700_000_000 and labelled.header.stamp.nanosec == 123
    assert labelled.header.frame_id == "lidar"
    out = read_points(labelled)
    np.testing.assert_array_equal(out["label"], [0, LABEL_IGNORED, 5, 2, 18, 1])
    np.testing.assert_array_equal(out["score"], scores)
    np.testing.assert_array_equal(out["x"], points["x"])
    np.testing.assert_array_equal(out["z"], points["z"])  # NaN stays NaN
    np.testing.assert_array_equal(read_labels(labelled), labels)


def test_labelled_cloud_replaces_label_and_score_fields_of_the_input():
    points = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u2")])
    points["label"] = 7
    message = round_trip(create_cloud(points, header(), TYPES))
    labelled = round_trip(create_labelled_cloud(message, np.array([1, 2, -1]), np.ones(3), TYPES))
    assert [f.name for f in labelled.fields] == ["x", "y", "z", "label", "score"]
    np.testing.assert_array_equal(read_labels(labelled), [1, 2, -1])


def test_labelled_cloud_refuses_wrong_lengths_and_labels():
    _, message = _xyzi_cloud()
    with pytest.raises(PointCloud2Error, match="3 labels and 4 scores for 4 points"):
        create_labelled_cloud(message, np.zeros(3), np.zeros(4), TYPES)
    with pytest.raises(PointCloud2Error, match="labels must be in"):
        create_labelled_cloud(message, np.array([0, 1, 2, 70000]), np.zeros(4), TYPES)


def test_rgb_cloud_packs_colours_as_0x00rrggbb_floats():
    colours = np.array([[255, 0, 128], [1, 2, 3], [0, 0, 0]], dtype=np.uint8)
    packed = pack_rgb(colours)
    np.testing.assert_array_equal(packed.view(np.uint32), [0x00FF0080, 0x00010203, 0])
    np.testing.assert_array_equal(unpack_rgb(packed), colours)

    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    message = round_trip(create_rgb_cloud(header(), xyz, colours, TYPES))
    assert [(f.name, f.offset, f.datatype) for f in message.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7)]
    points = read_points(message)
    np.testing.assert_array_equal(unpack_rgb(points["rgb"]), colours)
    np.testing.assert_array_equal(read_xyz_intensity(message)[:, :3], xyz)


def test_labelled_points_keep_their_class_colours_in_an_rgb_cloud():
    palette = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    colours = label_colors(np.array([1, -1, 0, 1]), palette)  # what the segment node publishes
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    points = read_points(round_trip(create_rgb_cloud(header(), xyz, colours, TYPES)))
    np.testing.assert_array_equal(unpack_rgb(points["rgb"]), [[40, 50, 60], UNLABELLED_RGB, [10, 20, 30], [40, 50, 60]])


XYZ_FIELDS = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]


@pytest.mark.parametrize(
    ("fields", "point_step", "width", "row_step", "data_size", "reason", "message"),
    [
        (XYZ_FIELDS, 12, 4, 48, 47, "data size", "data has 47 bytes, expected height \\* row_step = 1 \\* 48"),
        (XYZ_FIELDS, 12, 4, 48, 52, "data size", "data has 52 bytes"),
        (XYZ_FIELDS, 10, 4, 40, 40, "field beyond point_step", "field 'z' ends at byte 12, beyond point_step 10"),
        (XYZ_FIELDS, 12, 4, 44, 44, "row_step too small", "row_step 44 is smaller than width \\* point_step = 48"),
        ([*XYZ_FIELDS, ("t", 12, 9, 1)], 16, 2, 32, 32, "unknown datatype", "field 't' has unknown datatype 9"),
        ([("y", 0, 7, 1), ("z", 4, 7, 1)], 8, 2, 16, 16, "no x/y/z field", "no x field"),
        ([*XYZ_FIELDS, ("x", 12, 7, 1)], 16, 2, 32, 32, "duplicate field", "duplicate field name 'x'"),
        ([*XYZ_FIELDS, ("i", 12, 7, 0)], 16, 2, 32, 32, "bad field", "field 'i' has count 0"),
    ],
)
def test_malformed_clouds_raise_one_clear_error(fields, point_step, width, row_step, data_size, reason, message):
    cloud = make_cloud(fields, point_step, bytes(data_size), width=width, row_step=row_step)
    with pytest.raises(PointCloud2Error, match=message) as caught:
        read_points(cloud)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_xyz_with_count_is_refused_for_the_segmenter_input():
    cloud = make_cloud([("x", 0, 7, 2), ("y", 8, 7, 1), ("z", 12, 7, 1)], 16, bytes(32))
    assert read_points(cloud)["x"].shape == (2, 2)
    with pytest.raises(PointCloud2Error, match="field 'x' has count > 1"):
        read_xyz_intensity(cloud)


def test_empty_cloud_decodes_to_no_points():
    cloud = make_cloud(XYZ_FIELDS, 12, b"", width=0)
    assert read_points(cloud).shape == (0,) and read_xyz_intensity(cloud).shape == (0, 4)


def test_rclpy_types_fill_sensor_msgs_messages():
    messages = pytest.importorskip("sensor_msgs.msg", reason="ROS 2 sensor_msgs is not installed here")
    from std_msgs.msg import Header

    points, _ = _xyzi_cloud()
    message = create_cloud(points, Header(frame_id="lidar"), PointCloud2Types.from_rclpy())
    assert isinstance(message, messages.PointCloud2)
    np.testing.assert_array_equal(read_points(message)["x"], points["x"])


@st.composite
def cloud_layouts(draw):
    """A random valid layout: x, y, z plus up to 3 more fields in random order, types, gaps and counts."""
    extra = draw(st.lists(st.sampled_from(["intensity", "ring", "t", "rgb", "normal"]), max_size=3, unique=True))
    names = draw(st.permutations(["x", "y", "z", *extra]))
    layout, offset = [], 0
    for name in names:
        datatype = draw(st.integers(1, 8))
        count = 1 if name in "xyz" else draw(st.integers(1, 3))
        offset += draw(st.integers(0, 3))  # padding between fields, unaligned offsets allowed
        layout.append((name, offset, datatype, count))
        offset += SIZES[datatype] * count
    point_step = offset + draw(st.integers(0, 5))
    height, width = draw(st.integers(1, 3)), draw(st.integers(0, 5))
    row_step = point_step * width + draw(st.sampled_from([0, 0, 1, 7]))
    return layout, point_step, height, width, row_step, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(cloud_layouts())
def test_random_layouts_decode_to_the_values_packed(case):
    layout, point_step, height, width, row_step, big_endian, seed = case
    rng = np.random.default_rng(seed)
    values = {name: [random_values(datatype, count, rng) for _ in range(height * width)]
              for name, _, datatype, count in layout}
    data = pack(layout, values, height, width, point_step, row_step, big_endian)
    message = make_cloud(layout, point_step, data, height=height, width=width, row_step=row_step,
                         big_endian=big_endian)
    points = read_points(message)
    assert points.shape == (height * width,)
    for name, _, _, count in layout:
        expected = np.array(values[name], dtype=points.dtype.fields[name][0].base).reshape(height * width, count)
        np.testing.assert_array_equal(points[name].reshape(height * width, count), expected)
    if height * width and row_step == point_step * width:
        assert np.shares_memory(points, message.data)

    # Encoding what was decoded gives the same points back (the layout as numpy holds it, padding dropped).
    again = read_points(round_trip(create_cloud(points, header(), TYPES, height=height, width=width)))
    for name, *_ in layout:
        np.testing.assert_array_equal(again[name], points[name])
