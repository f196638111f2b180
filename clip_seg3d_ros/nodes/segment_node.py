"""The ROS 2 segmentation node: ``ros2 run clip_seg3d_ros segment --ros-args -p checkpoint:=model.pt``.

Glue, like everything in :mod:`clip_seg3d_ros.nodes`: topics, QoS, TF, threads and parameters; what a sweep
becomes is decided by :class:`~clip_seg3d_ros.runtime.runtime.SegmentRuntime`
(built from the same settings, and called the same way, as rosbag replay's), messages are converted by
:mod:`clip_seg3d_ros.ros`.

Topics (relative to the node, remap them in the launch file):

- ``~/input/points`` (sensor_msgs/PointCloud2; sensor-data QoS: best effort, keep last 1, overridable with
  the standard ``qos_overrides.<topic>.subscription.*`` parameters): x, y, z and optionally intensity; any
  other fields are carried to the output unchanged.
- with ``use_cameras``: each of ``camera_topics`` (sensor_msgs/Image, rgb8/bgr8/mono8...) and its sibling
  ``camera_info``. The sweep drives: per camera the image nearest its stamp within ``slop`` among the last
  ``queue_size`` (:mod:`clip_seg3d_ros.nodes.camera_buffer`), the latest CameraInfo, and the LiDAR-to-camera
  transform from the parameters ``extrinsics.<camera>.*`` or else TF (camera optical frame <- cloud frame, at
  the sweep's stamp, else the latest). A camera without an image in time, CameraInfo, transform or a readable
  encoding is left out of that sweep (warned, throttled, and counted); the sweep is still labelled, from the
  other cameras or from 3D alone, and never waits for a camera.
- ``~/output/points`` (PointCloud2, reliable, keep last 1): the input cloud with ``label`` (UINT16 index into
  the label map, 65535 = ignored) and ``score`` (FLOAT32) per point, the input header.
- ``~/output/points_rgb`` (PointCloud2, when ``publish_rgb``): x, y, z, rgb in the class palette, for RViz.
- ``~/output/label_info`` (vision_msgs/LabelInfo, transient local): class id -> name, and the score threshold;
  re-published when the vocabulary changes (not published where vision_msgs has no LabelInfo).
- ``~/processing_time_ms/<stage>`` (std_msgs/Float32, per sweep): preprocess, inference, fusion,
  postprocess, total: plain numbers that rqt_plot / PlotJuggler show directly.
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` s): sweeps processed,
  skipped by reason, dropped, cameras left out by reason, mean stage times
  (:mod:`clip_seg3d_ros.nodes.sweep_stats`).

Behaviour: no work when nobody subscribes to ``~/output/points`` or ``~/output/points_rgb`` (counted as
skipped). Sweeps are processed in a worker thread fed by a one-sweep slot: when processing falls behind, the
newest sweep replaces the waiting one, which is counted as dropped; the queue never grows. A bad message or a
failing sweep is logged (throttled), counted and skipped; it never stops the node. ``vocabulary``,
``score_threshold``, ``calibration_bias`` and ``fusion_weight`` can be changed while running
(``ros2 param set``); the other parameters are read once. The parameters are the fields of
:class:`~clip_seg3d_ros.runtime.settings.RuntimeSettings` (shared with replay) and of the node's own
:class:`~clip_seg3d_ros.nodes.settings.NodeSettings`. A sweep in flight when the vocabulary changes is labelled
entirely with the old or entirely with the new one. SIGINT / SIGTERM: the sweep in flight is finished and
published, the model freed, exit code 0 (:mod:`clip_seg3d_ros.nodes.main`).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rcl_interfaces.srv import ListParameters
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # vision_msgs without LabelInfo (older than 4.1): the label map is not published
    LabelInfo = VisionClass = None

from clip_seg3d_ros.evaluation.colors import class_colors, label_colors
from clip_seg3d_ros.nodes.camera_buffer import CameraBuffer
from clip_seg3d_ros.nodes.latest_slot import LatestSlot
from clip_seg3d_ros.nodes.main import run_node
from clip_seg3d_ros.nodes.settings import (
    EXTRINSICS_DESCRIPTIONS,
    EXTRINSICS_KEYS,
    NODE_NAME,
    NODE_PARAMETERS,
    NodeSettings,
    camera_info_topic,
    camera_name,
    extrinsics_parameter,
    lidar_to_camera_from_parameters,
    node_parameter,
    unknown_parameter_warnings,
)
from clip_seg3d_ros.nodes.sweep_stats import ERROR, OK, WARN, SweepStatistics
from clip_seg3d_ros.ros.camera_frame import camera_frame_from_messages
from clip_seg3d_ros.ros.label_info import label_info_fields
from clip_seg3d_ros.ros.pointcloud2 import (
    PointCloud2Error,
    PointCloud2Types,
    create_labelled_cloud,
    create_rgb_cloud,
    read_points,
    xyz_intensity,
)
from clip_seg3d_ros.ros.tf import stamp_to_ns, transform_to_matrix
from clip_seg3d_ros.runtime.runtime import STAGES, NonFiniteOutputError, SegmentRuntime
from clip_seg3d_ros.runtime.settings import RuntimeSettings, Setting

LOG_THROTTLE_S = 5.0
INPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1,
                       durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTIC_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class SegmentationNode(Node):
    """Labels every LiDAR sweep it can keep up with; see the module docstring for topics and behaviour."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        runtime_settings, self.settings = self._declare_parameters()
        self.runtime = SegmentRuntime.load(runtime_settings)  # CheckpointError / ValueError: main() reports and exits
        self.stats = SweepStatistics()
        self.slot: LatestSlot[PointCloud2] = LatestSlot()
        self.cloud_types = PointCloud2Types.from_rclpy()
        self._palettes: dict[tuple[str, ...], np.ndarray] = {}

        self.points_publisher = self.create_publisher(PointCloud2, "~/output/points", OUTPUT_QOS)
        self.rgb_publisher = (
            self.create_publisher(PointCloud2, "~/output/points_rgb", OUTPUT_QOS) if self.settings.publish_rgb
            else None
        )
        self.label_info_publisher = (
            self.create_publisher(LabelInfo, "~/output/label_info", LATCHED_QOS) if LabelInfo is not None else None
        )
        self.time_publishers = {
            stage: self.create_publisher(Float32, f"~/processing_time_ms/{stage}", 10) for stage in STAGES
        }
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics)
        self._publish_label_info()

        # Sensor-data QoS by default; reliability, depth, ... can be overridden with the standard
        # qos_overrides.<topic>.subscription.* parameters (large clouds over best effort: docs/ros.md, QoS).
        self.create_subscription(PointCloud2, "~/input/points", self._on_sweep, INPUT_QOS,
                                 qos_overriding_options=QoSOverridingOptions.with_default_policies())
        if self.runtime.settings.use_cameras:
            self._subscribe_to_cameras()

        # Registered after declaring the parameters: declaring calls this callback too.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="clip_seg3d_worker", daemon=True)
        self._worker.start()
        cameras = f"cameras {list(self.settings.camera_topics)}" if self.runtime.settings.use_cameras else "no cameras"
        self.get_logger().info(f"segmenting {self.runtime.class_names} on {self.runtime.device}, {cameras}")

    # --- set-up -----------------------------------------------------------------------------------------------

    def _declare_parameters(self) -> tuple[RuntimeSettings, NodeSettings]:
        """Declare every parameter of the schema (:data:`NODE_PARAMETERS`) with its descriptor; read and validate
        them once, and warn about names in the params file that the node does not know.

        Dynamic typing, checked by the schema: ROS types an empty list as a byte array and would refuse
        ``score_threshold: 1`` (an integer) for a double. A value given at start-up (params file, ``-p``) is
        checked by the schema before rclpy applies the descriptor's range, so that a bad one is refused with the
        schema's message (a ValueError: main() reports it and exits).
        """
        overrides = self._parameter_overrides  # the params file's and -p values; rclpy has no public getter
        # First, so that a misspelt name is named even when start-up then fails (a "required" checkpoint).
        known = [*self.list_parameters([], ListParameters.Request.DEPTH_RECURSIVE).names,  # rclpy's own
                 *(entry.name for entry in NODE_PARAMETERS)]
        for warning in unknown_parameter_warnings(overrides, known):
            self.get_logger().warning(warning)
        defaults = {**RuntimeSettings.defaults(), **NodeSettings.defaults()}
        values = {}
        for entry in NODE_PARAMETERS:
            if entry.name in overrides:
                entry.check(overrides[entry.name].value)
            values[entry.name] = self.declare_parameter(entry.name, defaults[entry.name],
                                                        parameter_descriptor(entry)).value
        runtime = RuntimeSettings.from_values({name: values[name] for name in RuntimeSettings.names()})
        node = NodeSettings.from_values({name: values[name] for name in NodeSettings.names()},
                                        use_cameras=runtime.use_cameras)
        return runtime, node

    def _subscribe_to_cameras(self) -> None:
        """Per camera: its images into a bounded buffer, its latest CameraInfo, and its extrinsics (parameters
        ``extrinsics.<camera>.*``, else TF). No synchroniser: a sweep never waits for a camera."""
        self.cameras = {camera_name(topic): topic for topic in self.settings.camera_topics}
        if len(self.cameras) != len(self.settings.camera_topics):
            raise ValueError(f"camera_topics must lie in different namespaces (they name the cameras and their "
                             f"extrinsics parameters), got {list(self.settings.camera_topics)}")
        self.camera_buffer = CameraBuffer(list(self.cameras), self.settings.queue_size,
                                          int(self.settings.slop * 1e9))
        self.fixed_extrinsics = {}
        for camera in self.cameras:
            values = {}
            for key in EXTRINSICS_KEYS:
                descriptor = ParameterDescriptor(description=EXTRINSICS_DESCRIPTIONS[key], dynamic_typing=True,
                                                 read_only=True)
                values[key] = self.declare_parameter(extrinsics_parameter(camera, key), [], descriptor).value
            matrix = lidar_to_camera_from_parameters(camera, values)
            if matrix is not None:
                self.fixed_extrinsics[camera] = matrix
        self.tf_buffer = self._transform_buffer()
        without = sorted(set(self.cameras) - set(self.fixed_extrinsics))
        if without and self.tf_buffer is None:
            self.get_logger().warning(f"cameras {without} have no extrinsics parameters and tf2_ros is not installed: "
                                      "they are left out of every sweep")
        image_qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                               depth=self.settings.queue_size)
        for camera, topic in self.cameras.items():
            self.create_subscription(Image, topic, self._image_keeper(camera), image_qos)
            self.create_subscription(CameraInfo, camera_info_topic(topic),
                                     lambda message, camera=camera: self.camera_buffer.add_info(camera, message),
                                     qos_profile_sensor_data)

    def _transform_buffer(self):
        """A TF2 buffer and listener where tf2_ros is installed and some camera needs TF, else None.

        tf2_ros is imported here, not with the node: the LiDAR path (and cameras calibrated by parameters)
        need only rclpy and the message packages. Cameras on with no way at all to place them is a start-up
        error that names what to set or install.
        """
        if len(self.fixed_extrinsics) == len(self.cameras):
            return None
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError as error:
            if not self.fixed_extrinsics:
                raise ValueError(
                    "use_cameras needs each camera's LiDAR-to-camera transform: set the parameters "
                    f"extrinsics.<camera>.lidar_to_camera (or .translation + .rotation) for cameras "
                    f"{sorted(self.cameras)}, or install tf2_ros to read them from TF ({error})") from error
            return None
        buffer = Buffer()
        self.tf_listener = TransformListener(buffer, self)
        return buffer

    # --- callbacks (executor thread): cheap, never block ---------------------------------------------------------

    def _image_keeper(self, camera: str):
        def keep(message: Image) -> None:
            self.camera_buffer.add_image(camera, stamp_to_ns(message.header.stamp), message)

        return keep

    def _on_sweep(self, cloud: PointCloud2) -> None:
        nobody = self.points_publisher.get_subscription_count() == 0 and (
            self.rgb_publisher is None or self.rgb_publisher.get_subscription_count() == 0
        )
        if nobody:
            self.stats.record_skipped("no_subscribers")
            return
        if self.slot.put(cloud):
            self.stats.record_dropped()

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        try:  # every value checked by the schema before any is applied
            values = {parameter.name: node_parameter(parameter.name).check(parameter.value) for parameter in parameters}
            for name, value in values.items():
                self.runtime.apply(name, value)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        names = {parameter.name for parameter in parameters}
        if names & {"vocabulary", "score_threshold"}:
            self._publish_label_info()
        if "vocabulary" in names:
            self.get_logger().info(f"vocabulary is now {self.runtime.class_names}")
        return SetParametersResult(successful=True)

    def _publish_label_info(self) -> None:
        if self.label_info_publisher is None:
            return
        message = LabelInfo(**label_info_fields(self.runtime.class_names, self.runtime.score_threshold,
                                                VisionClass))
        message.header.stamp = self.get_clock().now().to_msg()
        self.label_info_publisher.publish(message)

    def _publish_diagnostics(self) -> None:
        report = self.stats.report()
        status = DiagnosticStatus(
            level=DIAGNOSTIC_LEVELS[report.level],
            name=f"{self.get_fully_qualified_name()}: LiDAR segmentation",
            message=report.message,
            hardware_id=str(self.runtime.device),
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    # --- worker thread -----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while rclpy.ok():
            cloud = self.slot.take()
            if cloud is None:  # the slot was closed: shutting down
                return
            try:
                self._process(cloud)
            except NonFiniteOutputError as error:  # no labels rather than wrong ones: /diagnostics says ERROR
                self.stats.record_skipped("non_finite_output")
                self.get_logger().error(f"not publishing a sweep: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            except (PointCloud2Error, ValueError) as error:
                self.stats.record_skipped("bad_message")
                self.get_logger().warning(f"skipping a sweep: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as error:  # a failing sweep (e.g. CUDA out of memory) must not stop the node
                self.stats.record_skipped("processing_error")
                self.get_logger().error(f"processing a sweep failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, cloud: PointCloud2) -> None:
        decoded = read_points(cloud)  # once: the network's input and the output cloud's fields both come from it
        points = xyz_intensity(decoded)
        frames = self._camera_frames(cloud) if self.runtime.settings.use_cameras else []
        result = self.runtime.process(points, frames)
        self.points_publisher.publish(create_labelled_cloud(cloud, result.labels, result.scores, self.cloud_types,
                                                            decoded))
        if self.rgb_publisher is not None and self.rgb_publisher.get_subscription_count() > 0:
            colours = label_colors(result.labels, self._palette(result.class_names))
            self.rgb_publisher.publish(create_rgb_cloud(cloud.header, points[:, :3], colours, self.cloud_types,
                                                        height=int(cloud.height), width=int(cloud.width)))
        for stage, milliseconds in result.timings_ms.items():
            self.time_publishers[stage].publish(Float32(data=float(milliseconds)))
        self.stats.record_processed(result.timings_ms, result.unusable_points)

    def _camera_frames(self, cloud: PointCloud2) -> list:
        """One CameraFrame per camera with an image near the sweep, CameraInfo and extrinsics; each camera left
        out is counted by reason and warned about (throttled). Nothing here waits for a camera."""
        pairing = self.camera_buffer.pair(stamp_to_ns(cloud.header.stamp))
        for camera, reason in pairing.left_out.items():
            self._leave_out(reason, f"camera {camera}: {reason.replace('_', ' ')}; labelling without it")
        frames = []
        for camera, image, info in pairing.views:
            lidar_to_camera = self.fixed_extrinsics.get(camera)
            if lidar_to_camera is None:
                camera_frame_id = image.header.frame_id or info.header.frame_id
                try:
                    lidar_to_camera = self._lookup_transform(camera_frame_id, cloud.header.frame_id,
                                                             cloud.header.stamp)
                except Exception as error:  # tf2's TransformException family, or no TF at all
                    self._leave_out("missing_transform", f"camera {camera}: no transform {cloud.header.frame_id} "
                                    f"-> {camera_frame_id} ({error}); labelling without it")
                    continue
            try:
                frames.append(camera_frame_from_messages(image, info, lidar_to_camera))
            except ValueError as error:
                self._leave_out("bad_image", f"camera {camera}: {error}")
        return frames

    def _lookup_transform(self, target_frame: str, source_frame: str, stamp) -> np.ndarray:
        """p_camera = T @ p_lidar at the sweep's stamp (waiting up to tf_timeout), else the latest transform."""
        if self.tf_buffer is None:
            raise LookupError("no extrinsics parameters for this camera and no tf2_ros")
        try:
            transform = self.tf_buffer.lookup_transform(
                target_frame, source_frame, Time.from_msg(stamp), timeout=Duration(seconds=self.settings.tf_timeout)
            )
        except Exception:  # not there at the sweep's time (yet): the latest one, or its own error
            transform = self.tf_buffer.lookup_transform(target_frame, source_frame, Time())
        return transform_to_matrix(transform.transform)

    def _palette(self, class_names: tuple[str, ...]) -> np.ndarray:
        """The class colours of the vocabulary a sweep was labelled with (it may have changed since)."""
        if class_names not in self._palettes:
            self._palettes[class_names] = class_colors(class_names)
        return self._palettes[class_names]

    def _leave_out(self, reason: str, message: str) -> None:
        self.stats.record_camera_left_out(reason)
        self.get_logger().warning(message, throttle_duration_sec=LOG_THROTTLE_S)

    # --- shutdown ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Let the sweep in flight finish, stop the worker, say what was done, free the model (GPU memory too)."""
        self.slot.close()
        self._worker.join(timeout=30.0)
        stats = self.stats
        timings = ", ".join(f"{stage} {ms:.1f}" for stage, ms in stats.mean_timings_ms().items())
        self.get_logger().info(f"processed {stats.processed} sweeps, dropped {stats.dropped}, skipped "
                               f"{dict(stats.skipped)}; mean stage times (ms): {timings or 'none'}")
        self.runtime.close()


def parameter_descriptor(entry: Setting) -> ParameterDescriptor:
    """What ``ros2 param describe`` shows of a setting: its description, its rule (with the unit), its range;
    read-only unless it can change at runtime. Dynamic typing: the schema checks the type (see
    :meth:`SegmentationNode._declare_parameters`)."""
    descriptor = ParameterDescriptor(description=entry.summary(), additional_constraints=entry.rule(),
                                     dynamic_typing=True, read_only=not entry.changeable)
    if entry.type is float:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(entry.minimum),
                                                              to_value=float(entry.maximum), step=0.0)]
    elif entry.type is int:
        descriptor.integer_range = [IntegerRange(from_value=entry.minimum, to_value=entry.maximum, step=1)]
    return descriptor


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, SegmentationNode, rclpy.spin, args)


if __name__ == "__main__":
    sys.exit(main())
