"""The package installs as described and imports without ROS."""

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT

ROS_ROOTS = {
    "rclpy", "sensor_msgs", "std_msgs", "tf2_ros", "rosidl_runtime_py", "message_filters", "diagnostic_msgs",
    "vision_msgs", "rcl_interfaces", "launch", "launch_ros", "launch_testing",
}
NODE_MODULES = ("clip_seg3d_ros/node.py", "clip_seg3d_ros/evaluate_node.py")  # the only ones that may import ROS
ROS_FREE_MODULES = (
    "processing", "fusion", "point_budget", "vocabulary_update", "segment_runtime", "node_parameters",
    "latest_slot", "sweep_stats", "stream_evaluation", "ros.camera_frame", "ros.label_info",
)


def test_library_imports_without_ros():
    # A fresh interpreter: importing the library (and the modules that the node uses) pulls in no ROS.
    modules = ", ".join(f"clip_seg3d_ros.{name}" for name in ROS_FREE_MODULES)
    code = (
        f"import sys, clip_seg3d_ros, clip_seg3d_ros.tools.bench, clip_seg3d_ros.sparse, clip_seg3d_ros.models, {modules}; "
        "from clip_seg3d_ros import Segmenter; "
        f"ros_roots = {sorted(ROS_ROOTS)!r}; "
        "ros = sorted(m for m in sys.modules if m.split('.')[0] in ros_roots); "
        "print(ros)"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"


def test_only_the_node_modules_import_ros_at_module_level():
    offenders = []
    for path in sorted((REPO_ROOT / "clip_seg3d_ros").rglob("*.py")):
        if str(path.relative_to(REPO_ROOT)) in NODE_MODULES:
            continue
        for statement in ast.parse(path.read_text()).body:  # module level only: lazy imports inside functions are fine
            if isinstance(statement, ast.Import):
                roots = [alias.name.split(".")[0] for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
                roots = [statement.module.split(".")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(REPO_ROOT)}: {root}" for root in roots if root in ROS_ROOTS]
    assert offenders == []
    for module in NODE_MODULES:
        compile((REPO_ROOT / module).read_text(), module, "exec")  # at least valid Python where ROS is absent


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
