"""How many large PointCloud2 messages cross between two processes, by QoS; prints one JSON object.

    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
    unshare --net sh -c 'ip link set lo up && exec python benchmarks/qos_delivery.py'
    unshare --net sh -c 'ip link set lo up && exec python benchmarks/qos_delivery.py --sizes 2.0 --count 8'

Over this machine's RMW, for each cloud size and each reliability, a publisher process sends ``--count``
clouds at ``--hz`` to a subscriber process of the same QoS (keep last ``--depth``), which counts what arrives.
This is what decides the node's input QoS: a 64-beam LiDAR sends about 2 MB per sweep. Run it as above, in a
network namespace with only loopback and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (as root; otherwise
``unshare --net --map-root-user``): DDS discovery stays on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

TOPIC = "/qos_delivery/points"


def qos(reliability: str, depth: int) -> QoSProfile:
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def cloud(size_bytes: int) -> PointCloud2:
    points = size_bytes // 16
    fields = [PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
              for index, name in enumerate(("x", "y", "z", "intensity"))]
    return PointCloud2(height=1, width=points, fields=fields, point_step=16, row_step=16 * points, is_dense=True,
                       data=np.random.default_rng(0).random(points * 4, dtype=np.float32).tobytes())


def subscriber(args: argparse.Namespace) -> None:
    rclpy.init()
    node = rclpy.create_node("qos_delivery_subscriber")
    received = []
    node.create_subscription(PointCloud2, TOPIC, lambda message: received.append(message.width),
                             qos(args.reliability, args.depth))
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(len(received), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def publisher(args: argparse.Namespace) -> None:
    rclpy.init()
    node = rclpy.create_node("qos_delivery_publisher")
    publisher = node.create_publisher(PointCloud2, TOPIC, qos(args.reliability, args.depth))
    message = cloud(args.size)
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(2.0)  # let the subscriber finish matching this writer too
    for _ in range(args.count):
        publisher.publish(message)
        rclpy.spin_once(node, timeout_sec=1.0 / args.hz)
    end = time.monotonic() + 5.0  # reliable QoS may still resend
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()


def measure(size: int, reliability: str, args: argparse.Namespace) -> int:
    common = ["--size", str(size), "--reliability", reliability, "--count", str(args.count), "--hz", str(args.hz),
              "--depth", str(args.depth)]
    script = [sys.executable, __file__]  # this file again, as the publisher or the subscriber
    listening = subprocess.Popen([*script, "--role", "subscriber", "--seconds", str(args.count / args.hz + 12),
                                  *common], stdout=subprocess.PIPE, text=True, env=os.environ)
    subprocess.run([*script, "--role", "publisher", *common], check=True, env=os.environ)
    output, _ = listening.communicate(timeout=60)
    return int(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["both", "publisher", "subscriber"], default="both")
    parser.add_argument("--sizes", type=float, nargs="*", default=[0.25, 0.64, 2.0], help="cloud sizes in MB")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--reliability", default="best_effort")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.role == "subscriber":
        subscriber(args)
    elif args.role == "publisher":
        publisher(args)
    else:
        results = {f"{size} MB": {reliability: f"{measure(int(size * 1e6), reliability, args)}/{args.count}"
                                  for reliability in ("best_effort", "reliable")} for size in args.sizes}
        print(json.dumps({"rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
                          "hz": args.hz, "depth": args.depth, "delivered": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
