"""The package installs as described, shows its architecture in its tree, and imports without ROS."""

import ast
import importlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "clip_seg3d_ros"
ROS_ROOTS = {
    "rclpy", "sensor_msgs", "std_msgs", "tf2_ros", "rosidl_runtime_py", "message_filters", "diagnostic_msgs",
    "vision_msgs", "rcl_interfaces", "launch", "launch_ros", "launch_testing",
}
# The only modules that may import ROS: the rclpy nodes, and the bag player (a user command, so in tools/).
NODE_MODULES = ("clip_seg3d_ros/nodes/segment_node.py", "clip_seg3d_ros/nodes/evaluate_node.py",
                "clip_seg3d_ros/nodes/main.py", "clip_seg3d_ros/tools/play_bag.py")
ROLES = {"sparse", "models", "geometry", "datasets", "synthetic", "teacher", "evaluation", "runtime", "ros", "nodes",
         "training", "tools"}


def imported_modules(path) -> set[str]:
    """Every absolute module name ``path`` imports, at module level or inside functions."""
    names = set()
    for statement in ast.walk(ast.parse(path.read_text())):
        if isinstance(statement, ast.Import):
            names |= {alias.name for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            names.add(statement.module)
            names |= {f"{statement.module}.{alias.name}" for alias in statement.names}
    return names


def test_the_top_level_is_the_core_and_every_folder_is_one_role():
    modules = sorted(path.name for path in PACKAGE_DIR.glob("*.py"))
    assert modules == ["__init__.py", "checkpoint.py", "compute_choices.py", "device.py", "files.py", "sample.py",
                       "segmenter.py", "vocabulary.py", "voxelize.py"]
    folders = {path.name for path in PACKAGE_DIR.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == ROLES
    assert all((PACKAGE_DIR / folder / "__init__.py").is_file() for folder in folders)


def test_node_modules_import_neither_the_training_package_nor_matplotlib():
    for module in sorted((PACKAGE_DIR / "nodes").glob("*.py")):
        names = imported_modules(module)
        assert not {name for name in names if name.split(".")[0] == "matplotlib"}, module.name
        assert not {name for name in names if name.startswith(("clip_seg3d_ros.training", "clip_seg3d_ros.synthetic",
                                                              "clip_seg3d_ros.evaluation.plots",
                                                              "clip_seg3d_ros.evaluation.report"))}, module.name


def test_the_sweep_path_imports_nothing_of_training_tools_or_nodes():
    """Data flows one way: runtime -> core; tools and nodes sit on top, the training package beside them."""
    for folder in ("runtime", "ros", "evaluation"):
        for module in sorted((PACKAGE_DIR / folder).glob("*.py")):
            upward = {name for name in imported_modules(module)
                      if name.startswith(("clip_seg3d_ros.nodes", "clip_seg3d_ros.tools", "clip_seg3d_ros.training"))}
            assert not upward, f"{folder}/{module.name}: {upward}"


def test_library_and_node_support_import_without_ros_or_matplotlib():
    # A fresh interpreter: importing what the node uses, and the ROS-free node helpers, pulls in no ROS.
    modules = ["clip_seg3d_ros", "clip_seg3d_ros.runtime.runtime", "clip_seg3d_ros.nodes.settings",
               "clip_seg3d_ros.nodes.latest_slot", "clip_seg3d_ros.nodes.sweep_stats",
               "clip_seg3d_ros.evaluation.colors", "clip_seg3d_ros.evaluation.stream",
               "clip_seg3d_ros.evaluation.summary", "clip_seg3d_ros.ros.pointcloud2", "clip_seg3d_ros.ros.camera_frame",
               "clip_seg3d_ros.ros.label_info"]
    code = (
        f"import sys, {', '.join(modules)}; "
        f"ros_roots = {sorted(ROS_ROOTS | {'matplotlib'})!r}; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ros_roots}))"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"


def test_only_the_node_modules_import_ros_at_module_level():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
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


def top_level_names(path) -> set[str]:
    """Names a module defines or imports at its top level (classes, functions, assignments, imports)."""
    names = set()
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.FunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names |= {node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)}
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    return names


def test_docstrings_and_comments_name_only_modules_that_exist():
    """Every ``clip_seg3d_ros.x.y`` the package's text names (not a quoted string value) is a module or package,
    optionally followed by a name that module defines. Checked on the files, so the ROS nodes count too."""
    missing = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for dotted in set(re.findall(r"(?<![\"'])clip_seg3d_ros(?:\.[A-Za-z_][A-Za-z0-9_]*)+", path.read_text())):
            parts = dotted.split(".")
            target, rest = REPO_ROOT / parts[0], parts[1:]
            while rest and ((target / rest[0]).is_dir() or (target / f"{rest[0]}.py").is_file()):
                target, rest = target / rest[0], rest[1:]
            module = target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
            if rest and rest[0] not in top_level_names(module):
                missing.add(f"{path.relative_to(REPO_ROOT)}: {dotted}")
    assert missing == set()


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "clip_seg3d_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {element.text for element in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs"} <= exec_depends
    assert (REPO_ROOT / "resource" / "clip_seg3d_ros").is_file()  # ament index marker named in setup.py


def declared_console_scripts() -> dict[str, str]:
    """setup.py's console scripts: name -> ``module:function``."""
    return {name: f"clip_seg3d_ros.{target}"
            for name, target in re.findall(r'f"(\w+) = \{PACKAGE\}\.([\w.:]+)"', (REPO_ROOT / "setup.py").read_text())}


def test_console_scripts_point_at_existing_functions():
    from importlib.metadata import PackageNotFoundError, distribution

    scripts = declared_console_scripts()
    assert set(scripts) == {"clip_seg3d_replay", "clip_seg3d_to_bag", "segment", "evaluate"}
    for name, target in scripts.items():
        module, function = target.split(":")
        if not module.startswith("clip_seg3d_ros.nodes"):  # the nodes need rclpy to import
            assert callable(getattr(importlib.import_module(module), function)), name
        else:
            assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), name
    try:  # pip-installed from this checkout: what pip installed is what setup.py declares
        installed_from = json.loads(distribution("clip_seg3d_ros").read_text("direct_url.json") or "{}").get("url")
    except PackageNotFoundError:
        installed_from = None
    if installed_from == REPO_ROOT.as_uri():
        installed = {entry.name: entry.value for entry in distribution("clip_seg3d_ros").entry_points
                     if entry.group == "console_scripts"}
        assert installed == scripts


def test_measurement_scripts_stay_out_of_the_installed_package():
    """benchmarks/ is no package (find_packages never takes it), and the package imports none of its scripts."""
    assert not (REPO_ROOT / "benchmarks" / "__init__.py").exists()
    scripts = {path.stem for path in (REPO_ROOT / "benchmarks").glob("*.py")}
    assert {"node_latency", "sparse_bench", "train_step_bench", "gpu_check", "qos_delivery", "scans"} <= scripts
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        assert not {name.split(".")[0] for name in imported_modules(path)} & scripts, path


