"""Replay a rosbag2 through the node's own processing path, without ROS: labelled clouds, metrics, latency.

    python -m clip_seg3d_ros.tools.replay BAG --checkpoint model.pt --out labelled_bag --metrics metrics.json

Every message on the points topic is decoded (:mod:`clip_seg3d_ros.ros.pointcloud2`), labelled by
:meth:`clip_seg3d_ros.runtime.processor.SweepProcessor.process` (what the node runs on every sweep) and, with
``--out``, written to a new bag on ``/points_labelled`` (input fields + ``label`` + ``score``, the input's
header, logged at the input's time). Nothing else is copied.

Ground truth: the message on ``--gt-topic`` with the same header stamp, its ``label`` field (65535 = none).
The metrics are those of training's evaluation (:mod:`clip_seg3d_ros.evaluation.metrics`, same ``metrics.json`` keys),
over the ground truth's classes: the class names stored by ``clip_seg3d_ros.tools.to_bag`` in the bag's
metadata, or, for a bag without them (recorded by ROS), the checkpoint's vocabulary. Predictions map to those
classes by name. A class's seen/unseen flag is the vocabulary's (classes it lacks count as unseen).

With ``--use-cameras`` each sweep also gets the camera frames nearest its stamp (images, camera_info and the
LiDAR -> camera transform from /tf_static and /tf) and camera fusion with a CLIP teacher
(``--clip-weights``; see :mod:`clip_seg3d_ros.runtime.fusion`).

A malformed cloud (bad CDR, bad layout) is logged, counted by reason and skipped; the replay goes on.
Problems with the bag itself are one exception with a one-line message: ``BagError`` (missing, truncated,
corrupt; :mod:`clip_seg3d_ros.ros.bag_reader`) or its subclass :class:`ReplayError` (no points topic, no
usable cloud at all, an output bag that exists); the command prints it and exits with status 1, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Writer, WriterError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import CheckpointError, load_model
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, summarize
from clip_seg3d_ros.runtime.processor import STAGES, SweepProcessor
from clip_seg3d_ros.ros.bag_reader import (
    BagCameras,
    BagError,
    BagLookup,
    TopicIndex,
    bag_class_names,
    one_line,
    open_bag,
    read_messages,
)
from clip_seg3d_ros.ros.pointcloud2 import (
    PointCloud2Error,
    PointCloud2Types,
    create_labelled_cloud,
    read_labels,
    read_points,
    xyz_intensity,
)
from clip_seg3d_ros.ros.tf import stamp_to_ns
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.tools.to_bag import BAG_VERSION, STORAGES
from clip_seg3d_ros.evaluation.report import format_metrics_table, prediction_lookup, write_metrics_json

log = logging.getLogger(__name__)

CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
LABELLED_TOPIC = "/points_labelled"
PERCENTILES = (50, 95, 99)
DETAILED_WARNINGS = 5  # log each skip reason in full this many times, then only count it


class ReplayError(BagError):
    """The bag cannot be replayed at all (missing, unreadable, no points topic, no usable cloud)."""


@dataclass
class ReplayReport:
    """What a replay did: sweeps labelled, skipped (by reason), metrics, and per-stage latency."""

    bag: str
    class_names: list[str]
    seen: list[bool]
    sweeps: int = 0
    evaluated: int = 0
    skipped: Counter = field(default_factory=Counter)
    unevaluated: Counter = field(default_factory=Counter)
    camera_issues: Counter = field(default_factory=Counter)
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def latency_ms(self) -> dict[str, dict[str, float]]:
        """p50 / p95 / p99 / mean milliseconds of every stage over the labelled sweeps."""
        return {
            stage: {
                **{f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES},
                "mean": float(np.mean(values)),
            }
            for stage, values in self.timings_ms.items()
            if values
        }

    def summary(self) -> dict:
        """The metrics dictionary plus the replay's own figures (what ``--metrics`` writes)."""
        return {
            **self.metrics,
            "bag": self.bag,
            "sweeps": self.sweeps,
            "evaluated_sweeps": self.evaluated,
            "skipped": dict(self.skipped),
            "unevaluated": dict(self.unevaluated),
            "camera_issues": dict(self.camera_issues),
            "latency_ms": self.latency_ms(),
        }


