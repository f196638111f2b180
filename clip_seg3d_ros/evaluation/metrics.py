"""Semantic segmentation metrics: confusion matrix, per-class IoU, mIoU over seen / unseen classes and hIoU.

Training's evaluation, rosbag replay and the ROS evaluate node all report through :func:`summarize`, so
their ``metrics.json`` files have the same keys and the same meaning:

    miou, miou_seen, miou_unseen, hiou   percent, 0-100 (hIoU = harmonic mean of seen and unseen mIoU)
    iou_per_class                         {class name: percent}
    points                                number of labelled points evaluated
    in_view, out_of_view                  (where sweeps come with cameras) the same keys again, for the points
                                          a camera sees and for those no camera sees: what a model learnt
                                          beyond the teacher's images is a number of its own

A class that appears neither in the ground truth nor in the predictions has no IoU (``None`` in
``iou_per_class``) and is left out of the means, as the SemanticKITTI benchmark does. Points whose ground
truth is ignored (< 0) are not counted; a labelled point predicted as ignored (< 0) counts as a miss of its
class.

Metrics are always in the ground truth's class list. :func:`prediction_lookup` maps a segmenter's labels to
it by class name, the one rule that training's evaluation, replay and the stream evaluator share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates ``counts[true, predicted]`` over many sweeps; ``counts`` is (C, C) int64."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.missed = np.zeros(num_classes, dtype=np.int64)  # labelled points predicted as ignored

    def update(self, predicted, target) -> None:
        predicted = np.asarray(predicted).reshape(-1).astype(np.int64)
        target = np.asarray(target).reshape(-1).astype(np.int64)
        if predicted.shape != target.shape:
            raise ValueError(f"{predicted.size} predictions for {target.size} ground-truth labels")
        if (target >= self.num_classes).any() or (predicted >= self.num_classes).any():
            raise ValueError(f"labels must be below num_classes={self.num_classes}")
        labelled = target >= 0
        predicted, target = predicted[labelled], target[labelled]
        hit = predicted >= 0
        c = self.num_classes
        self.counts += np.bincount(target[hit] * c + predicted[hit], minlength=c * c).reshape(c, c)
        self.missed += np.bincount(target[~hit], minlength=c)

    def iou(self) -> np.ndarray:
        """(C,) IoU in [0, 1]; NaN for a class absent from both ground truth and predictions."""
        true_positive = np.diag(self.counts).astype(np.float64)
        ground_truth = self.counts.sum(axis=1) + self.missed
        predicted = self.counts.sum(axis=0)
        union = ground_truth + predicted - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    @property
    def num_points(self) -> int:
        return int(self.counts.sum() + self.missed.sum())


def harmonic_mean(a: float, b: float) -> float:
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def _mean_percent(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(100.0 * values.mean()) if values.size else float("nan")


def summarize(confusion: ConfusionMatrix, class_names: Sequence[str], seen: Sequence[bool]) -> dict:
    """The metrics dictionary described in the module docstring (NaN where a mean has no class)."""
    if len(class_names) != confusion.num_classes or len(seen) != confusion.num_classes:
        raise ValueError("class_names and seen must have one entry per class")
    iou = confusion.iou()
    seen_mask = np.asarray(seen, dtype=bool)
    miou_seen = _mean_percent(iou[seen_mask])
    miou_unseen = _mean_percent(iou[~seen_mask])
    return {
        "miou": _mean_percent(iou),
        "miou_seen": miou_seen,
        "miou_unseen": miou_unseen,
        "hiou": harmonic_mean(miou_seen, miou_unseen),
        "iou_per_class": {
            name: (None if np.isnan(value) else float(100.0 * value))
            for name, value in zip(class_names, iou, strict=True)
        },
        "points": confusion.num_points,
    }


def evaluate_labels(
    predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray], class_names: Sequence[str], seen: Sequence[bool]
) -> tuple[dict, ConfusionMatrix]:
    """Metrics over several sweeps at once; also returns the confusion matrix (for plots)."""
    confusion = ConfusionMatrix(len(class_names))
    for predicted, target in zip(predictions, targets, strict=True):
        confusion.update(predicted, target)
    return summarize(confusion, class_names, seen), confusion


def prediction_lookup(segmenter_names: Sequence[str], dataset_names: Sequence[str]) -> np.ndarray:
    """Array that maps a segmenter label to a dataset label: ``lookup[label]``, -1 for no dataset class.

    It has one entry more than the segmenter has classes, holding -1, so that ``lookup[-1]`` (the segmenter's
    ignored points) is -1 too and the whole prediction array maps with one indexing operation.
    """
    dataset_index = {name: index for index, name in enumerate(dataset_names)}
    common = [name for name in segmenter_names if name in dataset_index]
    if not common:
        raise ValueError(
            f"the segmenter's classes {list(segmenter_names)} and the dataset's {list(dataset_names)} have no "
            "class in common: wrong checkpoint or dataset?"
        )
    lookup = np.full(len(segmenter_names) + 1, -1, dtype=np.int64)
    for index, name in enumerate(segmenter_names):
        lookup[index] = dataset_index.get(name, -1)
    return lookup
