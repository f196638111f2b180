"""benchmarks/qos_delivery.py run as a user runs it: a script that starts itself twice (publisher, subscriber) on a
ROS 2 graph kept on loopback, and reports what crossed, by reliability."""

import json
import subprocess
import sys

import pytest
from ros_graph import REPO_ROOT, graph_environment, random_domain_id, require_ros_graph

pytestmark = pytest.mark.slow  # two publisher / subscriber pairs, each waiting for discovery: about 20 s


def test_the_probe_counts_the_clouds_of_each_reliability():
    require_ros_graph()
    completed = subprocess.run(
        [sys.executable, "benchmarks/qos_delivery.py", "--sizes", "0.05", "--count", "3", "--hz", "10"],
        cwd=REPO_ROOT, env=graph_environment(random_domain_id()), capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (result["hz"], result["depth"]) == (10.0, 1)
    delivered = result["delivered"]["0.05 MB"]
    assert set(delivered) == {"best_effort", "reliable"}
    assert delivered["reliable"] == "3/3"  # 50 KB clouds on loopback, reliable: every one arrives
    received, sent = (int(part) for part in delivered["best_effort"].split("/"))
    assert sent == 3 and 0 <= received <= 3
