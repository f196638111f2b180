"""The settings schema (clip_seg3d_ros/runtime/settings.py, clip_seg3d_ros/nodes/settings.py) and what is made
from it, checked without ROS: each setting's rules, config/segment.yaml, replay's options and the warning for a
misspelt parameter. The node's descriptors under real ROS: test_node_ros.py."""

import math
import re

import pytest
import yaml
from conftest import REPO_ROOT

from clip_seg3d_ros.nodes.settings import (
    NODE_NAME,
    NODE_PARAMETERS,
    NODE_SCHEMA,
    NodeSettings,
    node_parameter,
    unknown_parameter_warnings,
)
from clip_seg3d_ros.runtime.settings import (
    RUNTIME_PARAMETERS,
    RUNTIME_SCHEMA,
    RuntimeSettings,
    Settings,
    setting,
    string_list,
)
from clip_seg3d_ros.tools import replay

FLOATS = [entry for entry in NODE_PARAMETERS if entry.type is float]
NUMBERS = [entry for entry in NODE_PARAMETERS if entry.type in (int, float)]
WITH_CHOICES = [entry for entry in NODE_PARAMETERS if entry.choices]


def ids(entries) -> list[str]:
    return [entry.name for entry in entries]


# --- the schema itself ------------------------------------------------------------------------------------------

def test_every_parameter_is_declared_once_with_a_description_and_a_usable_default():
    names = ids(NODE_PARAMETERS)
    assert len(names) == len(set(names))  # one parameter, one owner
    assert names == RuntimeSettings.names() + NodeSettings.names()
    assert "cpu_matmul" in RuntimeSettings.names()
    for entry in NODE_PARAMETERS:
        assert entry.description and "\n" not in entry.description, entry.name
        if not entry.required:
            assert entry.check(entry.default) == entry.default, entry.name
    assert RuntimeSettings() == RuntimeSettings(**{entry.name: entry.default for entry in RUNTIME_SCHEMA})
    assert NodeSettings() == NodeSettings(**{entry.name: entry.default for entry in NODE_SCHEMA})


def test_only_the_four_runtime_settings_can_change_while_running():
    changeable = {entry.name for entry in NODE_PARAMETERS if entry.changeable}
    assert changeable == set(RUNTIME_PARAMETERS) == {"vocabulary", "score_threshold", "calibration_bias",
                                                     "fusion_weight"}
    assert not node_parameter("cpu_matmul").changeable


def test_every_number_is_bounded_on_both_sides():
    for entry in NUMBERS:
        assert entry.minimum is not None and entry.maximum is not None, entry.name
        assert entry.minimum <= entry.default <= entry.maximum, entry.name
    for entry in NODE_PARAMETERS:
        if entry.type not in (int, float):
            assert entry.minimum is None and entry.maximum is None, entry.name


def test_the_bounds_that_protect_the_machine():
    bounds = {entry.name: (entry.minimum, entry.maximum) for entry in NUMBERS}
    assert bounds == {
        "score_threshold": (0.0, 1.0),
        "max_points": (0, 10_000_000),
        "calibration_bias": (-2.0, 2.0),
        "fusion_weight": (0.0, 1.0),
        "num_threads": (0, 256),
        "queue_size": (1, 100),
        "slop": (0.0, 1.0),
        "tf_timeout": (0.0, 1.0),
        "diagnostics_period": (0.01, 3600.0),
    }


def test_a_field_annotated_with_another_type_than_its_default_is_refused():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Wrong(Settings):
        weight: float = setting(0, "an int default for a float")

    with pytest.raises(TypeError, match="Wrong.weight"):
        Wrong.schema()


# --- one value's rules: type, finite, range, choices --------------------------------------------------------------