class _SkipLog:
    """Counts skipped sweeps by reason; logs the first few of each reason in full."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def __call__(self, reason: str, detail: str, log_time: int) -> None:
        self.counter[reason] += 1
        if self.counter[reason] <= DETAILED_WARNINGS:
            log.warning("sweep at %d ns skipped, %s: %s", log_time, reason, detail)


class LabelledBagWriter:
    """The output bag: one ``/points_labelled`` cloud per labelled sweep, logged at its input's bag time."""

    def __init__(self, path: str | Path, storage: str) -> None:
        if storage not in STORAGES:
            raise ReplayError(f"output storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.cloud_types = PointCloud2Types.from_rosbags(self.typestore)
        try:
            self.writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
            self.writer.open()
        except WriterError as error:
            raise ReplayError(f"cannot write the labelled bag: {one_line(error)}") from error
        self.connection = self.writer.add_connection(LABELLED_TOPIC, CLOUD_TYPE, typestore=self.typestore)

    def write(self, message, labels: np.ndarray, scores: np.ndarray, log_time: int) -> None:
        labelled = create_labelled_cloud(message, labels, scores, self.cloud_types)
        labelled.header = self._header(message.header)
        self.writer.write(self.connection, log_time, self.typestore.serialize_cdr(labelled, CLOUD_TYPE))

    def _header(self, header):
        """A copy of the input's header in the output bag's own message types (the reader's are other classes)."""
        types = self.typestore.types
        stamp = types["builtin_interfaces/msg/Time"](sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(header.frame_id))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def replay_bag(
    bag: str | Path,
    processor: SweepProcessor,
    *,
    out: str | Path | None = None,
    points_topic: str = "/points",
    gt_topic: str | None = "/points_gt",
    use_cameras: bool = False,
    camera_max_offset_s: float = 0.1,
    out_storage: str = "mcap",
    progress: bool = True,
) -> ReplayReport:
    """Label every cloud of ``points_topic`` in ``bag`` with ``processor``; see the module docstring."""
    bag = Path(bag)
    reader, lookup_reader = open_bag(bag), None
    writer = None
    try:
        lookup_reader = open_bag(bag)
        topics = reader.topics
        if points_topic not in topics:
            raise ReplayError(f"{bag}: no topic {points_topic} (topics: {sorted(topics)})")
        for topic in (points_topic, gt_topic):
            if topic in topics and topics[topic].msgtype != CLOUD_TYPE:
                raise ReplayError(f"{bag}: {topic} holds {topics[topic].msgtype}, not {CLOUD_TYPE}")
        lookup = BagLookup(lookup_reader)
        class_names = bag_class_names(bag) or processor.class_names
        try:
            to_dataset = prediction_lookup(processor.class_names, class_names)
        except ValueError as error:
            raise ReplayError(f"{bag}: {one_line(error)}") from error
        vocabulary = processor.vocabulary
        seen = [vocabulary.seen[vocabulary.names.index(name)] if name in vocabulary.names else False
                for name in class_names]
        report = ReplayReport(bag=str(bag), class_names=list(class_names), seen=seen)
        confusion = ConfusionMatrix(len(class_names))
        has_gt = gt_topic is not None and gt_topic in topics
        gt_index = lookup.index(gt_topic) if has_gt else None
        cameras = BagCameras(lookup, int(camera_max_offset_s * 1e9)) if use_cameras else None
        writer = LabelledBagWriter(out, out_storage) if out is not None else None
        skip = _SkipLog(report.skipped)
        connections = topics[points_topic].connections
        messages = read_messages(reader, connections)
        total = sum(connection.msgcount for connection in connections)
        for connection, log_time, raw in tqdm(messages, total=total, desc="replay", unit="sweep",
                                              disable=not progress):
            started = time.perf_counter()
            try:
                message = reader.deserialize(raw, connection.msgtype)
                points = read_points(message)
                xyzi = xyz_intensity(points)
            except PointCloud2Error as error:
                skip(f"malformed cloud: {error.reason}", str(error), log_time)
                continue
            except Exception as error:  # whatever the bytes are, one bad message must not stop a replay
                skip("undecodable message", f"{type(error).__name__}: {error}", log_time)
                continue
            decode_ms = 1000.0 * (time.perf_counter() - started)
            stamp_ns = stamp_to_ns(message.header.stamp)
            frames = cameras.frames(str(message.header.frame_id), stamp_ns, report.camera_issues) if cameras else ()
            try:
                result = processor.process(xyzi, frames)
            except ValueError as error:
                skip("processing failed", str(error), log_time)
                continue
            report.sweeps += 1
            for stage, value in {"decode": decode_ms, **result.timings_ms}.items():
                report.timings_ms.setdefault(stage, []).append(value)
            if writer is not None:
                started = time.perf_counter()
                writer.write(message, result.labels, result.scores, log_time)
                report.timings_ms.setdefault("encode", []).append(1000.0 * (time.perf_counter() - started))
            if gt_index is not None:
                truth = _ground_truth(lookup, gt_topic, gt_index, stamp_ns, len(points), len(class_names),
                                      report.unevaluated)
                if truth is not None:
                    confusion.update(to_dataset[result.labels], truth)
                    report.evaluated += 1
            else:
                report.unevaluated["no ground-truth topic"] += 1
        if report.sweeps == 0:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in report.skipped.items()) or "no messages"
            raise ReplayError(f"{bag}: no cloud on {points_topic} could be labelled ({reasons})")
        report.metrics = summarize(confusion, class_names, seen)
        if writer is not None:
            writer.close()
            writer = None
        return report
    finally:
        if writer is not None:
            writer.abort()
        reader.close()
        if lookup_reader is not None:
            lookup_reader.close()


