"""Launch file, parameter file and RViz config agree with the node (checked without ROS).

The launch file is executed against small stand-ins for the ``launch`` / ``launch_ros`` classes it uses (they
are not installable here), and the structure it builds is checked: its arguments, the node it starts, the
parameters and remappings it passes. The launch smoke test (test_launch_smoke.py) runs it under real ROS.
"""

import importlib.util
import sys
import types

import pytest
import yaml
from conftest import REPO_ROOT

from clip_seg3d_ros.nodes.settings import NODE_NAME, NodeSettings
from clip_seg3d_ros.runtime.settings import RuntimeSettings

LAUNCH_FILE = REPO_ROOT / "launch" / "segment.launch.py"


class Recorded:
    """A stand-in for any launch class: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def stand_in_modules() -> dict[str, types.ModuleType]:
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument"],
        "launch.conditions": ["IfCondition"],
        "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
        "launch_ros.actions": ["Node"],
        "launch_ros.parameter_descriptions": ["ParameterValue"],
        "launch_ros.substitutions": ["FindPackageShare"],
    }
    modules = {"launch_ros": types.ModuleType("launch_ros")}
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for class_name in classes:
            setattr(module, class_name, type(class_name, (Recorded,), {}))
        modules[module_name] = module
    return modules


@pytest.fixture()
def description(monkeypatch):
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    launch_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_module)
    return launch_module.generate_launch_description()


def argument_name(value) -> str:
    """The launch argument a LaunchConfiguration (possibly inside a ParameterValue) refers to."""
    if type(value).__name__ == "ParameterValue":
        value = value.args[0]
    assert type(value).__name__ == "LaunchConfiguration", value
    return value.args[0]


def test_launch_arguments_become_existing_parameters_and_remappings(description):
    (entities,) = description.args
    arguments = {entity.args[0]: entity.kwargs for entity in entities
                 if type(entity).__name__ == "DeclareLaunchArgument"}
    assert list(arguments) == ["checkpoint", "input_topic", "device", "use_cameras", "rviz", "params_file"]
    assert "default_value" not in arguments["checkpoint"]  # required
    assert arguments["device"]["default_value"] == RuntimeSettings().device
    nodes = [entity for entity in entities if type(entity).__name__ == "Node"]
    segment = next(node for node in nodes if node.kwargs["executable"] == "segment")
    assert segment.kwargs["package"] == "clip_seg3d_ros" and segment.kwargs["name"] == NODE_NAME
    params_file, overrides = segment.kwargs["parameters"]
    assert argument_name(params_file) == "params_file"
    known = set(RuntimeSettings.names()) | set(NodeSettings.names())
    assert set(overrides) <= known
    assert {name: argument_name(value) for name, value in overrides.items()} == {name: name for name in overrides}
    assert all(name in arguments for name in overrides)
    (remapping,) = segment.kwargs["remappings"]
    assert remapping[0] == "~/input/points" and argument_name(remapping[1]) == "input_topic"
    default_params = arguments["params_file"]["default_value"]
    assert default_params.args[0][1:] == ["config", "segment.yaml"]
    assert (REPO_ROOT / "config" / "segment.yaml").is_file()
    rviz = next(node for node in nodes if node.kwargs["executable"] == "rviz2")
    assert argument_name(rviz.kwargs["condition"].args[0]) == "rviz"
    rviz_file = rviz.kwargs["arguments"][1].args[0][1:]
    assert rviz_file == ["config", "segment.rviz"] and (REPO_ROOT / "config" / "segment.rviz").is_file()


def test_rviz_config_shows_the_rgb_output_with_the_rgb8_transformer():
    config = yaml.safe_load((REPO_ROOT / "config" / "segment.rviz").read_text())
    manager = config["Visualization Manager"]
    (cloud,) = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == f"/{NODE_NAME}/output/points_rgb"
    assert cloud["Color Transformer"] == "RGB8" and cloud["Position Transformer"] == "XYZ"
    assert manager["Global Options"]["Fixed Frame"] == "lidar"


def test_setup_installs_the_launch_file_and_the_config(monkeypatch):
    """What colcon installs into share/: setup.py's data_files, evaluated on this checkout."""
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO_ROOT)  # setup.py globs relative to the repository
    spec = importlib.util.spec_from_file_location("setup_py", REPO_ROOT / "setup.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    installed = dict(captured["data_files"])
    assert installed["share/clip_seg3d_ros/launch"] == ["launch/segment.launch.py"]
    assert set(installed["share/clip_seg3d_ros/config"]) == {"config/segment.yaml", "config/segment.rviz"}
