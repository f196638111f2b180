"""Every bad input gets one clear error (issue 12): crafted checkpoints, clouds and command lines, and a fuzz
test of the PointCloud2 decoder.

Each case asserts the exact error class (or exit status), and that the message names the cause: the field of
a checkpoint, the reason of a cloud, the file or option of a command. Commands also print exactly one
``error: ...`` line on stderr and no traceback.
"""

from __future__ import annotations

import array
import copy
import math
import os
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_random_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

import node_latency
from clip_seg3d_ros.checkpoint import CheckpointError, load_model
from clip_seg3d_ros.ros.pointcloud2 import (
    PointCloud2Error,
    PointCloud2Types,
    create_cloud,
    read_points,
    read_xyz_intensity,
)
from clip_seg3d_ros.runtime.runtime import SegmentRuntime
from clip_seg3d_ros.runtime.settings import RuntimeSettings
from clip_seg3d_ros.tools import replay, to_bag

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
TYPES = PointCloud2Types.from_rosbags(TYPESTORE)
CLOUD = "sensor_msgs/msg/PointCloud2"
CLASSES = ["road", "car", "vegetation"]
DELETE = object()  # a field left out of the checkpoint


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("good") / "model.pt", CLASSES, [True, True, False])


@pytest.fixture(scope="module")
def good_payload(good_checkpoint) -> dict:
    return torch.load(good_checkpoint, weights_only=True)


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# -- checkpoints: each field wrong in turn ----------------------------------------------------------------------------

