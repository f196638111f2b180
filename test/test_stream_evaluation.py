"""The evaluate node's logic: predictions and ground truth paired by stamp, metrics as training reports them."""

import numpy as np
import pytest
from conftest import write_random_checkpoint

from clip_seg3d_ros.evaluation.metrics import evaluate_labels
from clip_seg3d_ros.evaluation.stream import StampPairing, StreamEvaluator, ground_truth_classes

NAMES = ["road", "car", "truck"]
SEEN = [True, True, False]


def sweeps(count: int, size: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = [rng.integers(-1, 3, size) for _ in range(count)]
    # Mostly right, some wrong, some ignored predictions.
    predicted = [np.where(rng.random(size) < 0.7, t.clip(0), rng.integers(-1, 3, size)) for t in truth]
    return predicted, truth


def test_pairs_in_either_order_give_the_metrics_of_evaluate_labels():
    predicted, truth = sweeps(6)
    evaluator = StreamEvaluator(NAMES, SEEN)
    for index in range(6):
        stamp = 1_000_000_000 * index + 5
        if index % 2:
            assert not evaluator.add_prediction(stamp, predicted[index])
            assert evaluator.add_ground_truth(stamp, truth[index])
        else:
            assert not evaluator.add_ground_truth(stamp, truth[index])
            assert evaluator.add_prediction(stamp, predicted[index])
    expected, _ = evaluate_labels(predicted, truth, NAMES, SEEN)
    assert evaluator.sweeps == 6 and evaluator.metrics() == expected
    assert evaluator.unmatched == {"predictions": 0, "ground_truth": 0}


def test_unpaired_sweeps_wait_in_a_bounded_buffer_and_are_counted():
    predicted, truth = sweeps(5)
    evaluator = StreamEvaluator(NAMES, SEEN, capacity=2)
    for index in range(5):
        evaluator.add_prediction(index, predicted[index])  # the segmenter ran, the ground truth is late
    assert evaluator.unmatched == {"predictions": 5, "ground_truth": 0}
    assert evaluator.add_ground_truth(4, truth[4]) and not evaluator.add_ground_truth(0, truth[0])  # 0 given up
    assert evaluator.sweeps == 1
    assert evaluator.unmatched == {"predictions": 3 + 1, "ground_truth": 1}


def test_predictions_are_mapped_by_class_name_once_known():
    truth = np.array([0, 1, 2, 2, -1])
    evaluator = StreamEvaluator(NAMES, SEEN)
    evaluator.set_prediction_classes(["truck", "road", "person"])  # person: not a ground-truth class
    evaluator.add_ground_truth(7, truth)
    assert evaluator.add_prediction(7, np.array([1, 2, 0, -1, 0]))  # road, person, truck, ignored, truck
    confusion = evaluator.confusion
    assert confusion.counts[0, 0] == 1 and confusion.counts[2, 2] == 1 and confusion.counts.sum() == 2
    assert confusion.missed.tolist() == [0, 1, 1]  # car predicted as person, a truck predicted as ignored
    with pytest.raises(ValueError, match="no class in common"):
        evaluator.set_prediction_classes(["person"])


def test_mismatched_sweeps_are_rejected_not_counted():
    evaluator = StreamEvaluator(NAMES, SEEN)
    evaluator.add_ground_truth(1, np.zeros(4, dtype=int))
    assert not evaluator.add_prediction(1, np.zeros(5, dtype=int))
    evaluator.add_ground_truth(2, np.zeros(4, dtype=int))
    assert not evaluator.add_prediction(2, np.array([0, 1, 2, 3]))  # label 3: no such class
    assert evaluator.rejected == {"size_mismatch": 1, "unknown_label": 1} and evaluator.sweeps == 0


def test_stamp_pairing_replaces_a_repeated_stamp():
    pairing = StampPairing(capacity=3)
    assert pairing.add(0, 10, "a") is None and pairing.add(0, 10, "b") is None
    assert pairing.add(1, 10, "x") == ("b", "x") and pairing.waiting(0) == 0
    with pytest.raises(ValueError):
        StampPairing(capacity=0)


def test_ground_truth_classes_from_names_or_a_checkpoint(tmp_path):
    assert ground_truth_classes("", ["road", "car", "truck"], ["truck"]) == (NAMES, SEEN)
    with pytest.raises(ValueError, match="not among class_names"):
        ground_truth_classes("", NAMES, ["bus"])
    with pytest.raises(ValueError, match="set class_names"):
        ground_truth_classes()
    path = write_random_checkpoint(tmp_path / "m.pt", NAMES, SEEN, embed_dim=8)
    assert ground_truth_classes(str(path)) == (NAMES, SEEN)
    assert ground_truth_classes(str(path), ["a", "b"]) == (["a", "b"], [True, True])  # given names win
