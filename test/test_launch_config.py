"""Launch file, parameter file and RViz config agree with the node (checked without ROS; the launch smoke test
in test_launch_smoke.py runs them where ROS is installed)."""

import ast
import re

import yaml
from conftest import REPO_ROOT

from clip_seg3d_ros.runtime.settings import NODE_NAME


def test_launch_file_names_the_node_its_arguments_and_existing_files():
    source = (REPO_ROOT / "launch" / "segment.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(node, ast.FunctionDef) and node.name == "generate_launch_description" for node in tree.body)
    arguments = re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', source)
    assert arguments == ["checkpoint", "input_topic", "device", "use_cameras", "rviz", "params_file"]
    assert f'NODE_NAME = "{NODE_NAME}"' in source and 'executable="segment"' in source
    assert '("~/input/points", LaunchConfiguration("input_topic"))' in source
    for name in re.findall(r'"config", "([\w.]+)"', source):
        assert (REPO_ROOT / "config" / name).is_file(), name


def test_rviz_config_shows_the_rgb_output_with_the_rgb8_transformer():
    config = yaml.safe_load((REPO_ROOT / "config" / "segment.rviz").read_text())
    manager = config["Visualization Manager"]
    (cloud,) = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == f"/{NODE_NAME}/output/points_rgb"
    assert cloud["Color Transformer"] == "RGB8" and cloud["Position Transformer"] == "XYZ"
    assert manager["Global Options"]["Fixed Frame"] == "lidar"


def test_setup_installs_the_console_scripts_and_the_config():
    source = (REPO_ROOT / "setup.py").read_text()
    assert 'f"segment = {PACKAGE}.node:main"' in source and 'f"evaluate = {PACKAGE}.evaluate_node:main"' in source
    assert 'glob("launch/*.launch.py")' in source and 'glob("config/*.rviz")' in source