def _ground_truth(
    lookup: BagLookup, topic: str, index: TopicIndex, stamp_ns: int, num_points: int, num_classes: int,
    unevaluated: Counter,
) -> np.ndarray | None:
    """The ground-truth labels of the sweep stamped ``stamp_ns`` (None, counted by reason, where there are none)."""
    position = index.exact(stamp_ns)
    if position is None:
        unevaluated["no ground truth with this stamp"] += 1
        return None
    try:
        labels = read_labels(lookup.fetch(topic, position))
    except PointCloud2Error as error:
        unevaluated[f"malformed ground truth: {error.reason}"] += 1
        return None
    if len(labels) != num_points:
        unevaluated["ground truth and cloud differ in size"] += 1
        return None
    if labels.max(initial=-1) >= num_classes:
        unevaluated["ground-truth label beyond the class list"] += 1
        return None
    return labels


def build_processor(args: argparse.Namespace) -> SweepProcessor:
    """The processor the node would build from these settings (checkpoint, device, fusion)."""
    checkpoint, model = load_model(args.checkpoint)
    segmenter = Segmenter(model, checkpoint.vocabulary, device=args.device, calibration_bias=args.calibration_bias)
    fusion = None
    if args.use_cameras:
        from clip_seg3d_ros.runtime.fusion import CameraFusion
        from clip_seg3d_ros.teacher.open_clip_teacher import OpenClipTeacher, TeacherWeightsError

        model_name, _, tag = (args.clip_model or checkpoint.clip_model or "ViT-B-16/openai").partition("/")
        try:
            # OpenAI's weights from a local file need QuickGELU; for a registry tag open_clip knows it itself.
            teacher = OpenClipTeacher(model_name, pretrained=args.clip_weights or tag or None, device=args.device,
                                      quick_gelu=True if tag == "openai" and args.clip_weights else None)
            fusion = CameraFusion(teacher, checkpoint.vocabulary, weight=args.fusion_weight)
        except (TeacherWeightsError, ValueError) as error:
            raise ReplayError(f"--use-cameras: {one_line(error)}") from error
    return SweepProcessor(segmenter, score_threshold=args.score_threshold, max_points=args.max_points, fusion=fusion)


def format_latency(latency: dict[str, dict[str, float]]) -> str:
    ordered = [stage for stage in ("decode", *STAGES, "encode") if stage in latency]
    lines = [f"{'stage':<12} {'p50':>9} {'p95':>9} {'p99':>9}  (ms)"]
    lines += [f"{stage:<12} " + " ".join(f"{latency[stage][f'p{q}']:9.1f}" for q in PERCENTILES) for stage in ordered]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", type=Path, help="write the labelled clouds to this new bag")
    parser.add_argument("--out-storage", default="mcap", choices=sorted(STORAGES))
    parser.add_argument("--points-topic", default="/points")
    parser.add_argument("--gt-topic", default="/points_gt", help="ground-truth clouds with a `label` field")
    parser.add_argument("--metrics", type=Path, help="write the metrics and latency as JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration-bias", type=float, default=0.0, help="lowers the seen classes' logits")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="label -1 below this probability")
    parser.add_argument("--max-points", type=int, default=0, help="point budget per sweep (0: none)")
    parser.add_argument("--use-cameras", action="store_true", help="fuse CLIP's 2D predictions where cameras see")
    parser.add_argument("--clip-model", help="open_clip model[/tag] for fusion (default: the checkpoint's)")
    parser.add_argument("--clip-weights", help="local CLIP weights file for fusion")
    parser.add_argument("--fusion-weight", type=float, default=0.5, help="share of the 2D probabilities")
    parser.add_argument("--camera-max-offset", type=float, default=0.1, help="seconds between sweep and image")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        processor = build_processor(args)
        report = replay_bag(
            args.bag, processor, out=args.out, points_topic=args.points_topic, gt_topic=args.gt_topic,
            use_cameras=args.use_cameras, camera_max_offset_s=args.camera_max_offset,
            out_storage=args.out_storage, progress=not args.no_progress,
        )
    except (BagError, CheckpointError) as error:  # ReplayError is a BagError
        print(f"replay: {one_line(error)}", file=sys.stderr)
        return 1
    print(f"{report.sweeps} sweeps labelled, {report.evaluated} evaluated, {sum(report.skipped.values())} skipped")
    for reason, count in sorted(report.skipped.items()):
        print(f"  skipped ({reason}): {count}")
    for reason, count in sorted(report.unevaluated.items()):
        print(f"  not evaluated ({reason}): {count}")
    if report.evaluated:
        print(format_metrics_table(report.metrics, report.seen))
    print(format_latency(report.latency_ms()))
    if args.metrics is not None:
        write_metrics_json(report.summary(), report.class_names, report.seen, args.metrics)
        print(f"metrics written to {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
