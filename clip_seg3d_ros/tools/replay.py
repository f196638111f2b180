"""Replay a rosbag2 through the node's own processing path, without ROS: labelled clouds, metrics, latency.

    python -m clip_seg3d_ros.tools.replay BAG --checkpoint model.pt --out labelled_bag --metrics metrics.json

Every message on the points topic is decoded (:mod:`clip_seg3d_ros.ros.pointcloud2`), labelled by the
node's own runtime (:class:`clip_seg3d_ros.runtime.runtime.SegmentRuntime`, built from the node's settings:
every segmentation option below is the node parameter of the same name, with the same default) and, with
``--out``, written to a new bag on ``/points_labelled`` (input fields + ``label`` + ``score``, the input's
header, logged at the input's time; :class:`clip_seg3d_ros.ros.bag_writer.LabelledBagWriter`). Nothing else is
copied.

Ground truth: the message on ``--gt-topic`` with the same header stamp, its ``label`` field (65535 = none).
The metrics are those of training's evaluation (:mod:`clip_seg3d_ros.evaluation.metrics`, same
``metrics.json`` keys), over the ground truth's classes: the class names stored by
:mod:`clip_seg3d_ros.tools.to_bag` in the bag's metadata, or, for a bag without them (recorded by ROS), the
checkpoint's vocabulary. Predictions map to those
classes by name. A class's seen/unseen flag is the vocabulary's (classes it lacks count as unseen).

With ``--use-cameras`` each sweep also gets the camera frames nearest its stamp (images, camera_info and the
LiDAR -> camera transform from /tf_static and /tf) and camera fusion with a CLIP teacher
(:mod:`clip_seg3d_ros.runtime.fusion`). CLIP is loaded as the node loads it: only from named weights found
offline (``--clip-weights`` or the checkpoint's tag), never randomly initialised, never downloaded; otherwise
one clear error.

A sweep that cannot be labelled is logged, counted by reason and skipped, and the replay goes on: a
malformed cloud ("malformed cloud: <the decoder's reason>", or "undecodable message" for bytes that are not
CDR), an empty cloud (width or height 0: "empty cloud"), a sweep the runtime refuses ("processing failed").
Problems with the bag itself are one exception with a one-line message: ``BagError`` (missing, truncated,
corrupt; :mod:`clip_seg3d_ros.ros.bag_reader`) or its subclass :class:`ReplayError` (no points topic, no
sweep labelled at all, an output bag that exists); so are an unusable checkpoint or setting (CheckpointError,
ValueError). The command prints it as one ``error: ...`` line and exits with status 1, no traceback; a
replay that fails leaves no output bag behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import CheckpointError
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, prediction_lookup, summarize
from clip_seg3d_ros.evaluation.summary import format_metrics_table, write_metrics_json
from clip_seg3d_ros.files import atomic_outputs, os_error_line, signals_interrupt
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
from clip_seg3d_ros.ros.bag_writer import CLOUD_TYPE, STORAGES, LabelledBagWriter
from clip_seg3d_ros.ros.pointcloud2 import (
    PointCloud2Error,
    read_labels,
    read_points,
    xyz_intensity,
)
from clip_seg3d_ros.ros.tf import stamp_to_ns
from clip_seg3d_ros.runtime.runtime import STAGES, NonFiniteOutputError, SegmentRuntime
from clip_seg3d_ros.runtime.settings import RUNTIME_SCHEMA, RuntimeSettings, Setting

log = logging.getLogger(__name__)

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


def replay_bag(
    bag: str | Path,
    runtime: SegmentRuntime,
    *,
    out: str | Path | None = None,
    points_topic: str = "/points",
    gt_topic: str | None = "/points_gt",
    use_cameras: bool = False,
    camera_max_offset_s: float = 0.1,
    out_storage: str = "mcap",
    progress: bool = True,
) -> ReplayReport:
    """Label every cloud of ``points_topic`` in ``bag`` with ``runtime`` (the node's); see the module docstring."""
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
        class_names = bag_class_names(bag) or runtime.class_names
        try:
            to_dataset = prediction_lookup(runtime.class_names, class_names)
        except ValueError as error:
            raise ReplayError(f"{bag}: {one_line(error)}") from error
        vocabulary = runtime.vocabulary
        seen = [vocabulary.seen[vocabulary.names.index(name)] if name in vocabulary.names else False
                for name in class_names]
        report = ReplayReport(bag=str(bag), class_names=list(class_names), seen=seen)
        confusion = ConfusionMatrix(len(class_names))
        has_gt = gt_topic is not None and gt_topic in topics
        gt_index = lookup.index(gt_topic) if has_gt else None
        # A header stamp that two sweeps (or two ground-truth clouds) share cannot pair them: there the sweep's log
        # time must match too (what to_bag writes), and a sweep without one unambiguous match is not evaluated.
        sweep_index = lookup.index(points_topic) if has_gt else None
        for topic, index in ((points_topic, sweep_index), (gt_topic, gt_index)):
            if index is not None and index.duplicate_stamps():
                log.warning("%s: %d messages share their header stamp with another; ground truth is paired by "
                            "stamp and log time there", topic, index.duplicate_stamps())
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
            if len(points) == 0:  # recorders do write these (width 0): no sweep to label, not a labelled one
                skip("empty cloud", f"{int(message.height)}x{int(message.width)} cloud", log_time)
                continue
            decode_ms = 1000.0 * (time.perf_counter() - started)
            stamp_ns = stamp_to_ns(message.header.stamp)
            frames = cameras.frames(str(message.header.frame_id), stamp_ns, report.camera_issues) if cameras else ()
            try:
                result = runtime.process(xyzi, frames)
            except NonFiniteOutputError as error:  # no labels rather than wrong ones
                skip("non-finite output", str(error), log_time)
                continue
            except (ValueError, RuntimeError) as error:  # refused points, a torch error (e.g. out of memory)
                skip("processing failed", f"{type(error).__name__}: {error}", log_time)
                continue
            report.sweeps += 1
            for stage, value in {"decode": decode_ms, **result.timings_ms}.items():
                report.timings_ms.setdefault(stage, []).append(value)
            if writer is not None:
                started = time.perf_counter()
                writer.write(message, result.labels, result.scores, log_time, points)
                report.timings_ms.setdefault("encode", []).append(1000.0 * (time.perf_counter() - started))
            if gt_index is not None:
                shared_stamp = len(sweep_index.all_at(stamp_ns)) > 1
                truth = _ground_truth(lookup, gt_topic, gt_index, stamp_ns, log_time, shared_stamp, len(points),
                                      len(class_names), report.unevaluated)
                if truth is not None:
                    confusion.update(to_dataset[result.labels], truth)
                    report.evaluated += 1
            else:
                report.unevaluated["no ground-truth topic"] += 1
        if report.sweeps == 0:  # a replay that labelled nothing failed, whatever the reasons (exit status 1)
            reasons = ", ".join(f"{reason}: {count}" for reason, count in report.skipped.items()) or "no messages"
            raise ReplayError(f"{bag}: no cloud on {points_topic} could be labelled ({reasons})")
        report.metrics = summarize(confusion, class_names, seen)
        if writer is not None:
            writer.close()
            writer = None
        return report
    finally:
        if writer is not None:  # failed: the output is incomplete, and this replay created its folder
            writer.abort()
            shutil.rmtree(out, ignore_errors=True)
        reader.close()
        if lookup_reader is not None:
            lookup_reader.close()


def _ground_truth(
    lookup: BagLookup, topic: str, index: TopicIndex, stamp_ns: int, log_time: int, shared_stamp: bool,
    num_points: int, num_classes: int, unevaluated: Counter,
) -> np.ndarray | None:
    """The ground-truth labels of the sweep stamped ``stamp_ns`` (None, counted by reason, where there are none).

    The pairing key is the header stamp where it is unique on both topics, else (``shared_stamp``: another sweep
    has it too) the stamp and the sweep's ``log_time`` in the bag: never a guess between two clouds."""
    positions = index.all_at(stamp_ns)
    if not positions:
        unevaluated["no ground truth with this stamp"] += 1
        return None
    if shared_stamp or len(positions) > 1:
        positions = [position for position in positions if index.log_times[position] == log_time]
        if len(positions) != 1:
            unevaluated["ambiguous ground truth: the stamp is shared and no log time matches"] += 1
            return None
    position = positions[0]
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


def runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    """The node's settings from replay's options: the schema's default for every option not given."""
    given = {entry.name: getattr(args, entry.name) for entry in RUNTIME_SCHEMA}
    return RuntimeSettings.from_values({name: value for name, value in given.items() if value is not None})


def setting_option_value(entry: Setting):
    """argparse's ``type`` for a setting's option: the text as the setting's type, checked by the schema, whose
    message argparse prints when it is refused."""
    def parse(text: str):
        value = text
        if entry.type in (int, float):
            with contextlib.suppress(ValueError):  # not a number: the schema's check names the type expected
                value = entry.type(text)
        try:
            return entry.check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    parse.__name__ = entry.type.__name__
    return parse


def setting_help(entry: Setting) -> str:
    """The option's help: the setting's description, its rule (argparse lists choices itself), its default."""
    rule = "" if entry.choices else entry.rule()
    parts = [entry.summary(), rule, f"default: {entry.default!r}" if entry.default not in ("", ()) else ""]
    return "; ".join(part for part in parts if part).replace("%", "%%")


def add_setting_options(group, schema: Sequence[Setting]) -> None:
    """One option per setting: ``--name`` with dashes for underscores, its type, choices and help from the
    schema. The default is None, meaning the schema's default (:func:`runtime_settings` passes on only what was
    given)."""
    for entry in schema:
        option = "--" + entry.name.replace("_", "-")
        if entry.type is bool:
            group.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=setting_help(entry))
        elif entry.type is tuple:
            group.add_argument(option, nargs="*", default=None, metavar="NAME", help=setting_help(entry))
        else:
            group.add_argument(option, type=setting_option_value(entry), choices=entry.choices or None,
                               required=entry.required, default=None, help=setting_help(entry))


