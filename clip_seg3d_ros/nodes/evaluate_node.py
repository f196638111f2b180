"""``ros2 run clip_seg3d_ros evaluate``: metrics of the running segmenter against a ground-truth cloud topic.

Listens to the segmenter's labelled clouds and to ground truth of the same sweeps (the input cloud with a
``label`` UINT16 field, 65535 unlabelled; e.g. published by rosbag replay of a labelled data set), pairs them
by header stamp and accumulates one confusion matrix (:class:`~clip_seg3d_ros.evaluation.stream.StreamEvaluator`).
Every ``report_period`` seconds and at the end it prints the metrics table; at the end it writes ``output``
(metrics.json, the layout training writes: :func:`~clip_seg3d_ros.evaluation.summary.write_metrics_json`).

Topics (remap with ``--ros-args -r``): ``/clip_seg3d_node/output/points`` (predictions),
``/clip_seg3d_node/output/label_info`` (the segmenter's class names: predictions are mapped to the ground
truth's classes by name), ``/points_gt`` (ground truth). Subscriptions are best effort, deep (``queue_depth``)
so that a burst is not lost, and match reliable and best-effort publishers alike; large clouds over best effort
can be lost on the way, so where every sweep must count, make them reliable with the standard parameters
``qos_overrides./points_gt.subscription.reliability:=reliable`` (and the same for the predictions topic).

Parameters: ``checkpoint`` (the ground truth's classes and seen flags are the checkpoint's) or
``class_names`` + ``unseen_classes``; ``output`` (metrics.json path, "" = none); ``max_sweeps`` (stop after
this many evaluated sweeps, 0 = run until interrupted); ``report_period`` (s); ``capacity`` (unpaired sweeps
kept per stream); ``queue_depth``.
"""

from __future__ import annotations

import sys

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import PointCloud2

try:
    from vision_msgs.msg import LabelInfo
except ImportError:  # vision_msgs without LabelInfo: predictions are taken as indices into the ground truth's classes
    LabelInfo = None

from clip_seg3d_ros.evaluation.stream import StreamEvaluator, ground_truth_classes
from clip_seg3d_ros.evaluation.summary import format_metrics_table, write_metrics_json
from clip_seg3d_ros.nodes.main import run_node
from clip_seg3d_ros.ros.label_info import class_names_from_label_info
from clip_seg3d_ros.ros.pointcloud2 import PointCloud2Error, read_labels
from clip_seg3d_ros.ros.tf import stamp_to_ns
from clip_seg3d_ros.runtime.settings import string_list

NODE_NAME = "clip_seg3d_evaluate"
PREDICTIONS_TOPIC = "/clip_seg3d_node/output/points"
LABEL_INFO_TOPIC = "/clip_seg3d_node/output/label_info"
GROUND_TRUTH_TOPIC = "/points_gt"
LOG_THROTTLE_S = 5.0

PARAMETERS = {
    "checkpoint": ("", "checkpoint whose classes and seen flags the ground truth uses"),
    "class_names": ([], "the ground truth's classes (label value i = class_names[i]); overrides checkpoint"),
    "unseen_classes": ([], "which of class_names were unseen in training (for mIoU seen / unseen / hIoU)"),
    "output": ("", "where to write metrics.json at the end; empty: nowhere"),
    "max_sweeps": (0, "stop after this many evaluated sweeps; 0: run until interrupted"),
    "report_period": (10.0, "seconds between printed reports"),
    "capacity": (50, "unpaired sweeps kept per stream while waiting for their partner"),
    "queue_depth": (50, "subscription queue depth"),
}


class EvaluateNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        values = {
            name: self.declare_parameter(name, default, ParameterDescriptor(description=text, dynamic_typing=True,
                                                                            read_only=True)).value
            for name, (default, text) in PARAMETERS.items()
        }
        names, seen = ground_truth_classes(str(values["checkpoint"]), string_list("class_names", values["class_names"]),
                                           string_list("unseen_classes", values["unseen_classes"]))
        self.evaluator = StreamEvaluator(names, seen, capacity=int(values["capacity"]))
        self.output = str(values["output"])
        self.max_sweeps = int(values["max_sweeps"])
        self.finished = False
        depth = int(values["queue_depth"])
        qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=depth)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        # Overridable (qos_overrides.<topic>.subscription.reliability: reliable) where nothing may be lost.
        overridable = QoSOverridingOptions.with_default_policies()
        self.create_subscription(PointCloud2, PREDICTIONS_TOPIC, self._on_prediction, qos,
                                 qos_overriding_options=overridable)
        self.create_subscription(PointCloud2, GROUND_TRUTH_TOPIC, self._on_ground_truth, qos,
                                 qos_overriding_options=overridable)
        if LabelInfo is not None:
            self.create_subscription(LabelInfo, LABEL_INFO_TOPIC, self._on_label_info, latched)
        self.create_timer(float(values["report_period"]), self.report)
        self.get_logger().info(f"evaluating against ground-truth classes {names}")

    def _on_label_info(self, message) -> None:
        try:
            names = class_names_from_label_info(message)
            self.evaluator.set_prediction_classes(names)
        except ValueError as error:
            self.get_logger().error(f"unusable label_info: {error}")
            return
        self.get_logger().info(f"segmenter classes: {names}")

    def _on_prediction(self, message: PointCloud2) -> None:
        self._add(self.evaluator.add_prediction, message)

    def _on_ground_truth(self, message: PointCloud2) -> None:
        self._add(self.evaluator.add_ground_truth, message)

    def _add(self, add, message: PointCloud2) -> None:
        if self.finished:
            return
        try:
            labels = read_labels(message, "label")
        except PointCloud2Error as error:
            self.get_logger().warning(f"skipping a cloud without usable labels: {error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        add(stamp_to_ns(message.header.stamp), labels)
        if self.max_sweeps and self.evaluator.sweeps >= self.max_sweeps:
            self.finished = True  # main() stops spinning, reports and writes the file
            self.get_logger().info(f"evaluated {self.evaluator.sweeps} sweeps: done")

    def report(self) -> None:
        evaluator = self.evaluator
        if not evaluator.sweeps:
            self.get_logger().info(f"no sweep paired yet (unmatched {evaluator.unmatched})")
            return
        self.get_logger().info(
            f"{evaluator.sweeps} sweeps, unmatched {evaluator.unmatched}, rejected {evaluator.rejected}\n"
            + format_metrics_table(evaluator.metrics(), evaluator.seen)
        )

    def close(self) -> None:
        """The final report and metrics.json (at the end of the run, also after Ctrl-C)."""
        self.report()
        self.write()

    def write(self) -> None:
        if self.output and self.evaluator.sweeps:
            path = write_metrics_json(self.evaluator.metrics(), self.evaluator.class_names, self.evaluator.seen,
                                      self.output)
            self.get_logger().info(f"wrote {path}")


def spin_until_finished(node: EvaluateNode) -> None:
    while rclpy.ok() and not node.finished:
        rclpy.spin_once(node, timeout_sec=0.5)


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, EvaluateNode, spin_until_finished, args)


if __name__ == "__main__":
    sys.exit(main())
