"""Segmenter behaviour on real points: bad input, vocabulary swaps, calibration bias."""

import numpy as np
import pytest
import torch

from clip_seg3d_ros import Segmenter, Vocabulary
from clip_seg3d_ros.models import TextClassifier


@pytest.fixture()
def segmenter(small_model):
    return Segmenter(*small_model)


def test_nan_and_inf_points_are_ignored_without_disturbing_the_others(segmenter, kitti_crop):
    clean_labels, clean_scores = segmenter(kitti_crop)
    rng = np.random.default_rng(0)
    bad_rows = np.sort(rng.choice(len(kitti_crop) + 50, size=50, replace=False))
    dirty = np.insert(kitti_crop, bad_rows - np.arange(50), 0.0, axis=0)
    dirty[bad_rows, rng.integers(0, 3, size=50)] = rng.choice([np.nan, np.inf, -np.inf], size=50)
    labels, scores = segmenter(dirty)
    assert labels.shape == scores.shape == (len(dirty),)
    assert (labels[bad_rows] == -1).all() and (scores[bad_rows] == 0).all()
    good = np.setdiff1d(np.arange(len(dirty)), bad_rows)
    np.testing.assert_array_equal(labels[good], clean_labels)
    np.testing.assert_allclose(scores[good], clean_scores, rtol=1e-5)


@pytest.mark.parametrize("columns", [3, 4, 5])
def test_empty_and_all_invalid_clouds(segmenter, columns):
    labels, scores = segmenter(np.zeros((0, columns), dtype=np.float32))
    assert labels.shape == scores.shape == (0,)
    labels, scores = segmenter(np.full((7, columns), np.nan, dtype=np.float32))
    assert (labels == -1).all() and (scores == 0).all()


def test_xyz_only_points_mean_zero_intensity(segmenter, kitti_crop):
    zero_intensity = kitti_crop.copy()
    zero_intensity[:, 3] = 0
    np.testing.assert_array_equal(segmenter(kitti_crop[:, :3])[0], segmenter(zero_intensity)[0])


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros(5), np.array([["a", "b", "c"]])])
def test_malformed_points_are_a_clear_error(segmenter, bad):
    with pytest.raises(ValueError, match="points must be"):
        segmenter(bad)


def test_vocabulary_swap_changes_classes_not_the_network(segmenter, small_model, kitti_crop):
    _, vocabulary = small_model
    full_labels, _ = segmenter(kitti_crop)
    subset = vocabulary.subset(["vegetation", "road"])
    segmenter.set_vocabulary(subset)
    assert segmenter.class_names == ["vegetation", "road"]
    labels, _ = segmenter(kitti_crop)
    # Restricted to two classes, the winner is the one of the two with the larger logit: the same
    # decision as the full vocabulary wherever the full vocabulary chose one of them.
    was_road_or_veg = np.isin(full_labels, [0, 2])
    remapped = np.where(full_labels == 2, 0, 1)
    np.testing.assert_array_equal(labels[was_road_or_veg], remapped[was_road_or_veg])
    assert set(np.unique(labels)) <= {0, 1}
    with pytest.raises(ValueError, match="unknown class names"):
        vocabulary.subset(["unicorn"])
    with pytest.raises(ValueError, match="dimension"):
        segmenter.set_vocabulary(Vocabulary(["x"], torch.randn(1, 7)))


def test_calibration_bias_moves_decisions_to_unseen_classes(segmenter, kitti_crop):
    unseen = [segmenter.class_names.index(name) for name in ("truck", "motorcycle")]
    labels, _ = segmenter(kitti_crop)
    segmenter.calibration_bias = 2.0  # more than any cosine gap: no seen class can win
    biased, _ = segmenter(kitti_crop)
    assert np.isin(biased, unseen).all() and not np.isin(labels, unseen).all()


def test_classifier_logits_follow_the_formula(small_model):
    _, vocabulary = small_model
    classifier = TextClassifier(vocabulary, temperature=0.05, calibration_bias=0.3)
    features = torch.randn(10, vocabulary.embed_dim, dtype=torch.float64)
    text = vocabulary.text_embeddings.double()
    cosine = (features / features.norm(dim=1, keepdim=True)) @ (text / text.norm(dim=1, keepdim=True)).T
    expected = (cosine - 0.3 * torch.tensor([1.0, 1, 1, 0, 0], dtype=torch.float64)) / 0.05
    torch.testing.assert_close(classifier(features), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_bias", [True, False])
def test_the_projection_folded_into_the_classifier_gives_its_logits(small_model, with_bias):
    _, vocabulary = small_model
    classifier = TextClassifier(vocabulary, temperature=0.05, calibration_bias=0.3)
    generator = torch.Generator().manual_seed(4)
    projection = torch.nn.Linear(32, vocabulary.embed_dim, bias=with_bias)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(projection.weight.shape, generator=generator))
        if with_bias:  # a bias as large as the rest: the norm of f is not the norm of hidden @ W.T
            projection.bias.copy_(5 * torch.randn(vocabulary.embed_dim, generator=generator))
    hidden = torch.randn(300, 32, generator=generator)
    hidden[0] = 0  # the bias alone (or, without one, a zero feature: F.normalize's eps)
    bias = projection.bias.double() if with_bias else None
    expected = classifier(torch.nn.functional.linear(hidden.double(), projection.weight.double(), bias))
    folded = classifier.forward_projected(hidden, projection)
    assert folded.dtype == torch.float32
    torch.testing.assert_close(folded.double(), expected, rtol=1e-5, atol=1e-4)


def test_inference_logits_are_the_classifier_of_the_networks_features(segmenter, kitti_crop):
    prepared = segmenter.preprocess(kitti_crop)
    with torch.inference_mode():
        expected = segmenter.classifier(segmenter.model(prepared.sparse))
    logits = segmenter.infer_logits(prepared)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)