# (field path: top-level key, then one key inside it; the value it gets (DELETE: left out); words the error names)
BAD_FIELDS = [
    ("format", "clip_seg3d_ros.other", "not a clip_seg3d_ros checkpoint"),
    ("format", DELETE, "not a clip_seg3d_ros checkpoint"),
    ("format_version", 0, "format version 0 is not supported"),
    ("format_version", 2, "format version 2 is not supported"),
    ("format_version", "1", "format version '1' is not supported"),
    ("format_version", True, "format version True is not supported"),
    ("model_config", DELETE, "checkpoint is missing ['model_config']"),
    ("model_state", DELETE, "checkpoint is missing ['model_state']"),
    ("vocabulary", DELETE, "checkpoint is missing ['vocabulary']"),
    ("weights", {}, "unknown field(s) ['weights']"),
    ("clip_model", 5, "field 'clip_model' must be a string"),
    ("clip_model", None, "field 'clip_model' must be a string"),
    ("train_config", [1, 2], "field 'train_config' must be a dict, got list"),
    ("train_config", "lr=0.1", "field 'train_config' must be a dict, got str"),
    ("metrics", 12.5, "field 'metrics' must be a dict, got float 12.5"),
    ("training_state", [3], "field 'training_state' must be a dict, got list"),
    ("training_state", "epoch 3", "field 'training_state' must be a dict"),
    # model config
    ("model_config", [0.2], "field 'model_config' must be a dict, got list"),
    ("model_config.voxel_size", 0.0, "field 'model_config.voxel_size' must be a finite number > 0, got float 0.0"),
    ("model_config.voxel_size", 0, "field 'model_config.voxel_size' must be a finite number > 0, got int 0"),
    ("model_config.voxel_size", -0.2, "field 'model_config.voxel_size' must be a finite number > 0"),
    ("model_config.voxel_size", math.nan, "field 'model_config.voxel_size' must be a finite number > 0, got float nan"),
    ("model_config.voxel_size", math.inf, "field 'model_config.voxel_size' must be a finite number > 0, got float inf"),
    ("model_config.voxel_size", "0.2", "field 'model_config.voxel_size' must be a finite number > 0, got str '0.2'"),
    ("model_config.voxel_size", True, "field 'model_config.voxel_size' must be a finite number > 0, got bool True"),
    ("model_config.voxel_size", None, "field 'model_config.voxel_size' must be a finite number > 0, got None"),
    ("model_config.temperature", 0, "field 'model_config.temperature' must be a finite number > 0, got int 0"),
    ("model_config.temperature", -0.01, "field 'model_config.temperature' must be a finite number > 0"),
    ("model_config.temperature", math.nan, "field 'model_config.temperature' must be a finite number > 0"),
    ("model_config.temperature", "0.01", "field 'model_config.temperature' must be a finite number > 0, got str"),
    ("model_config.intensity_scale", 0.0, "field 'model_config.intensity_scale' must be a finite number > 0"),
    ("model_config.intensity_scale", math.inf, "field 'model_config.intensity_scale' must be a finite number > 0"),
    ("model_config.embed_dim", 0, "field 'model_config.embed_dim' must be an integer >= 1, got int 0"),
    ("model_config.embed_dim", 16.0, "field 'model_config.embed_dim' must be an integer >= 1, got float 16.0"),
    ("model_config.embed_dim", "16", "field 'model_config.embed_dim' must be an integer >= 1"),
    ("model_config.embed_dim", 32, "field 'vocabulary.text_embeddings' must be a (C, D) = (3, 32) tensor"),
    ("model_config.blocks_per_stage", 0, "field 'model_config.blocks_per_stage' must be an integer >= 1"),
    ("model_config.blocks_per_stage", 1.5, "field 'model_config.blocks_per_stage' must be an integer >= 1"),
    ("model_config.channels", [16] * 8, "field 'model_config.channels' must be a list of 9 integers >= 1"),
    ("model_config.channels", [16.0] * 9, "field 'model_config.channels' must be a list of 9 integers >= 1"),
    ("model_config.channels", [16] * 8 + [0], "field 'model_config.channels' must be a list of 9 integers >= 1"),
    ("model_config.channels", "16",
     "field 'model_config.channels' must be a list of 9 integers >= 1 (stem, 4 encoder, 4 decoder), got str"),
    ("model_config.channels", [8] * 9, "weights do not fit the model config"),
    ("model_config.preset", "huge", "field 'model_config.preset' must be one of ['half', 'small', 'standard']"),
    ("model_config.preset", ["small"], "field 'model_config.preset' must be one of"),
    ("model_config.use_intensity", "yes", "field 'model_config.use_intensity' must be true or false, got str"),
    ("model_config.use_intensity", 1, "field 'model_config.use_intensity' must be true or false, got int 1"),
    ("model_config.use_intensity", False, "weights do not fit the model config"),  # 3 input features, not 4
    ("model_config.voxelsize", 0.2, "unknown field(s) ['model_config.voxelsize']"),
    # weights
    ("model_state", [], "field 'model_state' must be a dict, got list"),
    ("model_state.projection.weight", [[0.0] * 32] * 16, "field 'model_state.projection.weight' must be a tensor"),
    ("model_state.projection.bias", torch.full((16,), math.nan), "field 'model_state.projection.bias' must be finite"),
    ("model_state.projection.bias", torch.zeros(3), "weights do not fit the model config"),
    ("model_state.projection.bias", DELETE, "weights do not fit the model config"),
    ("model_state.head.weight", torch.zeros(1), "weights do not fit the model config"),
    # vocabulary
    ("vocabulary", "road car", "field 'vocabulary' must be a dict, got str"),
    ("vocabulary.names", "road", "field 'vocabulary.names' must be a non-empty list of non-empty strings"),
    ("vocabulary.names", [],
     "field 'vocabulary.names' must be a non-empty list of non-empty strings (the class names), got list"),
    ("vocabulary.names", ["road", "", "car"], "field 'vocabulary.names' must be a non-empty list of non-empty"),
    ("vocabulary.names", ["road", "  ", "car"], "field 'vocabulary.names' must be a non-empty list of non-empty"),
    ("vocabulary.names", ["road", 3, "car"], "field 'vocabulary.names' must be a non-empty list of non-empty"),
    ("vocabulary.names", ["road", "road", "car"], "field 'vocabulary.names' must be unique class names"),
    ("vocabulary.names", ["road", "car"], "field 'vocabulary.text_embeddings' must be a (C, D) = (2, 16) tensor"),
    ("vocabulary.names", DELETE,
     "field 'vocabulary.names' must be a non-empty list of non-empty strings (the class names), got None"),
    ("vocabulary.text_embeddings", [[0.1] * 16] * 3,
     "field 'vocabulary.text_embeddings' must be a (C, D) floating-point tensor, got list"),
    ("vocabulary.text_embeddings", torch.ones(3 * 16), "must be a (C, D) floating-point tensor, got a tensor of"),
    ("vocabulary.text_embeddings", torch.ones(3, 16, dtype=torch.int64), "tensor of dtype int64 and shape (3, 16)"),
    ("vocabulary.text_embeddings", torch.ones(3, 8), "must be a (C, D) = (3, 16) tensor"),
    ("vocabulary.text_embeddings", torch.ones(4, 16), "must be a (C, D) = (3, 16) tensor"),
    ("vocabulary.text_embeddings", torch.full((3, 16), math.nan), "field 'vocabulary.text_embeddings' must be finite"),
    ("vocabulary.text_embeddings", torch.zeros(3, 16), "field 'vocabulary.text_embeddings' must be non-zero"),
    ("vocabulary.text_embeddings", DELETE, "field 'vocabulary.text_embeddings' must be a (C, D)"),
    ("vocabulary.seen", [True, False], "field 'vocabulary.seen' must be a list of 3 booleans"),
    ("vocabulary.seen", [1, 0, 1], "field 'vocabulary.seen' must be a list of 3 booleans"),
    ("vocabulary.seen", "yes",
     "field 'vocabulary.seen' must be a list of 3 booleans (one per class name), got str 'yes'"),
    ("vocabulary.prompt_templates", "a photo of a {}.", "field 'vocabulary.prompt_templates' must be a list of"),
    ("vocabulary.prompt_templates", [1], "field 'vocabulary.prompt_templates' must be a list of strings"),
    ("vocabulary.classes", [], "unknown field(s) ['vocabulary.classes']"),
]


