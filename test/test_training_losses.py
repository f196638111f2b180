"""The training losses and label rules against independent numpy / float64 computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_seg3d_ros.training import self_training
from clip_seg3d_ros.training.losses import (
    combine_targets,
    info_nce,
    mcfa_semantic_loss,
    mcfa_spatial_loss,
    text_head_cross_entropy,
    voxel_targets,
)
from clip_seg3d_ros.training.schedule import (
    epoch_order,
    learning_rate_factor,
    self_training_round,
    starts_a_round,
    steps_per_epoch,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def reference_info_nce(queries: np.ndarray, keys: np.ndarray, temperature: float) -> float:
    """Both directions of InfoNCE, written out with an explicit log-sum-exp, in float64."""
    logits = unit(queries) @ unit(keys).T / temperature
    forward = np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(logits)])
    backward = np.mean([np.log(np.exp(col).sum()) - col[i] for i, col in enumerate(logits.T)])
    return 0.5 * (forward + backward)


def test_text_head_cross_entropy_matches_the_formula_and_ignores_unlabelled():
    rng = np.random.default_rng(0)
    features, text = rng.standard_normal((6, 8)), rng.standard_normal((3, 8))
    targets = np.array([0, 2, -1, 1, -1, 2])
    got = text_head_cross_entropy(torch.tensor(features), torch.tensor(text), torch.tensor(targets), 0.07)
    logits = unit(features) @ unit(text).T / 0.07
    labelled = np.flatnonzero(targets >= 0)
    expected = np.mean([np.log(np.exp(logits[i]).sum()) - logits[i, targets[i]] for i in labelled])
    assert got.item() == pytest.approx(expected, rel=1e-10)
    nothing = text_head_cross_entropy(torch.tensor(features), torch.tensor(text), torch.full((6,), -1), 0.07)
    assert nothing.item() == 0.0


def test_class_balanced_cross_entropy_weights_classes_by_inverse_frequency():
    rng = np.random.default_rng(7)
    features, text = rng.standard_normal((30, 8)), rng.standard_normal((3, 8))
    targets = np.array([0] * 20 + [1] * 6 + [-1] * 4)  # class 2 absent
    got = text_head_cross_entropy(torch.tensor(features), torch.tensor(text), torch.tensor(targets), 0.1,
                                  class_balance=0.5).item()
    logits = unit(features) @ unit(text).T / 0.1
    weights = {0: (20 / 26) ** -0.5, 1: (6 / 26) ** -0.5}
    labelled = np.flatnonzero(targets >= 0)
    losses = [weights[targets[i]] * (np.log(np.exp(logits[i]).sum()) - logits[i, targets[i]]) for i in labelled]
    assert got == pytest.approx(sum(losses) / sum(weights[targets[i]] for i in labelled), rel=1e-10)


def test_info_nce_matches_reference_and_rewards_alignment():
    rng = np.random.default_rng(1)
    queries, keys = rng.standard_normal((5, 16)), rng.standard_normal((5, 16))
    got = info_nce(torch.tensor(queries), torch.tensor(keys), 0.1).item()
    assert got == pytest.approx(reference_info_nce(queries, keys, 0.1), rel=1e-10)
    aligned = info_nce(torch.tensor(keys + 0.01 * queries), torch.tensor(keys), 0.1).item()
    assert aligned < 0.05 < got
    assert info_nce(torch.tensor(queries[:1]), torch.tensor(keys[:1]), 0.1).item() == 0.0


def test_semantic_loss_uses_prototypes_of_classes_present_in_both_modalities():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((40, 8))
    voxel_labels = rng.integers(-1, 3, size=40)  # classes 0, 1, 2 in 3D
    cells = rng.standard_normal((30, 8))
    cell_labels = rng.choice([-1, 1, 2, 3], size=30)  # classes 1, 2, 3 in 2D: only 1 and 2 are in both
    got = mcfa_semantic_loss(torch.tensor(features), torch.tensor(voxel_labels), torch.tensor(cells),
                             torch.tensor(cell_labels), num_classes=4, temperature=0.07).item()
    proto_3d = np.stack([unit(features)[voxel_labels == c].mean(axis=0) for c in (1, 2)])
    proto_2d = np.stack([cells[cell_labels == c].mean(axis=0) for c in (1, 2)])
    assert got == pytest.approx(reference_info_nce(proto_3d, proto_2d, 0.07), rel=1e-9)


def test_spatial_loss_pools_points_per_cell_and_skips_sparse_cells():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((50, 8))
    point_cells = rng.integers(-1, 6, size=50)
    point_cells[:2] = 9  # cell 9: only 2 points, below min_points=3
    cell_features = rng.standard_normal((10, 8))
    got = mcfa_spatial_loss(torch.tensor(features), torch.tensor(point_cells), torch.tensor(cell_features),
                            temperature=0.1, max_cells=100, min_points=3).item()
    kept = [c for c in range(10) if (point_cells == c).sum() >= 3]
    assert 9 not in kept and len(kept) >= 4
    pooled = np.stack([unit(features)[point_cells == c].mean(axis=0) for c in kept])
    assert got == pytest.approx(reference_info_nce(pooled, cell_features[kept], 0.1), rel=1e-9)


def test_weighted_rows_give_the_same_spatial_loss_as_one_row_per_point():
    rng = np.random.default_rng(8)
    voxel_features, cell_features = rng.standard_normal((30, 8)), rng.standard_normal((12, 8))
    point_voxel, point_cell = rng.integers(0, 30, size=400), rng.integers(-1, 12, size=400)
    per_point = mcfa_spatial_loss(torch.tensor(voxel_features[point_voxel]), torch.tensor(point_cell),
                                  torch.tensor(cell_features), 0.1, 100, 3).item()
    kept = point_cell >= 0
    pairs, counts = np.unique(point_voxel[kept] * 12 + point_cell[kept], return_counts=True)
    per_pair = mcfa_spatial_loss(torch.tensor(voxel_features[pairs // 12]), torch.tensor(pairs % 12),
                                 torch.tensor(cell_features), 0.1, 100, 3, weights=torch.tensor(counts)).item()
    assert len(pairs) < kept.sum() and per_pair == pytest.approx(per_point, rel=1e-10)
    # sample_losses' call: per-voxel features and each pair's voxel, gathered inside the loss.
    per_voxel = mcfa_spatial_loss(torch.tensor(voxel_features), torch.tensor(pairs % 12), torch.tensor(cell_features),
                                  0.1, 100, 3, weights=torch.tensor(counts), feature_rows=torch.tensor(pairs // 12))
    assert per_voxel.item() == pytest.approx(per_point, rel=1e-10)


def test_spatial_loss_pulls_pooled_features_towards_their_cells_clip_feature():
    torch.manual_seed(0)
    cell_features = F.normalize(torch.randn(8, 16), dim=1)
    point_cells = torch.arange(8).repeat_interleave(4)
    features = torch.randn(32, 16, requires_grad=True)
    optimizer = torch.optim.SGD([features], lr=0.5)
    before = mcfa_spatial_loss(features, point_cells, cell_features, 0.1, 100, 1).item()
    for _ in range(50):
        optimizer.zero_grad()
        mcfa_spatial_loss(features, point_cells, cell_features, 0.1, 100, 1).backward()
        optimizer.step()
    pooled = F.normalize(features.detach().view(8, 4, 16).mean(dim=1), dim=1)
    assert mcfa_spatial_loss(features, point_cells, cell_features, 0.1, 100, 1).item() < 0.2 * before
    assert (pooled @ cell_features.T).argmax(dim=1).tolist() == list(range(8))


def test_spatial_loss_caps_the_number_of_cells_with_a_random_draw():
    rng = np.random.default_rng(6)
    features, cell_features = rng.standard_normal((400, 8)), rng.standard_normal((100, 8))
    point_cells = np.tile(np.arange(100), 4)
    capped = mcfa_spatial_loss(torch.tensor(features), torch.tensor(point_cells), torch.tensor(cell_features), 0.1,
                               10, 1, torch.Generator().manual_seed(0)).item()
    drawn = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:10].numpy()
    pooled = np.stack([unit(features)[point_cells == c].mean(axis=0) for c in drawn])
    assert capped == pytest.approx(reference_info_nce(pooled, cell_features[drawn], 0.1), rel=1e-9)


def test_voxel_targets_take_each_voxels_majority_label():
    rng = np.random.default_rng(4)
    point_to_voxel = rng.integers(0, 20, size=300)
    targets = rng.integers(-1, 4, size=300)
    targets[point_to_voxel == 7] = -1  # a voxel without any target
    got = voxel_targets(torch.tensor(targets), torch.tensor(point_to_voxel), 20, 4).numpy()
    for voxel in range(20):
        labels = targets[(point_to_voxel == voxel) & (targets >= 0)]
        if labels.size == 0:
            assert got[voxel] == -1
        else:
            counts = np.bincount(labels, minlength=4)
            assert counts[got[voxel]] == counts.max()


def test_annotations_win_over_pseudo_labels():
    labels = np.array([0, -1, 2, -1])
    pseudo = np.array([1, 3, -1, -1])
    assert combine_targets(labels, pseudo).tolist() == [0, 3, 2, -1]
    assert combine_targets(labels, None).tolist() == labels.tolist()


def test_self_training_keeps_the_top_fraction_of_every_class():
    rng = np.random.default_rng(5)
    predicted = rng.integers(0, 3, size=20000)
    # class 2 is "hard": its scores are much lower; a global threshold would drop it entirely.
    scores = np.where(predicted == 2, rng.uniform(0.2, 0.5, 20000), rng.uniform(0.6, 1.0, 20000))
    labels = np.where(rng.random(20000) < 0.3, 0, -1)  # annotated points never get a self-training label
    allowed = np.array([True, True, True])
    candidate = self_training.candidates(labels, predicted, scores, allowed, min_score=0.0)
    histogram = self_training.score_histogram(predicted, scores, candidate, 3)
    thresholds = self_training.class_thresholds(histogram, top_fraction=0.25)
    chosen = self_training.select(labels, predicted, scores, candidate, thresholds)
    assert (chosen[labels >= 0] == -1).all()
    for cls in range(3):
        pool = candidate & (predicted == cls)
        kept = (chosen == cls).sum() / pool.sum()
        assert 0.25 <= kept < 0.26
        assert scores[chosen == cls].min() >= scores[pool & (chosen != cls)].max() - 1e-3
    assert self_training.class_thresholds(np.zeros((2, self_training.SCORE_BINS), dtype=np.int64), 0.5)[0] == np.inf


def test_self_training_candidates_respect_allowed_classes_and_min_score():
    labels = np.array([-1, -1, -1, 1])
    predicted = np.array([0, 1, 1, 1])
    scores = np.array([0.9, 0.9, 0.3, 0.9])
    allowed = np.array([False, True])
    assert self_training.candidates(labels, predicted, scores, allowed, 0.5).tolist() == [False, True, False, False]


def test_learning_rate_decays_by_cosine_to_the_floor(tmp_path):
    from clip_seg3d_ros.training.config import load_config

    config = load_config(None, ["optim.min_lr_ratio=0.1"])
    assert learning_rate_factor(config, 0, 100) == pytest.approx(1.0)
    assert learning_rate_factor(config, 50, 100) == pytest.approx(0.55)
    assert learning_rate_factor(config, 100, 100) == pytest.approx(0.1)


def test_the_schedule_orders_whole_steps_and_numbers_the_self_training_rounds():
    from clip_seg3d_ros.training.config import load_config

    config = load_config(None, ["schedule.epochs=2", "schedule.self_training_rounds=2",
                                "schedule.self_training_epochs=3", "optim.samples_per_step=3"])
    assert steps_per_epoch(config, 10) == 3  # the tenth sweep would make a step of one
    order = epoch_order(config, 1, 10)
    assert len(order) == 9 and len(set(order.tolist())) == 9 and set(order.tolist()) <= set(range(10))
    np.testing.assert_array_equal(order, epoch_order(config, 1, 10))  # from (seed, epoch) alone
    assert not np.array_equal(order, epoch_order(config, 2, 10))
    assert [self_training_round(config, epoch) for epoch in range(8)] == [None, None, 0, 0, 0, 1, 1, 1]
    assert [epoch for epoch in range(8) if starts_a_round(config, epoch)] == [2, 5]


def test_spatial_loss_on_a_random_subset_of_cells_pools_each_chosen_cell_over_all_its_points():
    rng = np.random.default_rng(11)
    features, cell_features = rng.standard_normal((600, 8)), rng.standard_normal((40, 8))
    point_cells = rng.integers(-1, 40, size=600)
    got = mcfa_spatial_loss(torch.tensor(features), torch.tensor(point_cells), torch.tensor(cell_features),
                            0.1, 7, 3, generator=torch.Generator().manual_seed(5)).item()
    enough = [c for c in range(40) if (point_cells == c).sum() >= 3]
    chosen = [enough[k] for k in torch.randperm(len(enough), generator=torch.Generator().manual_seed(5))[:7]]
    pooled = np.stack([unit(features)[point_cells == c].mean(axis=0) for c in chosen])
    assert len(enough) > 7 and got == pytest.approx(reference_info_nce(pooled, cell_features[chosen], 0.1), rel=1e-9)
