"""The real SemanticKITTI mini tree end to end through the loader, and its LiDAR-to-camera calibration checked
by the depth-edge / image-edge alignment (clip_seg3d_ros.geometry.calibration_check)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_folder

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES, SemanticKITTI
from clip_seg3d_ros.geometry.calibration_check import (
    depth_edges,
    edge_alignment,
    image_edges,
    perturbed,
)
from clip_seg3d_ros.geometry.camera import CameraModel, project_points

SEQUENCES = ["00", "01", "02", "03", "04"]


def test_depth_edges_are_the_near_side_of_a_range_jump_along_the_ring():
    ranges = np.array([10.0, 10.0, 5.0, 5.2, 10.0, 10.3, 10.0])
    points = np.stack([ranges, np.zeros(7), np.zeros(7)], axis=1)  # on the x axis: range = x
    assert depth_edges(points).tolist() == [False, False, True, True, False, False, False]


def test_image_edges_peak_on_a_step_and_fade_with_distance():
    image = np.zeros((5, 12, 3), dtype=np.uint8)
    image[:, 6:] = 200
    edges = image_edges(image, spread=3, decay=0.5)
    np.testing.assert_allclose(edges[2], [0, 0, 0.125, 0.25, 0.5, 1, 1, 0.5, 0.25, 0.125, 0, 0])  # step at 5|6


def test_perturbed_turns_the_transform_about_the_cameras_own_axis():
    camera = CameraModel("cam", K=np.eye(3), width=10, height=10, lidar_to_camera=np.eye(4))
    turned = perturbed(camera, axis=2, degrees=90.0).lidar_to_camera  # about the optical axis
    np.testing.assert_allclose(turned @ [1.0, 0.0, 5.0, 1.0], [0.0, 1.0, 5.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(camera.lidar_to_camera, np.eye(4))  # the original is untouched


@pytest.fixture(scope="module")
def kitti_mini():
    return SemanticKITTI(sample_folder("semantickitti_mini"), SEQUENCES)


def test_the_loader_walks_the_real_mini_tree(kitti_mini):
    assert len(kitti_mini) == 10
    for index in range(len(kitti_mini)):
        sample = kitti_mini[index]
        assert sample.points.shape[1] == 4 and len(sample.points) > 100_000
        assert sample.labels.shape == (len(sample.points),)
        assert sample.labels.min() >= -1 and sample.labels.max() < len(SEMANTICKITTI_CLASSES)
        labelled = np.bincount(sample.labels[sample.labels >= 0], minlength=len(SEMANTICKITTI_CLASSES))
        assert labelled[SEMANTICKITTI_CLASSES.index("road")] + labelled[SEMANTICKITTI_CLASSES.index("terrain")] > 0
        (frame,) = sample.cameras
        assert frame.image.shape[2] == 3 and (frame.camera.width, frame.camera.height) == frame.image.shape[1::-1]
        seen = project_points(sample.points[:, :3], frame.camera).point_indices
        assert 15_000 < len(seen) < 25_000  # the front camera's ~90 degrees of the sweep


def test_the_real_calibration_puts_depth_edges_on_image_edges_better_than_a_perturbed_one(kitti_mini):
    # Every rotation by 1 or 2 degrees about each camera axis scores lower on the mean over the ten scans, and
    # on most scans one by one: the shipped calibration is right to about a degree.
    given, turned = [], {}
    for index in range(len(kitti_mini)):
        sample = kitti_mini[index]
        frame = sample.cameras[0]
        edges = image_edges(frame.image)
        given.append(edge_alignment(sample.points, frame.camera, edges))
        for axis in range(3):
            for degrees in (-2.0, -1.0, 1.0, 2.0):
                turned.setdefault((axis, degrees), []).append(
                    edge_alignment(sample.points, perturbed(frame.camera, axis, degrees), edges))
    given = np.array(given)
    assert np.isfinite(given).all() and given.mean() > 0.05
    for (axis, degrees), scores in turned.items():
        scores = np.array(scores)
        assert scores.mean() < given.mean(), (axis, degrees, scores.mean(), given.mean())
        assert (scores < given).sum() >= 7, (axis, degrees, scores, given)
