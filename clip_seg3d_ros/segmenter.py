"""Inference on one LiDAR sweep: points in, a label and a score per point out.

The one implementation of each step from a sweep to per-point labels, shared by everything that labels
points: :func:`validate_points`, :func:`network_input` (also the trainer's), :meth:`Segmenter.infer_logits`
and :func:`voxel_results_to_points`. The node's and replay's processing path
(:class:`clip_seg3d_ros.runtime.runtime.SegmentRuntime`) adds a point budget, camera fusion, a score
threshold and per-stage timing around the same calls.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import load_model
from clip_seg3d_ros.compute_choices import PRECISIONS
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet, TextClassifier
from clip_seg3d_ros.sample import IGNORE_INDEX
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor, select_backend
from clip_seg3d_ros.sparse.coords import COORD_LIMIT
from clip_seg3d_ros.vocabulary import Vocabulary
from clip_seg3d_ros.voxelize import Voxelization, voxelize

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = dict(
    zip(PRECISIONS, (None, torch.bfloat16, torch.float16), strict=True)
)
"""Each inference precision (:data:`PRECISIONS`: float32, or autocast to bfloat16 / float16) as the autocast
dtype it runs the network in, None for none (see :class:`Segmenter`)."""


MAX_SCALED_INTENSITY = 100.0
"""A point whose intensity, divided by the model's ``intensity_scale``, lies beyond +-this is kept out of the
network: 100 times the range the network was trained on is a broken reading, and one such value would make
its voxel's mean, and from there every feature of the sweep, overflow."""

UNUSABLE_REASONS = ("non-finite coordinates", "outside the voxel grid", "bad intensity")
"""Why a point is kept out of the network (:func:`unusable_points`); it is labelled ignored, and counted."""


@dataclass
class PreparedSweep:
    """One sweep after :meth:`Segmenter.preprocess`.

    ``point_voxel`` (N,) int64 on the device: the row in ``voxels`` of each input point, -1 for a point kept out
    of the network (:func:`unusable_points`); ``voxels`` and ``sparse`` (the network's input) are None when no
    point is usable; ``unusable`` counts the points kept out, by reason.
    """

    point_voxel: torch.Tensor
    voxels: Voxelization | None = None
    sparse: SparseTensor | None = None
    unusable: dict[str, int] = field(default_factory=dict)


def validate_points(points: np.ndarray) -> np.ndarray:
    """``points`` as an (N, >=3) float32 array; anything else is a ValueError that says what was expected."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be an (N, >=3) array of x, y, z[, intensity], got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"points must be numeric, got dtype {points.dtype}")
    return points.astype(np.float32, copy=False)


def unusable_points(points: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, dict[str, int]]:
    """(N,) bool of the points the network cannot take, and their count by reason (:data:`UNUSABLE_REASONS`).

    A point is kept out, never the whole sweep, when a coordinate is NaN/inf, when its voxel lies outside the
    grid that voxel hashing addresses (:data:`~clip_seg3d_ros.sparse.coords.COORD_LIMIT` voxels from the sensor:
    about 820 m at 5 cm), or, for a model that reads intensity, when its intensity is NaN/inf or beyond
    :data:`MAX_SCALED_INTENSITY`. ``points`` as :func:`validate_points` returns them.
    """
    xyz = points[:, :3]
    non_finite = ~np.isfinite(xyz).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        cells = np.floor(xyz / np.float32(config.voxel_size))
        outside = ~non_finite & ((cells < -COORD_LIMIT) | (cells >= COORD_LIMIT)).any(axis=1)
        bad_intensity = np.zeros(len(points), dtype=bool)
        if config.use_intensity and points.shape[1] > 3:
            scaled = np.abs(points[:, 3].astype(np.float64)) / config.intensity_scale
            bad_intensity = ~non_finite & ~outside & ~(scaled <= MAX_SCALED_INTENSITY)  # NaN compares False
    counts = dict(zip(UNUSABLE_REASONS, (int(non_finite.sum()), int(outside.sum()), int(bad_intensity.sum())),
                      strict=True))
    return non_finite | outside | bad_intensity, {reason: count for reason, count in counts.items() if count}


def point_features(points: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Per-point network input: x, y, z and (optionally) scaled intensity; a missing or NaN intensity is 0."""
    xyz = points[:, :3]
    if not config.use_intensity:
        return xyz
    if points.shape[1] > 3:
        intensity = torch.nan_to_num(points[:, 3:4], nan=0.0, posinf=0.0, neginf=0.0) / config.intensity_scale
    else:
        intensity = torch.zeros_like(xyz[:, :1])
    return torch.cat([xyz, intensity], dim=1)


def network_input(points: torch.Tensor, config: ModelConfig, sparse_backend: str) -> tuple[Voxelization, SparseTensor]:
    """The network's input for (N, >=3) points with finite x, y, z on one device: the voxelization (which point
    is in which voxel) and the sparse tensor of voxel coordinates and mean features."""
    voxels = voxelize(points[:, :3], point_features(points, config), config.voxel_size)
    return voxels, SparseTensor(feats=voxels.feats, coords=voxels.coords, cache=CoordinateCache(sparse_backend))


