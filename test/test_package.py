"""The package installs as described and imports without ROS."""

import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT


def test_library_imports_without_ros():
    # A fresh interpreter: importing the library (and the modules that the node will use) pulls in no ROS.
    code = (
        "import sys, clip_seg3d_ros, clip_seg3d_ros.bench, clip_seg3d_ros.sparse, clip_seg3d_ros.models; "
        "from clip_seg3d_ros import Segmenter; "
        "ros_roots = {'rclpy', 'sensor_msgs', 'tf2_ros', 'rosidl_runtime_py'}; "
        "ros = sorted(m for m in sys.modules if m.split('.')[0] in ros_roots); "
        "print(ros)"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "clip_seg3d_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {element.text for element in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "message_filters", "tf2_ros"} <= exec_depends
    assert (REPO_ROOT / "resource" / "clip_seg3d_ros").is_file()  # ament index marker named in setup.py


def test_console_script_is_installed():
    scripts = REPO_ROOT / ".venv" / "bin"
    if not scripts.is_dir():  # installed some other way (colcon, a user's environment)
        return
    assert (scripts / "clip_seg3d_bench").is_file()
