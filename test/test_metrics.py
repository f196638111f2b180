import math

import numpy as np
import pytest

from clip_seg3d_ros.evaluation.metrics import (
    ConfusionMatrix,
    evaluate_labels,
    harmonic_mean,
    prediction_lookup,
    summarize,
)


def iou_by_sets(predicted, target, cls):
    """Jaccard index of the point sets {target == cls} and {predicted == cls}, labelled points only."""
    labelled = target >= 0
    truth = set(np.flatnonzero(labelled & (target == cls)))
    guess = set(np.flatnonzero(labelled & (predicted == cls)))
    union = truth | guess
    return len(truth & guess) / len(union) if union else float("nan")


def test_iou_matches_set_definition_on_random_labels():
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 5, size=2000)
    predicted = np.where(rng.random(2000) < 0.6, target, rng.integers(-1, 5, size=2000))
    confusion = ConfusionMatrix(5)
    confusion.update(predicted[:700], target[:700])  # accumulation over two "sweeps"
    confusion.update(predicted[700:], target[700:])
    expected = [iou_by_sets(predicted, target, c) for c in range(5)]
    np.testing.assert_allclose(confusion.iou(), expected)
    assert confusion.num_points == int((target >= 0).sum())


def test_summary_of_a_hand_worked_example():
    # class 0 (seen): 2 right, class 1 (seen): 1 right + 1 predicted as class 2, class 2 (unseen): 1 right,
    # class 3 (unseen) never appears -> no IoU; one ignored point predicted as 0 does not count.
    target = np.array([0, 0, 1, 1, 2, -1])
    predicted = np.array([0, 0, 1, 2, 2, 0])
    metrics, _ = evaluate_labels([predicted], [target], ["a", "b", "c", "d"], [True, True, False, False])
    assert metrics["iou_per_class"] == {"a": 100.0, "b": 50.0, "c": 50.0, "d": None}
    assert metrics["miou"] == pytest.approx(200 / 3)
    assert metrics["miou_seen"] == pytest.approx(75.0)
    assert metrics["miou_unseen"] == pytest.approx(50.0)
    assert metrics["hiou"] == pytest.approx(60.0)
    assert metrics["points"] == 5


def test_labelled_point_predicted_as_ignored_is_a_miss():
    metrics, _ = evaluate_labels([np.array([0, -1])], [np.array([0, 0])], ["a"], [True])
    assert metrics["iou_per_class"]["a"] == 50.0


def test_bad_input_is_rejected():
    confusion = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="predictions"):
        confusion.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="num_classes"):
        confusion.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="one entry per class"):
        summarize(confusion, ["a"], [True])


def test_harmonic_mean():
    assert harmonic_mean(60.0, 60.0) == 60.0
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 3.0))


def test_prediction_lookup_maps_segmenter_labels_to_dataset_labels_by_name():
    # Segmenter: another order, one class the dataset lacks ("fire hydrant"); dataset: one it cannot predict.
    lookup = prediction_lookup(["car", "fire hydrant", "road"], ["road", "car", "pole"])
    np.testing.assert_array_equal(lookup, [1, -1, 0, -1])  # last entry: lookup[-1] keeps ignored points ignored
    np.testing.assert_array_equal(lookup[np.array([2, 0, -1, 1])], [0, 1, -1, -1])
    with pytest.raises(ValueError, match="no class in common"):
        prediction_lookup(["sky"], ["road", "car"])