def voxel_results_to_points(
    point_voxel: torch.Tensor, voxel_labels: torch.Tensor, voxel_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point takes its voxel's label and score; a point without a voxel (row -1) gets IGNORE_INDEX and 0.

    Returns (N,) int64 labels and (N,) float32 scores on the device of ``point_voxel``.
    """
    has_voxel = point_voxel >= 0
    labels = torch.full(point_voxel.shape, IGNORE_INDEX, dtype=torch.int64, device=point_voxel.device)
    scores = torch.zeros(point_voxel.shape, dtype=torch.float32, device=point_voxel.device)
    labels[has_voxel] = voxel_labels[point_voxel[has_voxel]].to(torch.int64)
    scores[has_voxel] = voxel_scores[point_voxel[has_voxel]].float()
    return labels, scores


class Segmenter:
    """Zero-shot 3D semantic segmentation with a distilled network and a text-embedding classifier.

    >>> segmenter = Segmenter.from_checkpoint("model.pt", device="cuda")
    >>> labels, scores = segmenter(points)  # points: (N, >=3) float32 x, y, z[, intensity]

    ``labels`` (N,) int32 are indices into ``segmenter.class_names``, -1 for points the network cannot take
    (:func:`unusable_points`: NaN/inf coordinates, off the voxel grid, a broken intensity); ``scores`` (N,)
    float32 are the softmax probabilities of those labels (0 where ignored).

    ``precision`` ("fp32", "bf16" or "fp16", see :data:`PRECISIONS`): "bf16"/"fp16" run the network under
    autocast (its matmuls in that dtype: faster on GPUs and on CPUs with bf16 units); the classifier always
    runs in float32, since its logits are cosines divided by the temperature (0.01), where bf16's three
    significant digits would move them by up to ~1.
    """

    def __init__(
        self,
        model: PointSegmentationNet,
        vocabulary: Vocabulary,
        device: str | torch.device = "cpu",
        sparse_backend: str = "auto",
        calibration_bias: float = 0.0,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
        self.precision = precision
        self.device = torch.device(device)
        self.config: ModelConfig = model.config
        self.sparse_backend = select_backend(self.device, sparse_backend)
        self.model = model.to(self.device).eval()
        self.classifier = TextClassifier(vocabulary, self.config.temperature, calibration_bias).to(self.device)
        # Validates the vocabulary against the network (embedding size, non-empty) and records it.
        self.set_vocabulary(vocabulary)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        sparse_backend: str = "auto",
        calibration_bias: float = 0.0,
        precision: str = "fp32",
    ) -> Segmenter:
        """Load a checkpoint (a clear CheckpointError if it is missing, corrupt or incompatible)."""
        checkpoint, model = load_model(path)
        return cls(model, checkpoint.vocabulary, device, sparse_backend, calibration_bias, precision)

    @property
    def class_names(self) -> list[str]:
        return list(self.vocabulary.names)

    @property
    def calibration_bias(self) -> float:
        return self.classifier.calibration_bias

    @calibration_bias.setter
    def calibration_bias(self, value: float) -> None:
        self.classifier.calibration_bias = float(value)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Segment other classes from now on; the network is untouched, only the text embeddings change."""
        if vocabulary.embed_dim != self.config.embed_dim:
            raise ValueError(
                f"vocabulary embeddings have dimension {vocabulary.embed_dim}, the network {self.config.embed_dim}"
            )
        if len(vocabulary) == 0:
            raise ValueError("a vocabulary needs at least one class")
        self.classifier.set_vocabulary(vocabulary)
        self.vocabulary = vocabulary

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prepared = self.preprocess(validate_points(points))
        scores, labels = torch.softmax(self.infer_logits(prepared), dim=1).max(dim=1)
        point_labels, point_scores = voxel_results_to_points(prepared.point_voxel, labels, scores)
        return point_labels.cpu().numpy().astype(np.int32), point_scores.cpu().numpy()

    def preprocess(self, points: np.ndarray) -> PreparedSweep:
        """Voxelization on the device of the usable points (:func:`unusable_points`) of (N, >=3) float32
        ``points``, as :func:`validate_points` returns them (validated once, where a sweep comes in)."""
        unusable, counts = unusable_points(points, self.config)
        valid = ~unusable
        point_voxel = torch.full((len(points),), -1, dtype=torch.int64, device=self.device)
        if not valid.any():
            return PreparedSweep(point_voxel=point_voxel, unusable=counts)
        kept = torch.from_numpy(np.ascontiguousarray(points[valid])).to(self.device, non_blocking=True)
        voxels, sparse = network_input(kept, self.config, self.sparse_backend)
        point_voxel[torch.from_numpy(valid).to(self.device)] = voxels.point_to_voxel
        return PreparedSweep(point_voxel=point_voxel, voxels=voxels, sparse=sparse, unusable=counts)

    @torch.inference_mode()
    def infer_logits(self, prepared: PreparedSweep) -> torch.Tensor:
        """(V, C) float32 class logits per voxel (row ``i`` for ``prepared.voxels.coords[i]``), on the device.

        The full distribution, not just the winner: camera fusion (:mod:`clip_seg3d_ros.runtime.fusion`) mixes
        these probabilities with CLIP's 2D ones. (0, C) when the sweep has no valid point.
        """
        if prepared.sparse is None:
            return torch.empty(0, len(self.vocabulary), device=self.device)
        dtype = AUTOCAST_DTYPES[self.precision]
        autocast = contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)
        with autocast:
            hidden = self.model.backbone(prepared.sparse).feats
        # The projection folded into the classifier: the same logits without the (V, 512) features.
        return self.classifier.forward_projected(hidden, self.model.projection)
