"""Fault injection, points: a point the network cannot take is kept out of it, labelled ignored and counted; the
rest of the sweep is labelled as if it were not there. One bad point never costs the sweep."""

import numpy as np
import pytest

from clip_seg3d_ros.runtime.runtime import SegmentRuntime
from clip_seg3d_ros.segmenter import unusable_points
from clip_seg3d_ros.sparse.coords import COORD_LIMIT


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 3e38, -1e3])
def test_a_broken_intensity_keeps_only_that_point_out_of_the_network(segmenter, kitti_crop, bad_value):
    # Intensity near float32's maximum on a few points used to overflow their voxels' means and, through the
    # network, make every label of the sweep NaN. Now those points alone are ignored and counted.
    broken = kitti_crop.copy()
    broken[::500, 3] = bad_value
    labels, scores = segmenter(broken)
    others = np.ones(len(broken), dtype=bool)
    others[::500] = False
    expected_labels, expected_scores = segmenter(kitti_crop[others])
    assert (labels[~others] == -1).all() and (scores[~others] == 0).all()
    np.testing.assert_array_equal(labels[others], expected_labels)
    np.testing.assert_allclose(scores[others], expected_scores, rtol=1e-5)
    assert np.isfinite(scores).all()
    _, counts = unusable_points(broken, segmenter.config)
    assert counts == {"bad intensity": int((~others).sum())}


def test_points_off_the_voxel_grid_are_ignored_not_the_sweep(segmenter, kitti_crop):
    # One point kilometres away used to refuse the whole sweep (voxel coordinate range).
    far = kitti_crop.copy()
    far[7, :3] = [5000.0, -3.0, 1.0]
    far[9, :3] = [np.nan, 0.0, 0.0]
    labels, _ = segmenter(far)
    others = np.setdiff1d(np.arange(len(far)), [7, 9])
    np.testing.assert_array_equal(labels[others], segmenter(far[others])[0])
    assert labels[7] == labels[9] == -1
    assert unusable_points(far, segmenter.config)[1] == {"non-finite coordinates": 1, "outside the voxel grid": 1}
    edge = COORD_LIMIT * segmenter.config.voxel_size  # the first coordinate off the grid, in metres
    probe = np.array([[edge * 0.999, 0, 0, 0], [edge * 1.001, 0, 0, 0], [-edge * 1.001, 0, 0, 0]], np.float32)
    assert unusable_points(probe, segmenter.config)[0].tolist() == [False, True, True]


def test_the_point_budget_and_the_counts_see_the_same_unusable_points(segmenter, synthetic_sweep):
    dirty = synthetic_sweep.copy()
    dirty[:5, 0] = np.nan
    dirty[5:8, 3] = np.inf
    dirty[8, :3] = [9000.0, 0.0, 0.0]
    for max_points in (0, len(synthetic_sweep) // 2):
        result = SegmentRuntime(segmenter, max_points=max_points).process(dirty)
        assert result.unusable_points == {"non-finite coordinates": 5, "bad intensity": 3,
                                          "outside the voxel grid": 1}
        assert (result.labels[:9] == -1).all()
        if not max_points:  # (the budget may leave a far point without a kept voxel near it)
            assert (result.labels[9:] >= 0).all()