def _with_field(payload: dict, field_path: str, value) -> dict:
    """A copy of ``payload`` with one field changed (keys inside model_state contain dots themselves)."""
    payload = copy.deepcopy(payload)
    top, _, key = field_path.partition(".")
    container, name = (payload[top], key) if key else (payload, top)
    if value is DELETE:
        container.pop(name, None)
    else:
        container[name] = value
    return payload


@pytest.mark.parametrize(("field_path", "value", "words"), BAD_FIELDS,
                         ids=[f"{field}={value!r}"[:60] for field, value, _ in BAD_FIELDS])
def test_each_wrong_checkpoint_field_is_one_error_naming_it(good_payload, tmp_path, field_path, value, words):
    path = tmp_path / "model.pt"
    torch.save(_with_field(good_payload, field_path, value), path)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = _one_line(caught.value)
    assert message.startswith(f"{path}: ") and words in message, message


def test_the_untouched_payload_loads(good_payload, tmp_path):
    """The cases above fail for their change, not for the way they are written."""
    path = tmp_path / "model.pt"
    torch.save(_with_field(good_payload, "metrics", {"miou": 1.0}), path)
    checkpoint, _ = load_model(path)
    assert checkpoint.vocabulary.names == CLASSES and checkpoint.metrics == {"miou": 1.0}


