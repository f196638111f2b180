"""Metrics of a running segmenter: predictions and ground truth that arrive as separate streams, paired by stamp.

The evaluate node (:mod:`clip_seg3d_ros.nodes.evaluate_node`) hears the segmenter's labelled clouds and a
ground-truth cloud of the same sweeps (``/points_gt``). The segmenter copies its input's header to its
output, so a prediction and its ground truth carry the same stamp, to the nanosecond: pairing is exact, and
either may come first. Unpaired entries wait in a bounded buffer; when it is full, the oldest is given up
and counted (a sweep the segmenter skipped or dropped never gets a prediction).

Metrics are in the ground truth's class list; predictions are mapped to it by class name
(:func:`clip_seg3d_ros.evaluation.metrics.prediction_lookup`, the rule training's evaluation uses) once the
segmenter's class names are known, and taken as indices into the same list until then.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from clip_seg3d_ros.checkpoint import load_checkpoint
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, prediction_lookup, summarize


class StampPairing:
    """Two streams of (stamp, item); :meth:`add` returns the pair once both items of a stamp are in."""

    def __init__(self, capacity: int = 50) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._waiting: tuple[OrderedDict, OrderedDict] = (OrderedDict(), OrderedDict())
        self.given_up = [0, 0]

    def add(self, stream: int, stamp_ns: int, item) -> tuple | None:
        """Add ``item`` of ``stream`` (0 or 1); returns (item of stream 0, item of stream 1) when it completes a pair.

        A second item of the same stream and stamp replaces the first (a re-published sweep).
        """
        if stream not in (0, 1):
            raise ValueError(f"stream must be 0 or 1, got {stream}")
        other = self._waiting[1 - stream]
        if stamp_ns in other:
            partner = other.pop(stamp_ns)
            return (item, partner) if stream == 0 else (partner, item)
        waiting = self._waiting[stream]
        waiting.pop(stamp_ns, None)
        waiting[stamp_ns] = item
        while len(waiting) > self.capacity:
            waiting.popitem(last=False)
            self.given_up[stream] += 1
        return None

    def waiting(self, stream: int) -> int:
        return len(self._waiting[stream])


class StreamEvaluator:
    """A confusion matrix over paired (prediction, ground truth) sweeps; see the module docstring.

    ``class_names`` / ``seen``: the ground truth's classes and which were seen in training (for the
    seen / unseen / harmonic means). Ground-truth labels are indices into ``class_names``, -1 unlabelled;
    predicted labels are indices into the segmenter's classes, -1 ignored.
    """

    PREDICTION, GROUND_TRUTH = 0, 1

    def __init__(self, class_names: Sequence[str], seen: Sequence[bool], capacity: int = 50) -> None:
        if len(seen) != len(class_names):
            raise ValueError(f"{len(seen)} seen flags for {len(class_names)} classes")
        self.class_names = list(class_names)
        self.seen = [bool(flag) for flag in seen]
        self.confusion = ConfusionMatrix(len(self.class_names))
        self.pairing = StampPairing(capacity)
        self._lookup: np.ndarray | None = None
        self.sweeps = 0
        self.rejected: dict[str, int] = {"size_mismatch": 0, "unknown_label": 0}

    def set_prediction_classes(self, names: Sequence[str]) -> None:
        """The segmenter's class names (its label_info): predictions are mapped to ours by name from now on."""
        self._lookup = prediction_lookup(list(names), self.class_names)

    def add_prediction(self, stamp_ns: int, labels: np.ndarray) -> bool:
        """True when this prediction completed a pair and was counted."""
        return self._add(self.PREDICTION, stamp_ns, labels)

    def add_ground_truth(self, stamp_ns: int, labels: np.ndarray) -> bool:
        return self._add(self.GROUND_TRUTH, stamp_ns, labels)

    def _add(self, stream: int, stamp_ns: int, labels: np.ndarray) -> bool:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        pair = self.pairing.add(stream, int(stamp_ns), labels)
        if pair is None:
            return False
        predicted, truth = pair
        if predicted.shape != truth.shape:
            self.rejected["size_mismatch"] += 1
            return False
        if self._lookup is not None:
            if predicted.size and predicted.max() >= len(self._lookup) - 1:
                self.rejected["unknown_label"] += 1
                return False
            predicted = self._lookup[predicted]
        if predicted.size and max(predicted.max(), truth.max()) >= len(self.class_names):
            self.rejected["unknown_label"] += 1
            return False
        self.confusion.update(predicted, truth)
        self.sweeps += 1
        return True

    @property
    def unmatched(self) -> dict[str, int]:
        """Sweeps without a partner: given up (buffer full) plus still waiting, per stream."""
        return {
            "predictions": self.pairing.given_up[0] + self.pairing.waiting(0),
            "ground_truth": self.pairing.given_up[1] + self.pairing.waiting(1),
        }

    def metrics(self) -> dict:
        """The :func:`clip_seg3d_ros.evaluation.metrics.summarize` dictionary, as training's metrics.json holds it."""
        return summarize(self.confusion, self.class_names, self.seen)


def ground_truth_classes(
    checkpoint_path: str = "", class_names: Sequence[str] = (), unseen_classes: Sequence[str] = ()
) -> tuple[list[str], list[bool]]:
    """The evaluator's classes and seen flags: ``class_names`` with ``unseen_classes``, else the checkpoint's.

    The ground truth's ``label`` values index this list. Given names win over the checkpoint (ground truth of
    another class list than training's); without either, a ValueError says what to set.
    """
    if class_names:
        names = list(class_names)
        unknown = sorted(set(unseen_classes) - set(names))
        if unknown:
            raise ValueError(f"unseen_classes {unknown} are not among class_names {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names must be unique, got {names}")
        return names, [name not in unseen_classes for name in names]
    if checkpoint_path:
        vocabulary = load_checkpoint(checkpoint_path).vocabulary
        if unseen_classes:
            raise ValueError("unseen_classes is for class_names; with a checkpoint its own seen flags are used")
        return list(vocabulary.names), list(vocabulary.seen)
    raise ValueError("the ground truth's classes are unknown: set class_names (and unseen_classes) or checkpoint")
