"""SegmentRuntime, the node's and replay's processing path, and the point budget (max_points)."""

import numpy as np
import pytest
import torch

from clip_seg3d_ros.runtime.point_budget import assign_to_kept_voxels, evenly_spaced
from clip_seg3d_ros.runtime.runtime import STAGES, SegmentRuntime


@pytest.fixture(scope="module")
def points(synthetic_sweep) -> np.ndarray:
    return synthetic_sweep


def test_labels_and_scores_are_the_segmenters_and_every_stage_is_timed(segmenter, points):
    result = SegmentRuntime(segmenter).process(points)
    labels, scores = segmenter(points)
    assert result.labels.dtype == np.int32 and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
    assert set(result.timings_ms) == set(STAGES)
    parts = sum(result.timings_ms[stage] for stage in STAGES if stage != "total")
    assert all(value >= 0 for value in result.timings_ms.values())
    assert result.timings_ms["total"] >= parts - 1e-6 and result.timings_ms["inference"] > 0


def test_score_threshold_ignores_low_scores_and_keeps_their_scores(segmenter, points):
    plain = SegmentRuntime(segmenter).process(points)
    threshold = float(np.median(plain.scores))
    result = SegmentRuntime(segmenter, score_threshold=threshold).process(points)
    low = plain.scores < threshold
    assert 0.3 < low.mean() < 0.7
    assert (result.labels[low] == -1).all()
    np.testing.assert_array_equal(result.labels[~low], plain.labels[~low])
    np.testing.assert_array_equal(result.scores, plain.scores)
    with pytest.raises(ValueError, match="score_threshold"):
        SegmentRuntime(segmenter, score_threshold=1.5)


def test_nan_rows_are_ignored_and_the_others_unchanged(segmenter, points):
    clean = SegmentRuntime(segmenter).process(points)
    dirty = points.copy()
    bad = np.arange(0, len(points), 97)
    dirty[bad, 1] = np.nan
    dirty[bad[::2], 2] = np.inf
    result = SegmentRuntime(segmenter).process(dirty)
    assert (result.labels[bad] == -1).all() and (result.scores[bad] == 0).all()
    good = np.setdiff1d(np.arange(len(points)), bad)
    # Removing points changes voxel means only in the voxels they shared; most labels stay.
    assert (result.labels[good] == clean.labels[good]).mean() > 0.95


def test_empty_sweep_and_malformed_points(segmenter):
    result = SegmentRuntime(segmenter).process(np.zeros((0, 4), dtype=np.float32))
    assert result.labels.shape == result.scores.shape == (0,) and set(result.timings_ms) == set(STAGES)
    result = SegmentRuntime(segmenter).process(np.full((3, 4), np.nan, dtype=np.float32))
    assert (result.labels == -1).all() and (result.scores == 0).all()
    for bad in (np.zeros((5, 2)), np.zeros(5), np.array([["a", "b", "c"]])):
        with pytest.raises(ValueError, match="points must be"):
            SegmentRuntime(segmenter).process(bad)
    with pytest.raises(ValueError, match="max_points"):
        SegmentRuntime(segmenter, max_points=-1)


def test_max_points_segments_an_even_subset_and_labels_every_point_through_voxels(segmenter, points):
    budget = len(points) // 3
    result = SegmentRuntime(segmenter, max_points=budget).process(points)
    assert result.labels.shape == (len(points),)
    kept = evenly_spaced(len(points), budget)
    # The kept points are labelled exactly as if they were the whole sweep.
    alone = SegmentRuntime(segmenter).process(points[kept])
    np.testing.assert_array_equal(result.labels[kept], alone.labels)
    # A dropped point that shares its voxel with a kept point takes that voxel's label.
    voxel_size = segmenter.config.voxel_size
    cells = np.floor(points[:, :3] / voxel_size).astype(np.int64)
    kept_label_of_cell = {tuple(cell): label for cell, label in zip(cells[kept], alone.labels, strict=True)}
    dropped = np.setdiff1d(np.arange(len(points)), kept)
    shared = [i for i in dropped if tuple(cells[i]) in kept_label_of_cell]
    assert len(shared) > 0.02 * len(dropped)  # a sparse sweep: few points share a 10 cm voxel
    assert all(result.labels[i] == kept_label_of_cell[tuple(cells[i])] for i in shared)
    # The rest find a kept voxel nearby, but for a few far points of this sparse sweep (metres between beams).
    ignored = result.labels < 0
    assert ignored.mean() < 0.01 and (np.linalg.norm(points[ignored, :2], axis=1) > 30).all()
    again = SegmentRuntime(segmenter, max_points=budget).process(points)
    np.testing.assert_array_equal(again.labels, result.labels)
    # A budget above the sweep's size changes nothing.
    unlimited = SegmentRuntime(segmenter).process(points)
    np.testing.assert_array_equal(SegmentRuntime(segmenter, max_points=len(points)).process(points).labels,
                                  unlimited.labels)


def test_vocabulary_swap_through_the_runtime(segmenter, small_model, points):
    _, vocabulary = small_model
    runtime = SegmentRuntime(segmenter)
    runtime.set_vocabulary(vocabulary.subset(["car", "road"]))
    assert runtime.class_names == ["car", "road"]
    np.testing.assert_array_equal(runtime.process(points).labels, segmenter(points)[0])
    assert set(np.unique(runtime.process(points).labels)) <= {0, 1}


def test_evenly_spaced_indices():
    np.testing.assert_array_equal(evenly_spaced(10, 3), [0, 3, 6])
    np.testing.assert_array_equal(evenly_spaced(5, 10), np.arange(5))
    np.testing.assert_array_equal(evenly_spaced(7, 0), [])
    picked = evenly_spaced(100_003, 40_000)
    assert len(picked) == 40_000 and (np.diff(picked) >= 2).all() and (np.diff(picked) <= 3).all()
    with pytest.raises(ValueError):
        evenly_spaced(-1, 3)


def test_assign_to_kept_voxels_prefers_the_own_voxel_then_the_nearest_neighbour():
    kept = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 0], [0, 5, 5, 5]])
    xyz = torch.tensor([
        [0.5, 0.5, 0.5],  # in voxel (0, 0, 0)
        [1.2, 0.5, 0.5],  # voxel (1, 0, 0) is empty; (0, 0, 0)'s centre is nearer than (2, 0, 0)'s
        [1.9, 0.5, 0.5],  # same empty voxel, nearer to (2, 0, 0)
        [2.99, 0.01, 0.99],  # inside (2, 0, 0) although a corner of it: the own voxel wins
        [3.5, 3.5, 3.5],  # no kept voxel next to (3, 3, 3); in 2-voxel cells, (5, 5, 5)'s is the nearest
        [500.0, 500.0, 0.0],  # more than 2 x 32 voxels from any kept voxel
        [1e6, 0.0, 0.0],  # beyond the hashable range
    ])
    rows = assign_to_kept_voxels(xyz, kept, voxel_size=1.0)
    assert rows.tolist() == [0, 0, 1, 1, 2, -1, -1]
    assert assign_to_kept_voxels(xyz, kept, voxel_size=1.0, scales=(1,)).tolist() == [0, 0, 1, 1, -1, -1, -1]
    assert assign_to_kept_voxels(xyz[:0], kept, 1.0).shape == (0,)
    assert (assign_to_kept_voxels(xyz, kept[:0], 1.0) == -1).all()