# -- checkpoints: files that are not one ------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would call ``function(*arguments)``: code a checkpoint must never be able to run."""

    def __init__(self, function, *arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _zip_not_from_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


UNLOADABLE_FILES = {
    "empty file": (lambda path, good: path.write_bytes(b""), "not a checkpoint (not a PyTorch file, or corrupt)"),
    "random bytes": (lambda path, good: path.write_bytes(np.random.default_rng(0).bytes(4096)),
                     "not a checkpoint (not a PyTorch file, or corrupt)"),
    "text file": (lambda path, good: path.write_text("model: small\n"), "not a checkpoint (not a PyTorch file"),
    "plain pickle": (lambda path, good: path.write_bytes(pickle.dumps({"format": "clip_seg3d_ros.checkpoint"})),
                     "not a checkpoint (not a PyTorch file, or corrupt)"),
    "truncated to half": (lambda path, good: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
                          "truncated or corrupt checkpoint (a damaged PyTorch file: PytorchStreamReader failed"),
    "truncated to 20 kB": (lambda path, good: path.write_bytes(good.read_bytes()[:20_000]),  # torch: OSError
                           "truncated or corrupt checkpoint (a damaged PyTorch file); write or copy it again"),
    "zip from elsewhere": (lambda path, good: _zip_not_from_torch(path), "truncated or corrupt checkpoint"),
    "os.system global": (lambda path, good: torch.save({"m": _Payload(os.system, f"touch {path}.ran")}, path),
                         "Unsupported global: GLOBAL posix.system"),
    "numpy array": (lambda path, good: torch.save({"format": "clip_seg3d_ros.checkpoint", "x": np.zeros(3)}, path),
                    "Unsupported global: GLOBAL numpy"),
    "a list": (lambda path, good: torch.save([1, 2], path), "not a clip_seg3d_ros checkpoint"),
    "a directory": (lambda path, good: path.mkdir(), "no such checkpoint file"),
    "missing": (lambda path, good: None, "no such checkpoint file"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle, not the test's
@pytest.mark.parametrize("kind", sorted(UNLOADABLE_FILES))
def test_files_that_are_not_checkpoints_are_one_error_saying_what_they_are(kind, good_checkpoint, tmp_path):
    write, words = UNLOADABLE_FILES[kind]
    path = tmp_path / "model.pt"
    write(path, good_checkpoint)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = _one_line(caught.value)
    assert message.startswith(f"{path}: ") and words in message, message
    assert "weights_only" not in message and "Re-running" not in message  # never PyTorch's "load it unsafely"
    if "global" in kind:
        assert "clip_seg3d_ros checkpoints never do" in message
    assert not Path(f"{path}.ran").exists()


# -- clouds -----------------------------------------------------------------------------------------------------------


def _xyz_cloud(num_points: int = 4, values: float = 1.0):
    """A CDR-round-tripped x, y, z, intensity float32 cloud (what a bag reader or a subscriber gets)."""
    points = np.full(num_points, values, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    header = TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="lidar")
    return create_cloud(points, header, TYPES)


def _round_trip(message):
    return TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(message, CLOUD), CLOUD)


def _set(path: str, value):
    def change(message):
        if path.startswith("fields."):
            _, index, name = path.split(".")
            setattr(message.fields[int(index)], name, value)
        else:
            setattr(message, path, value)
    return change


# (what is changed, the change, the decoder's reason). All values are legal for the message's uint32 fields.
BAD_CLOUDS = [
    ("point_step 2**31", _set("point_step", 2**31), "layout too large"),
    ("point_step 2**32-1", _set("point_step", 2**32 - 1), "layout too large"),
    ("offset 2**31", _set("fields.3.offset", 2**31), "layout too large"),
    ("offset 2**32-1", _set("fields.0.offset", 2**32 - 1), "layout too large"),
    ("count 2**31", _set("fields.3.count", 2**31), "layout too large"),
    ("width 2**31", _set("width", 2**31), "layout too large"),
    ("height 2**32-1", _set("height", 2**32 - 1), "layout too large"),
    ("row_step 2**32-1", _set("row_step", 2**32 - 1), "data size"),
    ("row_step 0", _set("row_step", 0), "row_step too small"),
    ("point_step 0", _set("point_step", 0), "field beyond point_step"),
    ("offset past the point", _set("fields.2.offset", 14), "field beyond point_step"),
    ("datatype 0", _set("fields.1.datatype", 0), "unknown datatype"),
    ("datatype 255", _set("fields.1.datatype", 255), "unknown datatype"),
    ("count 0", _set("fields.3.count", 0), "bad field"),
    ("empty field name", _set("fields.3.name", ""), "bad field"),
    ("duplicate name", _set("fields.3.name", "x"), "duplicate field"),
    ("no z", _set("fields.2.name", "elevation"), "no x/y/z field"),
    ("no fields", _set("fields", []), "no x/y/z field"),
    ("data cut short", lambda message: setattr(message, "data", message.data[:-1]), "data size"),
    ("data too long", lambda message: setattr(message, "data", np.zeros(len(message.data) + 16, np.uint8)),
     "data size"),
]


@pytest.mark.parametrize(("change", "reason"), [case[1:] for case in BAD_CLOUDS], ids=[case[0] for case in BAD_CLOUDS])
def test_each_malformed_cloud_is_a_decoder_error_with_a_named_reason(change, reason):
    message = _xyz_cloud()
    change(message)
    message = _round_trip(message)  # the change is a legal message, not only a legal Python object
    for decode in (read_points, read_xyz_intensity):
        with pytest.raises(PointCloud2Error) as caught:
            decode(message)
        assert caught.value.reason == reason, _one_line(caught.value)


def test_xyz_with_count_is_a_named_reason_for_the_segmenter_input():
    message = _xyz_cloud()
    message.fields[0].count = 2
    message.fields[0].offset, message.point_step, message.row_step = 8, 16, 64  # x: 2 floats, overlapping z
    with pytest.raises(PointCloud2Error) as caught:
        read_xyz_intensity(_round_trip(message))
    assert caught.value.reason == "field count > 1"


@pytest.mark.parametrize(("height", "width"), [(1, 0), (0, 5), (0, 0)])
def test_empty_clouds_decode_to_no_points(height, width):
    """Not an error for the decoder (replay counts them as "empty cloud"; test_replay.py)."""
    message = _xyz_cloud(0)
    message.height, message.width = height, width
    message.row_step = message.point_step * width
    assert read_xyz_intensity(_round_trip(message)).shape == (0, 4)


def test_nan_points_decode_and_are_labelled_ignored(good_checkpoint):
    """NaN/inf coordinates are kept by the decoder and labelled -1 (ignored) with score 0 by the node's runtime."""
    message = _xyz_cloud(6, values=1.0)
    points = read_points(_round_trip(message)).copy()
    points["x"][:3] = [np.nan, np.inf, -np.inf]
    xyzi = read_xyz_intensity(_round_trip(create_cloud(points, message.header, TYPES)))
    assert np.isnan(xyzi[0, 0]) and np.isinf(xyzi[1:3, 0]).all()
    runtime = SegmentRuntime.load(RuntimeSettings(checkpoint=str(good_checkpoint), device="cpu"))
    result = runtime.process(xyzi)
    assert list(result.labels[:3]) == [-1, -1, -1] and list(result.scores[:3]) == [0, 0, 0]
    assert (result.labels[3:] >= 0).all()
    all_nan = runtime.process(np.full((5, 4), np.nan, dtype=np.float32))
    assert (all_nan.labels == -1).all()


# -- the decoder, fuzzed: only PointCloud2Error ever escapes ----------------------------------------------------------

UINT32_EDGES = [0, 1, 2**31 - 1, 2**31, 2**32 - 1]
_sizes = st.one_of(st.integers(0, 40), st.sampled_from(UINT32_EDGES))
_fields = st.builds(
    SimpleNamespace,
    name=st.one_of(st.sampled_from(["x", "y", "z", "intensity", "", "label"]), st.text(max_size=4)),
    offset=_sizes, datatype=st.integers(0, 255), count=st.one_of(st.integers(0, 4), st.sampled_from(UINT32_EDGES)),
)
_xyz_fields = st.just([SimpleNamespace(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")])


@st.composite
def random_messages(draw):
    """Messages with any legal field values. Half of them have a small, self-consistent size (row_step fits the
    width, data fits height * row_step) so that decoding gets past the size checks into the layout and the
    bytes; the others have any sizes, uint32 extremes included, and any data."""
    fields = draw(st.one_of(_xyz_fields, st.lists(_fields, max_size=5), _xyz_fields.flatmap(
        lambda xyz: st.lists(_fields, max_size=2).map(lambda extra: xyz + extra))))
    if draw(st.booleans()):
        height, width, point_step = draw(st.integers(0, 3)), draw(st.integers(0, 6)), draw(st.integers(12, 40))
        row_step = point_step * width + draw(st.sampled_from([0, 0, 1, 5]))
        data = draw(st.binary(min_size=height * row_step, max_size=height * row_step))
    else:
        height, width, point_step, row_step = draw(_sizes), draw(_sizes), draw(_sizes), draw(_sizes)
        data = draw(st.binary(max_size=256))
    container = draw(st.sampled_from(["bytes", "numpy", "array", "list"]))
    data = {"bytes": data, "numpy": np.frombuffer(data, np.uint8), "array": array.array("B", data),
            "list": list(data)}[container]
    return SimpleNamespace(height=height, width=width, fields=fields, is_bigendian=draw(st.booleans()),
                           point_step=point_step, row_step=row_step, data=data, is_dense=draw(st.booleans()))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_messages())
def test_fuzzed_messages_only_ever_raise_pointcloud2_error(message):
    for decode in (read_points, read_xyz_intensity):
        try:
            decoded = decode(message)
        except PointCloud2Error as error:
            assert error.reason and error.reason != "malformed", error  # every failure has a named reason
            continue
        assert len(decoded) == message.height * message.width


# -- command lines ----------------------------------------------------------------------------------------------------


def _assert_one_error_line(capsys, words: str) -> str:
    """Exactly one line on stderr besides to_bag's progress bar."""
    error = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("to_bag:"))
    assert error.startswith("error: ") and len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert words in error, error
    return error


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    """Two 2,000-point clouds on /points."""
    path = tmp_path_factory.mktemp("bag") / "small"
    rng = np.random.default_rng(0)
    with Writer(path, version=8) as writer:
        connection = writer.add_connection("/points", CLOUD, typestore=TYPESTORE)
        for index in range(2):
            message = _xyz_cloud(2000)
            points = read_points(message).copy()
            for axis in ("x", "y", "z"):
                points[axis] = rng.uniform(-10, 10, 2000)
            cloud = create_cloud(points, message.header, TYPES)
            writer.write(connection, 10**9 * (index + 1), TYPESTORE.serialize_cdr(cloud, CLOUD))
    return path


def _bad_checkpoint(folder: Path, good_payload: dict, field_path: str, value) -> Path:
    path = folder / "bad.pt"
    torch.save(_with_field(good_payload, field_path, value), path)
    return path


REPLAY_CASES = [
    # (name, arguments after the bag: {ckpt} is a good checkpoint, {bad:<field>=<value>} a bad one; words)
    ("missing checkpoint", ["--checkpoint", "{tmp}/absent.pt"], "no such checkpoint file"),
    ("random checkpoint", ["--checkpoint", "{random}"], "not a checkpoint (not a PyTorch file, or corrupt)"),
    ("voxel_size string", ["--checkpoint", "{bad:model_config.voxel_size}"], "field 'model_config.voxel_size'"),
    ("temperature 0", ["--checkpoint", "{bad:model_config.temperature}"], "field 'model_config.temperature'"),
    ("embeddings a list", ["--checkpoint", "{bad:vocabulary.text_embeddings}"], "field 'vocabulary.text_embeddings'"),
    ("names one string", ["--checkpoint", "{bad:vocabulary.names}"], "field 'vocabulary.names'"),
    ("unknown device", ["--checkpoint", "{ckpt}", "--device", "tpu"], "device 'tpu' is not a device"),
    ("unknown class", ["--checkpoint", "{ckpt}", "--vocabulary", "road", "zebra"], "zebra"),
]
REPLAY_BAD_VALUES = {"model_config.voxel_size": "0.2", "model_config.temperature": 0,
                     "vocabulary.text_embeddings": [[0.1] * 16] * 3, "vocabulary.names": "road"}


@pytest.mark.parametrize(("arguments", "words"), [case[1:] for case in REPLAY_CASES],
                         ids=[case[0] for case in REPLAY_CASES])
def test_replay_command_gives_one_error_line(arguments, words, small_bag, good_checkpoint, good_payload, tmp_path,
                                             capsys):
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(np.random.default_rng(1).bytes(1000))
    filled = []
    for argument in arguments:
        if argument.startswith("{bad:"):
            field = argument[5:-1]
            argument = str(_bad_checkpoint(tmp_path, good_payload, field, REPLAY_BAD_VALUES[field]))
        filled.append(argument.format(tmp=tmp_path, random=random_file, ckpt=good_checkpoint))
    out = tmp_path / "labelled"
    assert replay.main([str(small_bag), *filled, "--out", str(out), "--no-progress"]) == 1
    _assert_one_error_line(capsys, words)
    assert not out.exists()


BENCH_CASES = [
    ("missing scan", ["--points", "{tmp}/absent.bin"], "absent.bin: No such file or directory"),
    ("scan is a folder", ["--points", "{tmp}"], "Is a directory"),
    ("bin of 7 floats", ["--points", "{seven}"], "not a whole number of 4-value points"),
    ("npy of objects", ["--points", "{objects}"], "holds Python objects"),
    ("npy of shape (5,)", ["--points", "{flat}"], "expected (N, 3) or (N, 4) points, got (5,)"),
    ("random checkpoint", ["--checkpoint", "{random}"], "not a checkpoint (not a PyTorch file, or corrupt)"),
    ("missing checkpoint", ["--checkpoint", "{tmp}/absent.pt"], "no such checkpoint file"),
    ("unknown device", ["--device", "tpu"], "device 'tpu' is not a device"),
    ("absent cuda device", ["--device", "cuda:7"], "device 'cuda:7'"),
    ("torchsparse on the cpu", ["--device", "cpu", "--backend", "torchsparse"], "torchsparse backend needs"),
]


@pytest.mark.parametrize(("arguments", "words"), [case[1:] for case in BENCH_CASES],
                         ids=[case[0] for case in BENCH_CASES])
def test_bench_command_gives_one_error_line(arguments, words, tmp_path, capsys):
    np.zeros(7, dtype=np.float32).tofile(tmp_path / "seven.bin")
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(2).bytes(1000))
    filled = [argument.format(tmp=tmp_path, seven=tmp_path / "seven.bin", objects=tmp_path / "objects.npy",
                              flat=tmp_path / "flat.npy", random=tmp_path / "random.pt") for argument in arguments]
    common = ["--preset", "small", "--num-points", "1000", "--warmup", "0", "--repeats", "1"]
    assert node_latency.main([*common, *filled]) == 1
    _assert_one_error_line(capsys, words)


def _folder_dataset(root: Path, calib: str | None, scan: bytes) -> Path:
    (root / "scans").mkdir(parents=True)
    (root / "scans" / "000000.bin").write_bytes(scan)
    if calib is not None:
        (root / "calib.yaml").write_text(calib)
    return root


TO_BAG_CASES = [
    ("kitti without --root", ["--dataset", "semantickitti"], "--dataset semantickitti needs --root"),
    ("missing root", ["--dataset", "semantickitti", "--root", "{tmp}/absent"], "absent: no such folder"),
    ("root is a file", ["--dataset", "folder", "--root", "{file}"], "no such folder"),
    ("kitti root without scans", ["--dataset", "semantickitti", "--root", "{empty}"], "no scans in"),
    ("nuscenes root without tables", ["--dataset", "nuscenes", "--root", "{empty}"], "no nuScenes tables"),
    ("folder root without scans", ["--dataset", "folder", "--root", "{empty}"], "no .bin or .npy scans"),
    ("calib.yaml not YAML", ["--dataset", "folder", "--root", "{bad_yaml}"], "calib.yaml: not valid YAML"),
    ("camera entry without K", ["--dataset", "folder", "--root", "{bad_camera}"], "invalid camera entry"),
    ("scan of 7 floats", ["--dataset", "folder", "--root", "{bad_scan}"], "not a whole number of 4-value points"),
    ("existing --out", ["--dataset", "synthetic", "--scenes", "1", "--no-images", "--out", "{empty}"], "exists"),
]


@pytest.mark.parametrize(("arguments", "words"), [case[1:] for case in TO_BAG_CASES],
                         ids=[case[0] for case in TO_BAG_CASES])
def test_to_bag_command_gives_one_error_line_and_no_partial_bag(arguments, words, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder")
    good_scan = np.zeros((10, 4), dtype=np.float32).tobytes()
    _folder_dataset(tmp_path / "bad_yaml", "classes: [road, car\n", good_scan)
    _folder_dataset(tmp_path / "bad_camera", "cameras:\n  - name: front\n    width: 10\n", good_scan)
    _folder_dataset(tmp_path / "bad_scan", None, np.zeros(7, dtype=np.float32).tobytes())
    filled = [argument.format(tmp=tmp_path, file=tmp_path / "file", empty=tmp_path / "empty",
                              bad_yaml=tmp_path / "bad_yaml", bad_camera=tmp_path / "bad_camera",
                              bad_scan=tmp_path / "bad_scan") for argument in arguments]
    out = tmp_path / "bag"
    if "--out" not in filled:
        filled += ["--out", str(out)]
    assert to_bag.main(filled) == 1
    _assert_one_error_line(capsys, words)
    assert not out.exists()
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # an existing --out is kept


ARGPARSE_CASES = [
    (node_latency.main, ["--repeats", "0"], "argument --repeats: must be an integer >= 1"),
    (node_latency.main, ["--warmup", "-1"], "argument --warmup: must be an integer >= 0"),
    (node_latency.main, ["--num-points", "0"], "argument --num-points: must be an integer >= 1"),
    (node_latency.main, ["--voxel-size", "nan"], "argument --voxel-size: must be a number of metres > 0"),
    (node_latency.main, ["--voxel-size", "0"], "argument --voxel-size: must be a number of metres > 0"),
    (to_bag.main, ["--dataset", "synthetic", "--scenes", "0", "--out", "x"], "argument --scenes: must be an"),
    (to_bag.main, ["--dataset", "synthetic", "--limit", "-2", "--out", "x"], "argument --limit: must be an"),
    (replay.main, ["bag"], "the following arguments are required: --checkpoint"),
    # The node's settings, checked by the settings schema as replay parses them.
    (replay.main, ["bag", "--checkpoint", "m.pt", "--score-threshold", "1.5"], "'score_threshold' must be in [0, 1]"),
    (replay.main, ["bag", "--checkpoint", "m.pt", "--calibration-bias", "nan"], "'calibration_bias' must be a finite"),
    (replay.main, ["bag", "--checkpoint", "m.pt", "--num-threads", "100000"], "'num_threads' must be in [0, 256]"),
]


@pytest.mark.parametrize(("main", "arguments", "words"), ARGPARSE_CASES,
                         ids=[f"{main.__module__.rsplit('.', 1)[-1]} {' '.join(arguments)}"
                              for main, arguments, _ in ARGPARSE_CASES])
def test_bad_option_values_are_refused_by_the_parser(main, arguments, words, capsys):
    """argparse's usage line plus one ``error: ...`` line, exit status 2, before anything is loaded."""
    with pytest.raises(SystemExit) as caught:
        main(arguments)
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error and ": error: " in error.splitlines()[-1] and words in error.splitlines()[-1], error


def test_replay_metrics_that_cannot_be_written_are_one_error_line(small_bag, good_checkpoint, tmp_path, capsys):
    """The labelled bag and the metrics are one output: when the metrics cannot be written, no bag is kept."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert replay.main([str(small_bag), "--checkpoint", str(good_checkpoint), "--metrics", f"{blocker}/m.json",
                        "--out", str(tmp_path / "runs" / "labelled"), "--no-progress"]) == 1
    _assert_one_error_line(capsys, f"{blocker}: Not a directory")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # no bag, no runs/ folder


def test_scan_files_that_are_not_points_are_one_clear_error(tmp_path):
    from clip_seg3d_ros.datasets.scan_file import read_scan

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    words = tmp_path / "words.npy"
    np.save(words, np.array([["a", "b", "c"]]))
    for path, message in [(garbage, "not a numpy array"), (objects, "not a numpy array"), (words, "numbers")]:
        with pytest.raises(ValueError, match=message) as caught:
            read_scan(path)
        assert "unsafe" not in str(caught.value)


def test_a_folder_calibration_that_is_not_a_mapping_is_one_clear_error(tmp_path):
    from clip_seg3d_ros.datasets.folder import FolderDataset

    (tmp_path / "scans").mkdir()
    np.zeros((4, 4), dtype=np.float32).tofile(tmp_path / "scans" / "a.bin")
    for text, message in [("- a\n- b\n", "expected a mapping of classes"), ("classes: [car\n", "not valid YAML")]:
        (tmp_path / "calib.yaml").write_text(text)
        with pytest.raises(ValueError, match=message):
            FolderDataset(tmp_path)
