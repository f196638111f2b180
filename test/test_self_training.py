"""Self-training's rules: segments, label spreading, ground removal and label quality (the branch of a
self-training variant from another run's model is tested with the ablation runner, test_ablation.py)."""

import numpy as np

from clip_seg3d_ros.training import self_training


# -- labels spread over segments -----------------------------------------------------------------------------------
def test_segments_are_the_connected_components_of_the_member_voxels():
    # Two bars along x, 0.1 m apart in steps, 3 m apart in y; a lone point; and a non-member bridging the bars.
    bar = np.stack([np.arange(0, 2, 0.1), np.zeros(20), np.zeros(20)], axis=1)
    xyz = np.concatenate([bar, bar + [0, 3, 0], [[10, 10, 10]], [[1, 1.5, 0]]])
    members = np.ones(len(xyz), dtype=bool)
    members[-1] = False
    segment = self_training.segments(xyz, members, voxel_size=0.5)
    assert segment[-1] == -1
    assert len(set(segment[:20])) == 1 and len(set(segment[20:40])) == 1
    assert len({segment[0], segment[20], segment[40]}) == 3 and set(segment[:41]) == {0, 1, 2}
    # Diagonal neighbours (26-neighbourhood) connect; a gap of one empty voxel does not.
    diagonal = np.array([[0.1, 0.1, 0.1], [0.6, 0.6, 0.6], [1.1, 0.1, 1.1], [2.1, 0.1, 1.1]])
    assert self_training.segments(diagonal, np.ones(4, dtype=bool), 0.5).tolist() == [0, 0, 0, 1]
    # A long chain needs many propagation steps: still one segment.
    chain = np.stack([np.arange(0, 50, 0.4)] * 3, axis=1)
    assert set(self_training.segments(chain[::-1], np.ones(len(chain), dtype=bool), 0.5)) == {0}
    assert (self_training.segments(xyz, np.zeros(len(xyz), dtype=bool), 0.5) == -1).all()


def test_a_segments_majority_label_fills_its_unlabelled_points_where_it_has_support():
    segment = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, -1, 2, 2])
    labels = np.array([3, 3, 1, -1, -1, 2, -1, -1, -1, -1, 4, 5])
    filled = self_training.spread_over_segments(labels, segment, num_classes=6, min_support=0.3)
    # segment 0: class 3 has 2 of 5 points (0.4 >= 0.3): its open points take 3, the labelled keep theirs;
    # segment 1: 1 of 4 (0.25): too little support; -1: not a segment; segment 2: nothing open.
    assert filled.tolist() == [3, 3, 1, 3, 3, 2, -1, -1, -1, -1, 4, 5]


def test_the_ground_is_the_lowest_point_of_each_cell_plus_a_clearance():
    rng = np.random.default_rng(0)
    ground = np.column_stack([rng.uniform(0, 10, 500), rng.uniform(0, 10, 500), rng.normal(0, 0.03, 500)])
    ground[:, 2] += 0.05 * ground[:, 0]  # a gentle slope: 0.5 m over the 10 m
    box = np.column_stack([rng.uniform(4, 5, 200), rng.uniform(4, 5, 200), rng.uniform(0.4, 1.5, 200) + 0.25])
    above = self_training.above_ground(np.concatenate([ground, box]), cell_size=2.0, clearance=0.3)
    assert not above[:500].any() and above[500:].all()


def test_label_quality_counts_what_self_training_adds_per_view():
    truth = np.array([0, 0, 1, 1, 1, 2, 0, 1])
    pseudo = np.array([-1, -1, -1, -1, 1, -1, -1, -1])  # point 4: the teacher's, not counted
    labels = np.array([0, 1, 1, -1, 1, -1, 0, 1])
    in_view = np.array([True, True, True, True, True, True, False, False])
    counts = self_training.label_counts(labels, pseudo, truth, in_view, 3)
    quality = self_training.label_quality(counts + counts, ["a", "b", "c"], np.array([True, True, False]))
    # in view: a: 2 truth points, 1 labelled a (right); b: 2 truth (2, 3), labelled b twice (0 wrong, 2 right)
    assert quality["in_view"]["a"] == {"truth_points": 4, "labelled": 2, "recall": 0.5, "precision": 1.0}
    assert quality["in_view"]["b"] == {"truth_points": 4, "labelled": 4, "recall": 0.5, "precision": 0.5}
    assert quality["out_of_view"]["b"] == {"truth_points": 2, "labelled": 2, "recall": 1.0, "precision": 1.0}
    assert "c" not in quality["in_view"]
    empty = self_training.label_quality(np.zeros((2, 3, 3), dtype=np.int64), ["a", "b", "c"], np.ones(3, bool))
    assert empty["out_of_view"]["a"] == {"truth_points": 0, "labelled": 0, "recall": None, "precision": None}
