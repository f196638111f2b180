"""2D pseudo labels from dense CLIP features, and their transfer to LiDAR points through the cameras.

Per feature cell x (unit vector) and class c (text embedding t_c, unit):

    p(c | x) = softmax_c(<x, t_c> / temperature)

Prompt denoising (MaskCLIP): a class that is nowhere in the image still wins some cells by a small
margin. So a class is kept only if its best score in the image, max_x p(c | x) with the softmax over ALL
classes, reaches ``prompt_score_threshold``; the softmax is then recomputed over the kept classes only
(removed classes get logit -inf). A cell is labelled with its argmax over the kept classes if that class is
``allowed`` (zero-shot setting: the unseen classes; annotation-free: all) and its recomputed probability
reaches ``confidence_threshold``; otherwise it gets IGNORE_INDEX. Seen classes still compete in the
argmax, so a car-like cell is not forced into the best unseen class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clip_seg3d_ros.geometry.camera import CameraProjection, projection_cells
from clip_seg3d_ros.models.classifier import CLIP_TEMPERATURE, dense_text_logits
from clip_seg3d_ros.sample import IGNORE_INDEX


@dataclass(frozen=True)
class PseudoLabelSettings:
    """Settings of :func:`dense_pseudo_labels` (a training config's ``teacher.pseudo_labels``); pass them on with
    ``**dataclasses.asdict(settings)``.

    The temperature is CLIP's own (:data:`~clip_seg3d_ros.models.classifier.CLIP_TEMPERATURE`); the two thresholds
    are our defaults, not values from the paper (which does not publish them).
    """

    temperature: float = CLIP_TEMPERATURE
    prompt_score_threshold: float = 0.5
    confidence_threshold: float = 0.5


def dense_pseudo_labels(
    features: torch.Tensor,
    text_embeddings: torch.Tensor,
    allowed: torch.Tensor | np.ndarray | None,
    *,
    temperature: float,
    prompt_score_threshold: float,
    confidence_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (h, w) int64 (IGNORE_INDEX = none) and confidence (h, w) float32 for (D, h, w) ``features``.

    ``text_embeddings`` (C, D); ``allowed`` (C,) bool, None = every class. Both inputs are L2-normalised
    here, so the logits are cosine similarities / temperature. ``confidence`` is the recomputed probability
    of the argmax class at every cell (0 where no class survived denoising), labelled or not.
    """
    num_classes = text_embeddings.shape[0]
    allowed = torch.ones(num_classes, dtype=torch.bool) if allowed is None else torch.as_tensor(allowed).bool()
    if allowed.shape != (num_classes,):
        raise ValueError(f"allowed must be ({num_classes},) for {num_classes} classes, got {tuple(allowed.shape)}")

    height, width = features.shape[1:]
    logits = dense_text_logits(features, text_embeddings, temperature).T  # (C, h*w)
    kept = logits.softmax(dim=0).amax(dim=1) >= prompt_score_threshold
    if not kept.any():
        return (
            torch.full((height, width), IGNORE_INDEX, dtype=torch.int64),
            torch.zeros(height, width),
        )
    probabilities = logits.masked_fill(~kept[:, None], float("-inf")).softmax(dim=0)
    confidence, labels = probabilities.max(dim=0)
    valid = allowed.to(labels.device)[labels] & (confidence >= confidence_threshold)
    labels = torch.where(valid, labels, torch.full_like(labels, IGNORE_INDEX))
    return labels.reshape(height, width).cpu(), confidence.reshape(height, width).cpu()


def pseudo_labels_to_points(
    label_maps: Sequence[np.ndarray | torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    projections: Sequence[CameraProjection],
    num_points: int,
    confidences: Sequence[np.ndarray | torch.Tensor] | None = None,
) -> np.ndarray:
    """(N,) int64 point labels from per-camera (h, w) label maps; IGNORE_INDEX where no camera labels a point.

    A point at pixel (row r, column c) of an H x W image takes the label of feature cell
    (r * h // H, c * w // W). A point seen by several cameras with a label in more than one takes the
    label from the camera where the cell's confidence is highest if ``confidences`` (maps like
    ``label_maps``) are given, otherwise from the first camera (in ``projections`` order) that labels it.
    """
    if not len(label_maps) == len(image_sizes) == len(projections):
        raise ValueError(
            f"{len(label_maps)} label maps, {len(image_sizes)} image sizes, {len(projections)} projections"
        )
    if confidences is not None and len(confidences) != len(label_maps):
        raise ValueError(f"{len(confidences)} confidence maps for {len(label_maps)} label maps")
    point_labels = np.full(num_points, IGNORE_INDEX, dtype=np.int64)
    best_confidence = np.full(num_points, -np.inf)
    for camera, (label_map, (image_height, image_width), projection) in enumerate(
        zip(label_maps, image_sizes, projections, strict=True)
    ):
        label_map = np.asarray(label_map)
        map_height, map_width = label_map.shape
        rows, columns = projection.pixel_indices()
        inside = (rows >= 0) & (rows < image_height) & (columns >= 0) & (columns < image_width)
        if not inside.all():
            raise ValueError(f"camera {projection.camera}: pixels outside its {image_height}x{image_width} image")
        cells = projection_cells(projection, (image_height, image_width), (map_height, map_width))
        labels = label_map.reshape(-1)[cells]
        labelled = labels != IGNORE_INDEX
        points, labels = projection.point_indices[labelled], labels[labelled]
        if confidences is None:
            better = point_labels[points] == IGNORE_INDEX  # the first labelling camera wins
        else:
            score = np.asarray(confidences[camera]).reshape(-1)[cells][labelled]
            better = score > best_confidence[points]
            best_confidence[points[better]] = score[better]
        point_labels[points[better]] = labels[better]
    return point_labels