def format_latency(latency: dict[str, dict[str, float]]) -> str:
    ordered = [stage for stage in ("decode", *STAGES, "encode") if stage in latency]
    lines = [f"{'stage':<12} {'p50':>9} {'p95':>9} {'p99':>9}  (ms)"]
    lines += [f"{stage:<12} " + " ".join(f"{latency[stage][f'p{q}']:9.1f}" for q in PERCENTILES) for stage in ordered]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("--out", type=Path, help="write the labelled clouds to this new bag")
    parser.add_argument("--out-storage", default="mcap", choices=sorted(STORAGES))
    parser.add_argument("--points-topic", default="/points")
    parser.add_argument("--gt-topic", default="/points_gt", help="ground-truth clouds with a `label` field")
    parser.add_argument("--metrics", type=Path, help="write the metrics and latency as JSON here")
    parser.add_argument("--camera-max-offset", type=float, default=0.1, help="seconds between sweep and image")
    parser.add_argument("--no-progress", action="store_true")
    # The node's parameters (clip_seg3d_ros.runtime.settings), with the node's defaults.
    add_setting_options(parser.add_argument_group("segmentation (the node's parameters of the same names)"),
                        RUNTIME_SCHEMA)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # The labelled bag and the metrics appear together, whole, or not at all (an error, Ctrl-C, SIGTERM).
        with signals_interrupt(), atomic_outputs([args.out, args.metrics]) as (out, metrics):
            settings = runtime_settings(args)
            runtime = SegmentRuntime.load(settings)
            report = replay_bag(
                args.bag, runtime, out=out, points_topic=args.points_topic, gt_topic=args.gt_topic,
                use_cameras=settings.use_cameras, camera_max_offset_s=args.camera_max_offset,
                out_storage=args.out_storage, progress=not args.no_progress,
            )
            if metrics is not None:
                write_metrics_json(report.summary(), report.class_names, report.seen, metrics)
    except OSError as error:  # no space, read-only, permission, not a directory, exists already
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 1
    except (BagError, CheckpointError, ValueError) as error:  # ReplayError is a BagError
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(f"{report.sweeps} sweeps labelled, {report.evaluated} evaluated, {sum(report.skipped.values())} skipped")
    for reason, count in sorted(report.skipped.items()):
        print(f"  skipped ({reason}): {count}")
    for reason, count in sorted(report.unevaluated.items()):
        print(f"  not evaluated ({reason}): {count}")
    if report.evaluated:
        print(format_metrics_table(report.metrics, report.seen))
    print(format_latency(report.latency_ms()))
    if args.out is not None:
        print(f"labelled bag written to {args.out}")
    if args.metrics is not None:
        print(f"metrics written to {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
