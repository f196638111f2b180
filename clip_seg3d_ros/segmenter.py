"""Inference on one LiDAR sweep: points in, a label and a score per point out.

The node, rosbag replay and the benchmark all go through :class:`Segmenter`, in three stages that can be
timed separately: :meth:`Segmenter.preprocess` (validation, NaN filtering, voxelization),
:meth:`Segmenter.infer` (network and classifier on the voxels) and :meth:`Segmenter.postprocess` (voxel
results back to every point, on the host).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import load_model
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet, TextClassifier
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor, select_backend
from clip_seg3d_ros.vocabulary import Vocabulary
from clip_seg3d_ros.voxelize import Voxelization, devoxelize, voxelize

IGNORE_LABEL = -1


@dataclass
class PreparedSweep:
    """One sweep after :meth:`Segmenter.preprocess`: ``valid`` marks the points with finite x, y, z."""

    num_points: int
    valid: np.ndarray
    voxels: Voxelization | None


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


class Segmenter:
    """Zero-shot 3D semantic segmentation with a distilled network and a text-embedding classifier.

    >>> segmenter = Segmenter.from_checkpoint("model.pt", device="cuda")
    >>> labels, scores = segmenter(points)  # points: (N, >=3) float32 x, y, z[, intensity]

    ``labels`` (N,) int32 are indices into ``segmenter.class_names``, -1 for points with NaN/inf
    coordinates; ``scores`` (N,) float32 are the softmax probabilities of those labels (0 where ignored).
    """

    def __init__(
        self,
        model: PointSegmentationNet,
        vocabulary: Vocabulary,
        device: str | torch.device = "cpu",
        sparse_backend: str = "auto",
        calibration_bias: float = 0.0,
    ) -> None:
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
    ) -> Segmenter:
        """Load a checkpoint (a clear CheckpointError if it is missing, corrupt or incompatible)."""
        checkpoint, model = load_model(path)
        return cls(model, checkpoint.vocabulary, device, sparse_backend, calibration_bias)

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
        prepared = self.preprocess(points)
        return self.postprocess(prepared, *self.infer(prepared))

    def preprocess(self, points: np.ndarray) -> PreparedSweep:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be an (N, >=3) array of x, y, z[, intensity], got shape {points.shape}")
        if not np.issubdtype(points.dtype, np.number):
            raise ValueError(f"points must be numeric, got dtype {points.dtype}")
        points = points.astype(np.float32, copy=False)
        valid = np.isfinite(points[:, :3]).all(axis=1)
        if not valid.any():
            return PreparedSweep(num_points=len(points), valid=valid, voxels=None)
        kept = torch.from_numpy(np.ascontiguousarray(points[valid])).to(self.device, non_blocking=True)
        voxels = voxelize(kept[:, :3], point_features(kept, self.config), self.config.voxel_size)
        return PreparedSweep(num_points=len(points), valid=valid, voxels=voxels)

    @torch.inference_mode()
    def infer_logits(self, prepared: PreparedSweep) -> torch.Tensor:
        """(V, C) float32 class logits per voxel (row ``i`` for ``prepared.voxels.coords[i]``), on the device.

        The full distribution, not just the winner: camera fusion (:mod:`clip_seg3d_ros.runtime.fusion`) mixes these
        probabilities with CLIP's 2D ones. (0, C) when the sweep has no valid point.
        """
        if prepared.voxels is None:
            return torch.empty(0, len(self.vocabulary), device=self.device)
        voxels = prepared.voxels
        sparse = SparseTensor(feats=voxels.feats, coords=voxels.coords, cache=CoordinateCache(self.sparse_backend))
        return self.classifier(self.model(sparse)).float()

    @torch.inference_mode()
    def infer(self, prepared: PreparedSweep) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-voxel label and score (the softmax probability of the label)."""
        scores, labels = torch.softmax(self.infer_logits(prepared), dim=1).max(dim=1)
        return labels, scores

    def postprocess(
        self, prepared: PreparedSweep, voxel_labels: torch.Tensor, voxel_scores: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = np.full(prepared.num_points, IGNORE_LABEL, dtype=np.int32)
        scores = np.zeros(prepared.num_points, dtype=np.float32)
        if prepared.voxels is not None:
            point_to_voxel = prepared.voxels.point_to_voxel
            labels[prepared.valid] = devoxelize(voxel_labels, point_to_voxel).cpu().numpy()
            scores[prepared.valid] = devoxelize(voxel_scores, point_to_voxel).cpu().numpy()
        return labels, scores
