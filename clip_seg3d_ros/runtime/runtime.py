"""The one sweep path, for the node AND replay: :class:`SegmentRuntime`, one sweep in, a label per point out.

The node (:mod:`clip_seg3d_ros.nodes.segment_node`) owns topics, QoS, TF and threads, replay
(:mod:`clip_seg3d_ros.tools.replay`) reads a bag; both build a runtime with :meth:`SegmentRuntime.load` from the
same :class:`RuntimeSettings` and call :meth:`SegmentRuntime.process` on every sweep, so a bag replayed offline
is labelled exactly as the robot labels it live. Everything that decides what a sweep becomes is made and
changed here, so that start-up and runtime reconfiguration are tested without ROS:

- the checkpoint is loaded once, onto the chosen device (a clear CheckpointError when missing or corrupt);
- the CLIP model (runtime text encoder for new class names, and the camera teacher for fusion) is built
  only when needed, from ``clip_model`` / ``clip_weights`` or what the checkpoint records, and never
  downloaded; prompts are the checkpoint's own templates, so new class embeddings match the old ones;
- :meth:`SegmentRuntime.apply` changes a runtime setting (vocabulary, score threshold, calibration bias,
  fusion weight) and raises ValueError, changing nothing, when the value cannot be used.

:meth:`SegmentRuntime.process` runs these stages, each timed:

- ``preprocess``: validation, the point budget (``max_points``, see :mod:`clip_seg3d_ros.runtime.point_budget`),
  voxelization;
- ``inference``: the 3D network and the text classifier, class probabilities per voxel;
- ``fusion``: with a :class:`~clip_seg3d_ros.runtime.fusion.CameraFusion` and camera frames, the 2D teacher and the
  2D-3D mix for the points a camera sees (0 otherwise);
- ``postprocess``: label and score of every point, back on the host, and the score threshold;
- ``total``: the whole call, so at least the sum of the four.

On CUDA every stage boundary synchronizes the device, so a stage's time is its own work and not the queue
of kernels launched before it.

Output: one entry per input point, always. ``labels`` are indices into :attr:`SegmentRuntime.class_names`
or -1 (ignored) for a point the network cannot take (NaN/inf coordinates, off the voxel grid, a broken
intensity: counted in :attr:`SweepResult.unusable_points`), a point whose score is below
``score_threshold``, and a point left without a voxel by the point budget. ``scores`` are the probabilities
of the winning class (after fusion), 0 where the point has no result at all; a point under the threshold
keeps its score, so a consumer can see how close it came. A sweep whose probabilities are not finite is
refused (:class:`NonFiniteOutputError`): no labels rather than wrong ones.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import Checkpoint, load_model
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.runtime.fusion import CameraFusion
from clip_seg3d_ros.runtime.point_budget import assign_to_kept_voxels, evenly_spaced
from clip_seg3d_ros.runtime.settings import (
    RUNTIME_PARAMETERS,
    RuntimeSettings,
    check_unit_interval,
    convert_value,
    split_clip_model,
)
from clip_seg3d_ros.runtime.vocabulary_update import clean_class_names, resolve_vocabulary
from clip_seg3d_ros.sample import IGNORE_INDEX, CameraFrame
from clip_seg3d_ros.segmenter import Segmenter, unusable_points, validate_points, voxel_results_to_points
from clip_seg3d_ros.sparse.conv import set_cpu_matmul
from clip_seg3d_ros.vocabulary import Vocabulary

if TYPE_CHECKING:  # the teacher package imports open_clip: loaded only when a teacher is built
    from clip_seg3d_ros.teacher.base import DenseTeacher

TeacherFactory = Callable[[RuntimeSettings, Checkpoint, torch.device], "DenseTeacher"]

STAGES = ("preprocess", "inference", "fusion", "postprocess", "total")


def open_clip_teacher(settings: RuntimeSettings, checkpoint: Checkpoint, device: torch.device) -> DenseTeacher:
    """The CLIP model named by the parameters, or else by the checkpoint (``"ViT-B-16/openai"``), found offline."""
    recorded_model, recorded_weights = split_clip_model(checkpoint.clip_model)
    model_name = settings.clip_model or recorded_model
    weights = settings.clip_weights or recorded_weights
    if not model_name or not weights:
        raise ValueError(
            f"no CLIP model to load: the checkpoint records clip_model={checkpoint.clip_model!r}; set the parameters "
            "clip_model (e.g. ViT-B-16) and clip_weights (a local weights file or an open_clip tag in the Hugging "
            "Face cache)"
        )
    # open_clip is heavy and only needed here: imported on first use, not with the node.
    from clip_seg3d_ros.teacher.open_clip_teacher import DRIVING_TEMPLATES, OpenClipTeacher

    templates = checkpoint.vocabulary.prompt_templates or list(DRIVING_TEMPLATES)
    quick_gelu = True if settings.clip_quick_gelu else None
    return OpenClipTeacher(model_name, weights, device=device, templates=templates, quick_gelu=quick_gelu)


@dataclass
class SweepResult:
    """``labels`` (N,) int32 (-1: ignored) index ``class_names`` (the vocabulary this sweep was labelled with),
    ``scores`` (N,) float32, ``timings_ms`` {stage: milliseconds}, ``unusable_points`` {reason: count} of the
    points kept out of the network (:func:`~clip_seg3d_ros.segmenter.unusable_points`)."""

    labels: np.ndarray
    scores: np.ndarray
    timings_ms: dict[str, float]
    class_names: tuple[str, ...] = ()
    unusable_points: dict[str, int] = field(default_factory=dict)


class NonFiniteOutputError(ValueError):
    """The network's (or the fusion's) class probabilities hold NaN/inf: the sweep has no labels to publish.

    Points the network cannot take are kept out of it (:func:`~clip_seg3d_ros.segmenter.unusable_points`), and
    settings are checked finite, so what is left is a broken checkpoint or CLIP model, or a numerical fault."""


def check_finite_output(probabilities: torch.Tensor) -> None:
    """Raise :class:`NonFiniteOutputError` when ``probabilities`` hold a NaN or inf, naming how many rows do."""
    finite = torch.isfinite(probabilities).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteOutputError(f"non-finite class probabilities in {bad} of {len(finite)} voxels: the sweep is "
                                   "not labelled (a broken checkpoint or CLIP model?)")


class _StageClock:
    """Milliseconds between marks; synchronizes CUDA first so that each stage is charged its own kernels."""

    def __init__(self, device: torch.device) -> None:
        self._synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self._synchronize()
        self.start = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        self._synchronize()
        now = time.perf_counter()
        self.timings[stage] = 1000.0 * (now - self._last)
        self._last = now

    def finish(self) -> dict[str, float]:
        self.timings["total"] = 1000.0 * (self._last - self.start)
        return self.timings


class SegmentRuntime:
    """Labels LiDAR sweeps: a :class:`~clip_seg3d_ros.segmenter.Segmenter`, optionally fused with cameras.

    - ``score_threshold``: points whose winning probability is below it are labelled -1 (0: keep all);
    - ``max_points``: at most this many points go into the network (0: no limit); see
      :mod:`clip_seg3d_ros.runtime.point_budget` for how the others are labelled;
    - ``fusion``: a :class:`~clip_seg3d_ros.runtime.fusion.CameraFusion`, used when ``process`` gets camera frames;
    - ``teacher``: builds the CLIP model on first use (:meth:`teacher`), for class names the segmenter's first
      vocabulary does not have; None: there is none (only those classes can be chosen).

    :meth:`load` builds one from settings and a checkpoint file, as the node and replay do; the constructor takes
    a segmenter already in memory. Thread-safe: the node processes in a worker thread while parameter callbacks
    change the vocabulary, thresholds and weights; one lock orders them, so a sweep is labelled entirely before
    or after a change.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        score_threshold: float = 0.0,
        max_points: int = 0,
        fusion: CameraFusion | None = None,
        teacher: Callable[[], DenseTeacher] | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.device = segmenter.device
        self.settings = RuntimeSettings(score_threshold=score_threshold, max_points=max_points,
                                        use_cameras=fusion is not None)
        self._lock = threading.RLock()
        self.score_threshold = score_threshold
        self.max_points = max_points
        self.base_vocabulary = segmenter.vocabulary  # the names that need no CLIP model
        self._build_teacher = teacher
        self._teacher: DenseTeacher | None = None
        self.fusion = fusion
        if fusion is not None:
            fusion.set_vocabulary(segmenter.vocabulary)

    @classmethod
    def load(cls, settings: RuntimeSettings, teacher_factory: TeacherFactory = open_clip_teacher) -> SegmentRuntime:
        """The runtime the settings describe: checkpoint, device, threads, vocabulary, cameras."""
        settings = settings.validated()
        device = resolve_device(settings.device)
        # A process-wide setting: the node and replay own their process, and share the CPU with the robot.
        torch.set_num_threads(settings.threads())
        set_cpu_matmul(settings.cpu_matmul)
        checkpoint, model = load_model(settings.checkpoint)
        segmenter = Segmenter(model, checkpoint.vocabulary, device, settings.sparse_backend,
                              settings.calibration_bias, precision=settings.precision)
        runtime = cls(segmenter, score_threshold=settings.score_threshold, max_points=settings.max_points,
                      teacher=lambda: teacher_factory(settings, checkpoint, device))
        runtime.settings, runtime.checkpoint = settings, checkpoint
        runtime.set_vocabulary(runtime.resolve(settings.vocabulary))
        if settings.use_cameras:
            runtime.fusion = CameraFusion(runtime.teacher(), runtime.vocabulary, weight=settings.fusion_weight)
        return runtime

    @property
    def class_names(self) -> list[str]:
        return self.segmenter.class_names

    @property
    def vocabulary(self) -> Vocabulary:
        return self.segmenter.vocabulary

    def teacher(self) -> DenseTeacher:
        """The CLIP teacher, built on first use; a ValueError says why it cannot be."""
        if self._teacher is None:
            if self._build_teacher is None:
                raise ValueError("this runtime has no CLIP model (it was built around a segmenter, not from settings)")
            try:
                teacher = self._build_teacher()
            except (RuntimeError, OSError) as error:  # TeacherWeightsError, unreadable weights file
                raise ValueError(f"cannot load the CLIP model: {error}") from error
            if teacher.embed_dim != self.segmenter.config.embed_dim:
                raise ValueError(
                    f"the CLIP model's embeddings have dimension {teacher.embed_dim}, the network's "
                    f"{self.segmenter.config.embed_dim}: not the model the network was distilled from"
                )
            self._teacher = teacher
        return self._teacher

    def resolve(self, names: Sequence[str]) -> Vocabulary:
        """The vocabulary for ``names`` (:func:`resolve_vocabulary`); CLIP is loaded only for names it must embed."""
        names = clean_class_names(names)
        known = self.base_vocabulary.names
        new_names = [name for name in names if name not in known]
        encoder = None
        if new_names:
            try:
                encoder = self.teacher()
            except ValueError as error:
                raise ValueError(f"classes {new_names} are not in the checkpoint (its classes: {known}), and the CLIP "
                                 f"text encoder that would embed them cannot be loaded: {error}") from error
        return resolve_vocabulary(self.base_vocabulary, names, encoder)

    def apply(self, name: str, value) -> None:
        """Change runtime parameter ``name`` (one of :data:`RUNTIME_PARAMETERS`); ValueError leaves all as it was."""
        if name not in RUNTIME_PARAMETERS:
            raise ValueError(f"parameter {name!r} cannot change at runtime (restart the node); these can: "
                             f"{list(RUNTIME_PARAMETERS)}")
        value = convert_value(name, value, getattr(RuntimeSettings(), name))
        if name == "vocabulary":
            self.set_vocabulary(self.resolve(value))
        elif name == "score_threshold":
            self.score_threshold = value
        elif name == "calibration_bias":
            self.set_calibration_bias(value)
        elif self.fusion is not None:
            self.fusion.weight = value
        else:
            check_unit_interval(name, value)  # no fusion to change, but a bad value is still refused

    def close(self) -> None:
        """Free the network, the teacher and their device memory (the node's shutdown)."""
        with self._lock:
            self.segmenter = self.fusion = self._teacher = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        value = check_unit_interval("score_threshold", value)
        with self._lock:
            self._score_threshold = value

    @property
    def max_points(self) -> int:
        return self._max_points

    @max_points.setter
    def max_points(self, value: int) -> None:
        if int(value) != value or value < 0:
            raise ValueError(f"max_points must be a non-negative integer (0: no limit), got {value}")
        with self._lock:
            self._max_points = int(value)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Segment other classes from the next sweep on (the segmenter's and the fusion's classes together)."""
        with self._lock:
            if self.fusion is not None:
                self.fusion.set_vocabulary(vocabulary)  # checks the teacher's dimension before anything changes
            try:
                self.segmenter.set_vocabulary(vocabulary)
            except ValueError:
                if self.fusion is not None:
                    self.fusion.set_vocabulary(self.segmenter.vocabulary)
                raise

    def set_calibration_bias(self, value: float) -> None:
        with self._lock:
            self.segmenter.calibration_bias = value

    def process(self, points: np.ndarray, camera_frames: Sequence[CameraFrame] = ()) -> SweepResult:
        """Label one sweep, as the node and replay do: ``points`` (N, >=3) x, y, z[, intensity, ...] in the LiDAR
        frame; ``camera_frames`` whose ``camera.lidar_to_camera`` maps these points into their images (ignored
        without ``fusion``)."""
        with self._lock:
            return self._process(points, camera_frames)

    @torch.inference_mode()
    def _process(self, points: np.ndarray, camera_frames: Sequence[CameraFrame]) -> SweepResult:
        segmenter, device = self.segmenter, self.segmenter.device
        clock = _StageClock(device)
        points = validate_points(points)
        num_points = len(points)
        # The point budget can only apply to a sweep with more points than it: otherwise the segmenter's own
        # preprocessing is all, and nothing is computed twice.
        usable_rows = kept_rows = None
        if self.max_points and num_points > self.max_points:
            unusable, unusable_counts = unusable_points(points, segmenter.config)
            usable_rows = np.flatnonzero(~unusable)
            if len(usable_rows) > self.max_points:
                kept_rows = usable_rows[evenly_spaced(len(usable_rows), self.max_points)]
        if kept_rows is None:
            prepared = segmenter.preprocess(points)
            point_voxel, unusable_counts = prepared.point_voxel, prepared.unusable
        else:
            prepared = segmenter.preprocess(points[kept_rows])
            # Row of each input point's voxel (-1: none): kept points from the voxelization, the others by lookup.
            point_voxel = torch.full((num_points,), -1, dtype=torch.int64, device=device)
            point_voxel[torch.from_numpy(kept_rows).to(device)] = prepared.point_voxel
            dropped = np.setdiff1d(usable_rows, kept_rows, assume_unique=True)
            xyz = torch.from_numpy(np.ascontiguousarray(points[dropped, :3])).to(device)
            point_voxel[torch.from_numpy(dropped).to(device)] = assign_to_kept_voxels(
                xyz, prepared.voxels.coords, segmenter.config.voxel_size
            )
        clock.mark("preprocess")

        probabilities = torch.softmax(segmenter.infer_logits(prepared), dim=1)
        check_finite_output(probabilities)
        voxel_scores, voxel_labels = probabilities.max(dim=1)
        clock.mark("inference")

        fused_rows, fused = self._fuse(points, camera_frames, point_voxel, probabilities)
        if fused is not None:
            check_finite_output(fused)
        clock.mark("fusion")

        labels, scores = voxel_results_to_points(point_voxel, voxel_labels, voxel_scores)
        if fused is not None:
            fused_scores, fused_labels = fused.max(dim=1)
            labels[fused_rows] = fused_labels
            scores[fused_rows] = fused_scores
        labels_np = labels.cpu().numpy().astype(np.int32)
        scores_np = scores.cpu().numpy()
        if self.score_threshold > 0:
            labels_np[scores_np < self.score_threshold] = IGNORE_INDEX
        clock.mark("postprocess")
        return SweepResult(labels=labels_np, scores=scores_np, timings_ms=clock.finish(),
                           class_names=tuple(segmenter.class_names), unusable_points=unusable_counts)

    def _fuse(
        self,
        points: np.ndarray,
        camera_frames: Sequence[CameraFrame],
        point_voxel: torch.Tensor,
        probabilities: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Rows (on the device) and fused (M, C) probabilities of the points a camera sees and the network labels."""
        if self.fusion is None or not camera_frames or len(probabilities) == 0:
            return None, None
        seen, probabilities_2d = self.fusion.image_probabilities(points[:, :3], camera_frames)
        rows = torch.from_numpy(seen).to(point_voxel.device)
        labelled = point_voxel[rows] >= 0
        rows, probabilities_2d = rows[labelled], probabilities_2d[labelled.cpu()]
        if len(rows) == 0:
            return None, None
        return rows, self.fusion.fuse(probabilities[point_voxel[rows]], probabilities_2d)
