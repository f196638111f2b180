"""2D pseudo labels from hand-built features whose answer is known, and their transfer to points."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from clip_seg3d_ros.geometry.camera import CameraModel, CameraProjection, project_points, projection_cells
from clip_seg3d_ros.models.classifier import CLIP_TEMPERATURE, dense_text_logits
from clip_seg3d_ros.teacher import PseudoLabelSettings, dense_pseudo_labels, pseudo_labels_to_points

# Three classes, text embeddings = the axes of R^3, temperature 0.1. The 2x2 feature map holds:
#   (0, 0) class 0 exactly                 -> p = (1.00, 0.00, 0.00)
#   (0, 1) class 1 exactly                 -> p = (0.00, 1.00, 0.00)
#   (1, 0) weakly class 2, then class 1    -> p = (0.091, 0.427, 0.483); without class 2: (0.175, 0.825)
#   (1, 1) between classes 0 and 1         -> p = (0.589, 0.411, 0.00)
# Class 2 is nowhere above 0.483, so prompt denoising at 0.5 drops it and cell (1, 0) becomes class 1.
TEXT = torch.eye(3)
CELLS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.75, 1.0, 1.02], [1.0, 0.95, 0.0]])
FEATURES = torch.nn.functional.normalize(CELLS, dim=1).T.reshape(3, 2, 2)


def labels_and_confidence(allowed=None, prompt_score_threshold=0.0, confidence_threshold=0.0):
    return dense_pseudo_labels(
        FEATURES,
        TEXT,
        allowed,
        temperature=0.1,
        prompt_score_threshold=prompt_score_threshold,
        confidence_threshold=confidence_threshold,
    )


def reference_probabilities(kept: list[int]) -> np.ndarray:
    """(4 cells, C) softmax over the ``kept`` classes only, written out with numpy."""
    cells = CELLS.numpy() / np.linalg.norm(CELLS.numpy(), axis=1, keepdims=True)
    logits = cells[:, kept] / 0.1
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def test_without_denoising_the_weak_class_wins_its_cell():
    labels, confidence = labels_and_confidence()
    assert labels.tolist() == [[0, 1], [2, 0]]
    assert labels.dtype == torch.int64
    assert np.allclose(confidence.flatten().numpy(), reference_probabilities([0, 1, 2]).max(axis=1), atol=1e-6)
    assert confidence[1, 0] == pytest.approx(0.483, abs=1e-3)


def test_prompt_denoising_drops_a_class_absent_from_the_image():
    labels, confidence = labels_and_confidence(prompt_score_threshold=0.5)
    assert labels.tolist() == [[0, 1], [1, 0]]
    assert np.allclose(confidence.flatten().numpy(), reference_probabilities([0, 1]).max(axis=1), atol=1e-6)
    assert confidence[1, 0] == pytest.approx(0.825, abs=1e-3)


def test_confidence_threshold_and_allowed_classes():
    labels, _ = labels_and_confidence(prompt_score_threshold=0.5, confidence_threshold=0.7)
    assert labels.tolist() == [[0, 1], [1, -1]]  # (1, 1) is only 0.589 sure
    # zero-shot: only classes 1 and 2 may be pseudo-labelled, but class 0 still competes in the argmax
    labels, _ = labels_and_confidence(torch.tensor([False, True, True]), 0.5, 0.7)
    assert labels.tolist() == [[-1, 1], [1, -1]]
    labels, _ = labels_and_confidence(np.array([True, False, False]), 0.5, 0.0)
    assert labels.tolist() == [[0, -1], [-1, 0]]


def test_nothing_survives_an_impossible_prompt_threshold():
    labels, confidence = labels_and_confidence(prompt_score_threshold=1.01)
    assert (labels == -1).all() and (confidence == 0).all()


def test_settings_dataclass_feeds_the_function():
    settings = PseudoLabelSettings(temperature=0.1, prompt_score_threshold=0.5, confidence_threshold=0.7)
    labels, _ = dense_pseudo_labels(FEATURES, TEXT, None, **asdict(settings))
    assert labels.tolist() == [[0, 1], [1, -1]]
    with pytest.raises(ValueError, match="allowed"):
        dense_pseudo_labels(FEATURES, TEXT, torch.ones(2, dtype=torch.bool), **asdict(settings))


def projection(name: str, points: list[int], pixels: list[tuple[float, float]]) -> CameraProjection:
    return CameraProjection(
        camera=name,
        point_indices=np.array(points, dtype=np.int64),
        pixels=np.array(pixels, dtype=np.float64).reshape(-1, 2),
        depth=np.ones(len(points)),
    )


# Camera 0: 4x8 image, 2x4 label map (cell = (row // 2, column // 2)); camera 1: 6x6 image, 3x3 map.
LABEL_MAPS = [
    np.array([[0, 1, -1, 3], [4, 5, 6, 7]]),
    torch.tensor([[10, 11, 12], [13, -1, 15], [16, 17, 18]]),  # torch maps work too
]
CONFIDENCES = [np.full((2, 4), 0.6), np.full((3, 3), 0.9)]
CONFIDENCES[0][1, 3] = 0.95
CONFIDENCES[1][2, 1] = 0.5
IMAGE_SIZES = [(4, 8), (6, 6)]
# (u, v) pixels; point 4 is seen by no camera, point 6 only where camera 1 has no label.
PROJECTIONS = [
    projection("cam0", [0, 1, 2, 3, 7], [(1, 0), (7.4, 3.4), (4.2, 1), (2, 0), (6, 2)]),
    projection("cam1", [2, 3, 5, 6, 7], [(0, 5), (5, 0), (-0.4, 2.6), (2, 2), (3, 4)]),
]


def test_points_take_the_label_of_their_feature_cell():
    labels = pseudo_labels_to_points(LABEL_MAPS, IMAGE_SIZES, PROJECTIONS, num_points=8)
    # point 2: unlabelled in camera 0, labelled in camera 1; points 3 and 7: the first camera wins
    assert labels.tolist() == [0, 7, 16, 1, -1, 13, -1, 7]
    assert labels.dtype == np.int64


def test_the_more_confident_camera_wins():
    labels = pseudo_labels_to_points(LABEL_MAPS, IMAGE_SIZES, PROJECTIONS, num_points=8, confidences=CONFIDENCES)
    # point 3: camera 1 (0.9) beats camera 0 (0.6); point 7: camera 0 (0.95) beats camera 1 (0.5)
    assert labels.tolist() == [0, 7, 16, 12, -1, 13, -1, 7]


def test_pixels_outside_the_stated_image_size_are_an_error():
    with pytest.raises(ValueError, match="outside"):
        pseudo_labels_to_points(LABEL_MAPS[:1], [(2, 8)], PROJECTIONS[:1], num_points=8)


def test_dense_text_logits_are_cosines_over_clips_temperature_cell_by_cell():
    # The 2D side's one text classifier (pseudo labels and camera fusion) against a plain loop in float64.
    generator = torch.Generator().manual_seed(4)
    features, text = torch.randn(5, 3, 2, generator=generator), torch.randn(4, 5, generator=generator)
    logits = dense_text_logits(features, text)
    assert CLIP_TEMPERATURE == 0.01 and logits.shape == (6, 4)
    for cell in range(6):
        row, column = divmod(cell, 2)
        feature = features[:, row, column].double()
        for class_index in range(4):
            cosine = feature @ text[class_index].double() / (feature.norm() * text[class_index].double().norm())
            assert float(logits[cell, class_index]) == pytest.approx(float(cosine) / 0.01, rel=1e-5)
    np.testing.assert_allclose(dense_text_logits(features, text, 0.5), logits * 0.01 / 0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        dense_text_logits(features, text, 0.0)
    with pytest.raises(ValueError, match=r"dense features must be \(D=5, h, w\)"):
        dense_text_logits(features[:4], text)


def test_projection_cells_put_each_seen_point_in_the_cell_its_pixel_falls_in():
    camera = CameraModel(name="cam", K=np.array([[10.0, 0, 4.5], [0, 10.0, 2.5], [0, 0, 1]]), width=10, height=6,
                         lidar_to_camera=np.eye(4))
    # Pixels (u, v): (4.5, 2.5) centre, (0, 0) top-left, (9.4, 5.4) bottom-right; one point behind the camera.
    xyz = np.array([[0.0, 0.0, 1.0], [-0.45, -0.25, 1.0], [0.49, 0.29, 1.0], [0.0, 0.0, -1.0]])
    projection = project_points(xyz, camera)
    assert projection.point_indices.tolist() == [0, 1, 2]
    # A 2 x 5 grid over the 6 x 10 image: cell (row * 2 // 6, column * 5 // 10).
    assert projection_cells(projection, (6, 10), (2, 5)).tolist() == [1 * 5 + 2, 0, 1 * 5 + 4]
