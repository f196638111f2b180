"""The one sweep path: a :class:`SweepProcessor` built from :class:`RuntimeSettings`, for the node AND replay.

The node (:mod:`clip_seg3d_ros.nodes.segment_node`) owns topics, QoS, TF and threads, replay
(:mod:`clip_seg3d_ros.tools.replay`) reads a bag; both build a :class:`SegmentRuntime` from the same settings
and call :meth:`SegmentRuntime.process` on every sweep. Everything that decides what a sweep becomes is made
and changed here, so that start-up and runtime reconfiguration are tested without ROS:

- the checkpoint is loaded once, onto the chosen device (a clear CheckpointError when missing or corrupt);
- the CLIP model (runtime text encoder for new class names, and the camera teacher for fusion) is built
  only when needed, from ``clip_model`` / ``clip_weights`` or what the checkpoint records, and never
  downloaded; prompts are the checkpoint's own templates, so new class embeddings match the old ones;
- :meth:`SegmentRuntime.apply` changes a runtime setting (vocabulary, score threshold, calibration bias,
  fusion weight) and raises ValueError, changing nothing, when the value cannot be used.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import Checkpoint, load_model
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.runtime.fusion import CameraFusion
from clip_seg3d_ros.runtime.processor import SweepProcessor, SweepResult
from clip_seg3d_ros.runtime.settings import (
    RUNTIME_PARAMETERS,
    RuntimeSettings,
    check_unit_interval,
    convert_value,
    split_clip_model,
)
from clip_seg3d_ros.runtime.vocabulary_update import clean_class_names, resolve_vocabulary
from clip_seg3d_ros.sample import CameraFrame
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.sparse.conv import set_cpu_matmul
from clip_seg3d_ros.vocabulary import Vocabulary

if TYPE_CHECKING:  # the teacher package imports open_clip: loaded only when a teacher is built
    from clip_seg3d_ros.teacher.base import DenseTeacher

TeacherFactory = Callable[[RuntimeSettings, Checkpoint, torch.device], "DenseTeacher"]


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


class SegmentRuntime:
    """Checkpoint, segmenter, optional CLIP teacher and fusion, and the processor that runs them."""

    def __init__(self, settings: RuntimeSettings, teacher_factory: TeacherFactory = open_clip_teacher) -> None:
        self.settings = settings.validated()
        self.device = resolve_device(settings.device)
        # A process-wide setting: the node and replay own their process, and share the CPU with the robot.
        torch.set_num_threads(settings.threads())
        set_cpu_matmul(settings.cpu_matmul)
        self._teacher_factory = teacher_factory
        self._teacher: DenseTeacher | None = None
        self.checkpoint, model = load_model(settings.checkpoint)
        segmenter = Segmenter(model, self.checkpoint.vocabulary, self.device, settings.sparse_backend,
                              settings.calibration_bias, precision=settings.precision)
        vocabulary = self.resolve(settings.vocabulary)
        segmenter.set_vocabulary(vocabulary)
        fusion = None
        if settings.use_cameras:
            fusion = CameraFusion(self.teacher(), vocabulary, weight=settings.fusion_weight)
        self.processor = SweepProcessor(segmenter, score_threshold=settings.score_threshold,
                                        max_points=settings.max_points, fusion=fusion)

    @property
    def class_names(self) -> list[str]:
        return self.processor.class_names

    @property
    def vocabulary(self) -> Vocabulary:
        return self.processor.vocabulary

    @property
    def score_threshold(self) -> float:
        return self.processor.score_threshold

    def process(self, points: np.ndarray, camera_frames: Sequence[CameraFrame] = ()) -> SweepResult:
        """Label one sweep (:meth:`SweepProcessor.process`): what the node and replay run on every sweep."""
        return self.processor.process(points, camera_frames)

    def teacher(self) -> DenseTeacher:
        """The CLIP teacher, built on first use; a ValueError says why it cannot be."""
        if self._teacher is None:
            try:
                self._teacher = self._teacher_factory(self.settings, self.checkpoint, self.device)
            except (RuntimeError, OSError) as error:  # TeacherWeightsError, unreadable weights file
                raise ValueError(f"cannot load the CLIP model: {error}") from error
            if self._teacher.embed_dim != self.checkpoint.vocabulary.embed_dim:
                dimension = self._teacher.embed_dim
                self._teacher = None
                raise ValueError(
                    f"the CLIP model's embeddings have dimension {dimension}, the checkpoint's "
                    f"{self.checkpoint.vocabulary.embed_dim}: not the model the network was distilled from"
                )
        return self._teacher

    def resolve(self, names: Sequence[str]) -> Vocabulary:
        """The vocabulary for ``names`` (:func:`resolve_vocabulary`); CLIP is loaded only for names it must embed."""
        names = clean_class_names(names)
        known = self.checkpoint.vocabulary.names
        new_names = [name for name in names if name not in known]
        encoder = None
        if new_names:
            try:
                encoder = self.teacher()
            except ValueError as error:
                raise ValueError(f"classes {new_names} are not in the checkpoint (its classes: {known}), and the CLIP "
                                 f"text encoder that would embed them cannot be loaded: {error}") from error
        return resolve_vocabulary(self.checkpoint.vocabulary, names, encoder)

    def apply(self, name: str, value) -> None:
        """Change runtime parameter ``name`` (one of :data:`RUNTIME_PARAMETERS`); ValueError leaves all as it was."""
        if name not in RUNTIME_PARAMETERS:
            raise ValueError(f"parameter {name!r} cannot change at runtime (restart the node); these can: "
                             f"{list(RUNTIME_PARAMETERS)}")
        value = convert_value(name, value, getattr(RuntimeSettings(), name))
        if name == "vocabulary":
            self.processor.set_vocabulary(self.resolve(value))
        elif name == "score_threshold":
            self.processor.score_threshold = value
        elif name == "calibration_bias":
            self.processor.set_calibration_bias(value)
        elif self.processor.fusion is not None:
            self.processor.fusion.weight = value
        else:
            check_unit_interval(name, value)  # no fusion to change, but a bad value is still refused

    def close(self) -> None:
        """Free the network, the teacher and their device memory (the node's shutdown)."""
        self.processor = None
        self._teacher = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
