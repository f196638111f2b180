"""Running the nodes as a robot runs them: their console scripts as processes, on a ROS 2 graph kept on loopback.

``make test`` runs the whole suite inside a network namespace with only loopback and sets
``CLIP_SEG3D_REQUIRE_ROS=1``: there a missing rclpy or a real network interface is a test failure. Elsewhere
(a developer's plain ``pytest``) the ROS tests skip, saying why, rather than let DDS discovery reach a real
network.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sys.executable).parent  # the console scripts installed with the package (segment, evaluate)
REQUIRE_ROS = os.environ.get("CLIP_SEG3D_REQUIRE_ROS") == "1"


def network_interfaces() -> list[str]:
    """The network interfaces of this process's network namespace (not /sys, which shows the mount's)."""
    return sorted(name for _, name in socket.if_nameindex())


def require_ros_graph() -> None:
    """Skip (fail under ``make test``) unless rclpy imports and loopback is the only network interface."""
    def unavailable(reason: str) -> None:
        if REQUIRE_ROS:
            pytest.fail(f"the ROS test tier cannot run: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)

    try:
        import rclpy  # noqa: F401
    except ImportError as error:
        unavailable(f"rclpy is not installed ({error}); `make test` installs requirements-ros.txt")
    interfaces = network_interfaces()
    if interfaces != ["lo"]:
        unavailable(f"network interfaces {interfaces} besides loopback: ROS tests run only in a network namespace "
                    "(`make test` does `unshare -n`), so that DDS traffic never reaches another address")


def graph_environment(domain_id: int) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                       OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    return environment


def random_domain_id() -> int:
    return random.Random().randint(1, 100)


class NodeProcess:
    """A node started from its console script with ``--ros-args``, its output in a log file."""

    def __init__(self, script: str, parameters: dict, log_path: Path, domain_id: int,
                 params_file: Path | None = REPO_ROOT / "config" / "segment.yaml", extra_args: tuple = ()) -> None:
        arguments = [str(SCRIPTS / script), "--ros-args"]
        if params_file is not None:
            arguments += ["--params-file", str(params_file)]
        for name, value in parameters.items():
            arguments += ["-p", f"{name}:={format_value(value)}"]
        arguments += list(extra_args)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(arguments, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=graph_environment(domain_id), cwd=REPO_ROOT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def running(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the process (VmRSS), in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> tuple[int, str]:
        """Send ``sig`` (SIGINT: Ctrl-C), wait; (exit code, log). Killed if it does not end in ``timeout``."""
        if self.running():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode, self.log_path.read_text()


def format_value(value) -> str:
    """A parameter value as ``-p name:=value`` takes it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)


def wait_until(condition, timeout: float = 60.0, every=None, interval: float = 0.1) -> bool:
    """Poll ``condition`` (calling ``every`` first each time) until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if condition():
            return True
        time.sleep(interval)
    return False
