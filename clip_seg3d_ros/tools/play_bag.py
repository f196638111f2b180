"""``python -m clip_seg3d_ros.tools.play_bag BAG``: publish a rosbag2 on the ROS graph, in recorded time.

A minimal ``ros2 bag play`` for machines with rclpy but without rosbag2 (the pip-installed ROS 2 wheels): every
message of the chosen topics, at its recorded log time (scaled by ``--rate``), as its recorded CDR bytes, so
nothing is converted on the way. ``/tf_static`` is latched (transient local), as tf2's static broadcaster does;
the other topics are reliable, keep last ``--depth``: a replayed bag is for evaluation, nothing should be lost
between this player and its subscribers (a best-effort subscriber still matches). ``--wait-for TOPIC ...`` holds
the start until each of those topics has a subscriber (the nodes under test), up to ``--wait`` seconds, and then
``--settle`` seconds more: a writer sees a reader before the reader has finished matching the writer, and a
message sent in between is lost even over reliable QoS.

``--lockstep SWEEP_TOPIC OUTPUT_TOPIC``: closed-loop playback for evaluation. After each message of
SWEEP_TOPIC the player waits until a message with the same header stamp appears on OUTPUT_TOPIC (the node's
labelled cloud), publishing the sweep again every ``--resend`` seconds, so that every sweep is labelled however
slow the node is; the resends are counted and reported (each one is a sweep lost on the way).

A user command (what ``ros2 bag play`` is), so it lives with the other tools; with the ROS nodes, it is the one
tool that imports rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from clip_seg3d_ros.nodes.main import run_node
from clip_seg3d_ros.ros.bag_reader import BagError, open_bag, read_messages
from clip_seg3d_ros.ros.tf import stamp_to_ns

NODE_NAME = "clip_seg3d_play_bag"
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class BagPlayer(Node):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(NODE_NAME)
        self.args = args
        self.reader = open_bag(Path(args.bag))  # BagError: one line, exit 1
        topics = self.reader.topics
        wanted = args.topics or sorted(topics)
        unknown = sorted(set(wanted) - set(topics))
        if unknown:
            raise ValueError(f"{args.bag}: no topics {unknown} (topics: {sorted(topics)})")
        depth = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
        self.types = {}
        for topic in wanted:
            try:
                self.types[topic] = message_class(topics[topic].msgtype)
            except (ImportError, AttributeError):  # e.g. tf2_msgs, which the pip-installed ROS 2 lacks
                self.get_logger().warning(f"not playing {topic}: its type {topics[topic].msgtype} is not installed")
        self.publishers_by_topic = {
            topic: self.create_publisher(message_type, topic, LATCHED if topic == "/tf_static" else depth)
            for topic, message_type in self.types.items()
        }
        self.connections = [connection for connection in self.reader.connections if connection.topic in self.types]
        self.published = self.resent = 0
        self.answered: set[int] = set()
        if args.lockstep:
            sweep_topic, output_topic = args.lockstep
            if sweep_topic not in self.types:
                raise ValueError(f"--lockstep: {sweep_topic} is not played")
            self.create_subscription(self.types[sweep_topic], output_topic,
                                     lambda message: self.answered.add(stamp_to_ns(message.header.stamp)), depth)

    def close(self) -> None:
        """Say what was played (also after Ctrl-C), then close the bag."""
        self.get_logger().info(f"published {self.published} messages from {self.args.bag}"
                               + (f", {self.resent} sweeps sent again" if self.args.lockstep else ""))
        self.reader.close()

    def play(self) -> None:
        if self.args.wait_for:
            deadline = time.monotonic() + self.args.wait
            while (time.monotonic() < deadline
                   and not all(self.count_subscribers(topic) for topic in self.args.wait_for)):
                rclpy.spin_once(self, timeout_sec=0.1)
            settled = time.monotonic() + self.args.settle
            while time.monotonic() < settled:
                rclpy.spin_once(self, timeout_sec=0.1)
        started, first = time.monotonic(), None
        for connection, log_time, raw in read_messages(self.reader, self.connections):
            first = log_time if first is None else first
            due = started + (log_time - first) / 1e9 / self.args.rate
            while (wait := due - time.monotonic()) > 0:
                rclpy.spin_once(self, timeout_sec=min(wait, 0.1))
            message = deserialize_message(raw, self.types[connection.topic])
            self.publishers_by_topic[connection.topic].publish(message)
            self.published += 1
            if self.args.lockstep and connection.topic == self.args.lockstep[0]:
                self._wait_for_answer(message)
                started, first = time.monotonic(), log_time  # the recorded timing resumes from here
        end = time.monotonic() + self.args.linger  # let reliable subscribers take the last messages
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.1)

    def _wait_for_answer(self, sweep) -> None:
        stamp, publisher = stamp_to_ns(sweep.header.stamp), self.publishers_by_topic[self.args.lockstep[0]]
        sent = time.monotonic()
        while stamp not in self.answered:
            rclpy.spin_once(self, timeout_sec=0.05)
            if time.monotonic() - sent > self.args.resend:
                publisher.publish(sweep)
                self.resent += 1
                sent = time.monotonic()


def message_class(message_type: str):
    """``sensor_msgs/msg/PointCloud2`` -> the installed rclpy message class (ImportError when not installed)."""
    package, kind, name = message_type.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--topics", nargs="*", help="topics to play (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--depth", type=int, default=10, help="publisher queue depth (reliable)")
    parser.add_argument("--wait-for", nargs="*", default=[], help="start once these topics have subscribers")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for them at most")
    parser.add_argument("--lockstep", nargs=2, metavar=("SWEEP_TOPIC", "OUTPUT_TOPIC"),
                        help="publish the next sweep only once the node's output for this one came back")
    parser.add_argument("--resend", type=float, default=5.0, help="with --lockstep: seconds before sending again")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds more before the first message")
    parser.add_argument("--linger", type=float, default=5.0,
                        help="seconds to stay after the last message (reliable delivery may resend it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    own, ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)
    args = parse_args(own)
    if args.rate <= 0:
        print("error: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        return run_node(NODE_NAME, lambda: BagPlayer(args), BagPlayer.play, ros_args)
    except BagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this program's arguments, ``--ros-args ...`` for rclpy)."""
    if "--ros-args" not in argv:
        return list(argv), []
    index = argv.index("--ros-args")
    return list(argv[:index]), list(argv[index:])


if __name__ == "__main__":
    sys.exit(main())