@pytest.mark.parametrize("entry", FLOATS, ids=ids(FLOATS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_for_every_float(entry, bad):
    message = f"parameter '{entry.name}' must be a finite number, got {bad}"
    with pytest.raises(ValueError) as error:
        node_parameter(entry.name).check(bad)
    assert str(error.value) == message
    settings_class = RuntimeSettings if entry in RUNTIME_SCHEMA else NodeSettings
    with pytest.raises(ValueError, match=re.escape(message)):
        settings_class.with_values({entry.name: bad})


@pytest.mark.parametrize("entry", NUMBERS, ids=ids(NUMBERS))
def test_each_bound_is_kept_and_one_step_beyond_it_is_refused(entry):
    step = 1 if entry.type is int else 1e-6
    assert entry.check(entry.maximum) == entry.maximum and entry.check(entry.minimum) == entry.minimum
    for beyond in (entry.maximum + step, entry.minimum - step):
        with pytest.raises(ValueError) as error:
            entry.check(beyond)
        message = str(error.value)
        assert message.startswith(f"parameter '{entry.name}' must be in [") and "\n" not in message
        assert message.endswith(f"got {beyond}")


def test_range_messages_say_the_rule_with_its_unit():
    with pytest.raises(ValueError) as error:
        node_parameter("num_threads").check(1000)
    assert str(error.value) == "parameter 'num_threads' must be in [0, 256] threads, got 1000"
    with pytest.raises(ValueError) as error:
        node_parameter("diagnostics_period").check(0.001)
    assert str(error.value) == "parameter 'diagnostics_period' must be in [0.01, 3600] s, got 0.001"
    with pytest.raises(ValueError) as error:
        node_parameter("max_points").check(20_000_000)
    assert str(error.value) == "parameter 'max_points' must be in [0, 10000000] points, got 20000000"


@pytest.mark.parametrize("entry", WITH_CHOICES, ids=ids(WITH_CHOICES))
def test_choices_are_kept_and_anything_else_is_refused(entry):
    for choice in entry.choices:
        assert entry.check(choice) == choice
    with pytest.raises(ValueError) as error:
        entry.check("bogus")
    assert str(error.value) == f"parameter '{entry.name}' must be one of {list(entry.choices)}, got 'bogus'"


def test_the_choices_are_the_kernels_own_tuples():
    from clip_seg3d_ros.segmenter import AUTOCAST_DTYPES
    from clip_seg3d_ros.sparse.backend import BACKENDS
    from clip_seg3d_ros.sparse.conv import CPU_MATMULS

    assert node_parameter("sparse_backend").choices is BACKENDS
    assert node_parameter("cpu_matmul").choices is CPU_MATMULS
    assert node_parameter("precision").choices == tuple(AUTOCAST_DTYPES)


def test_types_are_checked_and_numbers_converted():
    assert node_parameter("score_threshold").check(1) == 1.0
    assert type(node_parameter("slop").check(0)) is float
    assert node_parameter("vocabulary").check(["car"]) == ("car",)
    for name, bad, rule in [
        ("max_points", 1.5, "an integer"), ("max_points", True, "an integer"), ("publish_rgb", 1, "a bool"),
        ("score_threshold", "0.5", "a number"), ("score_threshold", False, "a number"), ("device", 0, "a string"),
        ("camera_topics", "/a", "a list of strings"),
    ]:
        with pytest.raises(ValueError) as error:
            node_parameter(name).check(bad)
        assert str(error.value) == f"parameter '{name}' must be {rule}, got {bad!r}"
    with pytest.raises(ValueError, match="'use_sim_time' is not a setting of clip_seg3d_node"):
        node_parameter("use_sim_time")


def test_parameters_convert_and_validate():
    settings = RuntimeSettings.from_values({"checkpoint": "m.pt", "score_threshold": 1, "vocabulary": []})
    assert settings.score_threshold == 1.0 and settings.vocabulary == ()
    assert RuntimeSettings.from_values({"checkpoint": "m.pt", "vocabulary": ["car"]}).vocabulary == ("car",)
    assert NodeSettings.from_values({"camera_topics": ["/a"], "slop": 0}, use_cameras=True).slop == 0.0
    for values, message in [
        ({}, "'checkpoint' is required"),
        ({"checkpoint": "m.pt", "score_threshold": 2.0}, "score_threshold"),
        ({"checkpoint": "m.pt", "fusion_weight": -0.1}, "fusion_weight"),
        ({"checkpoint": "m.pt", "max_points": -5}, "max_points"),
        ({"checkpoint": "m.pt", "max_points": 1.5}, "integer"),
        ({"checkpoint": "m.pt", "vocabulary": "car"}, "list of strings"),
        ({"checkpoint": "m.pt", "device": "tpu"}, "device"),
        ({"checkpoint": "m.pt", "sparse_backend": "spconv"}, "sparse_backend"),
        ({"checkpoint": "m.pt", "cpu_matmul": "blas"}, "cpu_matmul"),
        ({"checkpoint": "m.pt", "publish_rgb": True}, "unknown parameters"),  # a node setting, not the runtime's
    ]:
        with pytest.raises(ValueError, match=message):
            RuntimeSettings.from_values(values)
    for values, use_cameras, message in [
        ({}, True, "camera_topics"),
        ({"camera_topics": ["/a", "/a"]}, False, "repeat"),
        ({"publish_rgb": 1}, False, "bool"),
        ({"queue_size": 0}, False, "queue_size"),
        ({"queue_size": 101}, False, "queue_size"),
        ({"diagnostics_period": 0.0}, False, "diagnostics_period"),
        ({"checkpoint": "m.pt"}, False, "unknown parameters"),
    ]:
        with pytest.raises(ValueError, match=message):
            NodeSettings.from_values(values, use_cameras=use_cameras)


def test_settings_built_directly_are_checked_by_the_schema_too():
    with pytest.raises(ValueError, match="'calibration_bias' must be a finite number"):
        RuntimeSettings(checkpoint="m.pt", calibration_bias=math.nan).validated()
    with pytest.raises(ValueError, match="'tf_timeout' must be in"):
        NodeSettings(tf_timeout=5.0).validated()
    assert RuntimeSettings(checkpoint="m.pt", score_threshold=1).validated().score_threshold == 1.0


def test_string_lists_accept_rosy_empty_lists():
    assert string_list("x", None) == () and string_list("x", []) == () and string_list("x", [b"a"][:0]) == ()
    assert string_list("x", ("a", "b")) == ("a", "b")
    for bad in ("a", [1, 2], [True], 3):
        with pytest.raises(ValueError, match="list of strings"):
            string_list("x", bad)


# --- config/segment.yaml ----------------------------------------------------------------------------------------

def test_config_yaml_holds_every_parameter_with_the_schemas_default():
    """Every key is a parameter, with the schema's default. A parameter may be absent only if it is a list whose
    default is empty (vocabulary, camera_topics): then the file shows it as a commented-out example line
    (``# name: [...]``), so that the file still names every parameter. Extrinsics and QoS overrides are only
    examples, in comments."""
    text = (REPO_ROOT / "config" / "segment.yaml").read_text()
    parameters = yaml.safe_load(text)[NODE_NAME]["ros__parameters"]
    schema = {entry.name: entry for entry in NODE_PARAMETERS}
    assert set(parameters) <= set(schema), set(parameters) - set(schema)
    for name, value in parameters.items():
        assert value == schema[name].default, name
        assert type(value) is schema[name].type, name  # 1.0 written as a float, not 1
    commented = set(re.findall(r"^\s*#\s*([a-z_]+):", text, flags=re.MULTILINE))
    absent = set(schema) - set(parameters)
    assert absent == {"vocabulary", "camera_topics"}
    for name in absent:
        assert schema[name].type is tuple and schema[name].default == (), name
        assert name in commented, f"{name}: neither set nor shown commented out"


# --- replay's options ---------------------------------------------------------------------------------------------

def parse_replay(*arguments: str):
    return replay.build_parser().parse_args(["bag", "--checkpoint", "m.pt", *arguments])


def test_every_runtime_setting_is_a_replay_option_and_only_those():
    parser = replay.build_parser()
    (group,) = [group for group in parser._action_groups if group.title.startswith("segmentation")]
    assert [action.dest for action in group._group_actions] == ids(RUNTIME_SCHEMA)
    for action, entry in zip(group._group_actions, RUNTIME_SCHEMA, strict=True):
        assert action.option_strings[0] == "--" + entry.name.replace("_", "-")
        assert entry.description in action.help
        assert action.default is None
        assert action.required == entry.required
        if entry.choices:
            assert tuple(action.choices) == entry.choices


def test_replay_options_default_to_the_schemas_defaults_and_convert():
    assert replay.runtime_settings(parse_replay()) == RuntimeSettings(checkpoint="m.pt")
    settings = replay.runtime_settings(parse_replay(
        "--vocabulary", "road", "car", "--use-cameras", "--score-threshold", "0.25", "--max-points", "5000",
        "--cpu-matmul", "mkl", "--precision", "bf16", "--calibration-bias", "-0.5"))
    assert settings == RuntimeSettings(checkpoint="m.pt", vocabulary=("road", "car"), use_cameras=True,
                                       score_threshold=0.25, max_points=5000, cpu_matmul="mkl", precision="bf16",
                                       calibration_bias=-0.5)
    assert replay.runtime_settings(parse_replay("--no-use-cameras")).use_cameras is False
    assert replay.runtime_settings(parse_replay("--vocabulary")).vocabulary == ()


@pytest.mark.parametrize("option, text, name, value", [
    ("--score-threshold", "nan", "score_threshold", math.nan),
    ("--calibration-bias", "inf", "calibration_bias", math.inf),
    ("--fusion-weight", "1.5", "fusion_weight", 1.5),
    ("--num-threads", "257", "num_threads", 257),
    ("--max-points", "-1", "max_points", -1),
    ("--max-points", "1.5", "max_points", "1.5"),
    ("--sparse-backend", "spconv", "sparse_backend", "spconv"),
    ("--cpu-matmul", "blas", "cpu_matmul", "blas"),
])
def test_a_bad_replay_option_is_refused_with_the_schemas_message(option, text, name, value, capsys):
    with pytest.raises(ValueError) as expected:
        node_parameter(name).check(value)
    with pytest.raises(SystemExit) as exit_status:
        parse_replay(option, text)
    assert exit_status.value.code == 2
    assert f"argument {option}: {expected.value}\n" in capsys.readouterr().err


# --- a misspelt parameter -------------------------------------------------------------------------------------------

def test_unknown_parameters_are_named_with_the_closest_known_name():
    known = [*ids(NODE_PARAMETERS), "use_sim_time"]
    given = ["score_treshold", "checkpoint", "num_thread", "use_sim_time", "qos_overrides./points.subscription.depth",
             "extrinsics.front.lidar_to_camera", "extrinsics.rear.rotation", "extrinsics.front.rotaton",
             "zzzz"]
    assert unknown_parameter_warnings(given, known) == [
        "unknown parameter 'score_treshold' is ignored; did you mean 'score_threshold'?",
        "unknown parameter 'num_thread' is ignored; did you mean 'num_threads'?",
        "unknown parameter 'extrinsics.front.rotaton' is ignored; did you mean 'extrinsics.front.rotation'?",
        "unknown parameter 'zzzz' is ignored",
    ]
    assert unknown_parameter_warnings(ids(NODE_PARAMETERS), known) == []
