"""clip_seg3d_ros: an ament_python ROS 2 package that is also pip-installable.

`colcon build` and `pip install -e .` both read this file. Dependencies are declared here and only here.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clip_seg3d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Zero-shot LiDAR semantic segmentation distilled from CLIP, as a ROS 2 package",
    license="Apache-2.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    # torch is deliberately unpinned: see DESIGN.md (torch==2.13.0 with its torchvision does not import).
    # torchsparse is optional and not on PyPI: it is used when importable on a CUDA device.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "open_clip_torch>=2.20",
        "transforms3d>=0.4",
        "pillow>=9",
        "matplotlib>=3.7",
        "pyyaml>=6",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "rosbags>=0.11",
        "omegaconf>=2.3",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.5", "hypothesis>=6"],
        # Only the peer benchmark (benchmarks/sparse_bench.py, not installed) uses it; the package never imports it.
        "spconv": ["spconv==2.3.8"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            f"clip_seg3d_replay = {PACKAGE}.tools.replay:main",
            f"clip_seg3d_to_bag = {PACKAGE}.tools.to_bag:main",
            f"segment = {PACKAGE}.nodes.segment_node:main",
            f"evaluate = {PACKAGE}.nodes.evaluate_node:main",
        ],
    },
)
