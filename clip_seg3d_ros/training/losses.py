"""The training losses: one sweep's (:func:`sample_losses`, what a training step sums), then each loss a small
function with its formula.

Notation: f_v the 3D network's feature of voxel v (D-dim, CLIP space), t_c the text embedding of class c,
x_j the teacher's (CLIP's) dense feature of image cell j; n(.) is L2 normalisation, <a, b> the dot product.

The paper (Wang et al., ACM MM 2023) describes MCFA in words and a figure; it does not publish the
formulas. The two MCFA losses below are our reading of that description, and the places where we had to
choose are marked "Our choice".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clip_seg3d_ros.models import ModelConfig
from clip_seg3d_ros.segmenter import network_input
from clip_seg3d_ros.sparse import select_backend
from clip_seg3d_ros.training.config import TrainConfig
from clip_seg3d_ros.training.data import TrainingSample, augment_points

LOSS_NAMES = ("total", "ce", "semantic", "spatial")  # what sample_losses returns


# -- one sweep -----------------------------------------------------------------------------------------------------
def sample_losses(model: torch.nn.Module, sample: TrainingSample, targets: np.ndarray, text: torch.Tensor,
                  config: TrainConfig, model_config: ModelConfig, rng: np.random.Generator,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The losses of one sweep against its per-point ``targets`` (:func:`combine_targets`), ``total`` their
    weighted sum. ``rng`` draws the sweep's augmentation and the spatial loss's cells."""
    points = torch.from_numpy(augment_points(sample.points, config.augment, rng)).to(device)
    voxels, sparse = network_input(points, model_config, select_backend(device, "auto"))
    features = model(sparse)
    num_voxels, num_classes = len(voxels.coords), len(text)
    per_voxel = voxel_targets(torch.from_numpy(targets).to(device), voxels.point_to_voxel, num_voxels, num_classes)
    settings = config.loss
    losses = {"ce": text_head_cross_entropy(features, text, per_voxel, model_config.temperature,
                                            settings.class_balance)}
    zero = features.sum() * 0.0
    cell_features = sample.cell_features.to(device)
    losses["semantic"] = zero
    if settings.semantic_weight > 0:
        losses["semantic"] = mcfa_semantic_loss(features, per_voxel, cell_features,
                                                torch.from_numpy(sample.cell_labels).to(device), num_classes,
                                                settings.semantic_temperature)
    losses["spatial"] = zero
    if settings.spatial_weight > 0:
        # One row per (voxel, cell) pair weighted by its points: the per-point pooling, without per-point rows.
        seen_by_camera = torch.from_numpy(np.flatnonzero(sample.point_cell >= 0)).to(device)
        num_cells = max(len(sample.cell_labels), 1)
        pairs = voxels.point_to_voxel[seen_by_camera] * num_cells + torch.from_numpy(sample.point_cell).to(
            device)[seen_by_camera]
        pairs, points_per_pair = torch.unique(pairs, return_counts=True)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        losses["spatial"] = mcfa_spatial_loss(
            features, pairs % num_cells, cell_features, settings.spatial_temperature, settings.spatial_max_patches,
            settings.spatial_min_points, generator, weights=points_per_pair, feature_rows=pairs // num_cells)
    losses["total"] = (losses["ce"] + settings.semantic_weight * losses["semantic"]
                       + settings.spatial_weight * losses["spatial"])
    return losses


def combine_targets(labels: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """Annotations first; pseudo or self-training labels only where a point has none."""
    return labels if extra is None else np.where(labels >= 0, labels, extra)


def voxel_targets(point_targets: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int,
                  num_classes: int) -> torch.Tensor:
    """(V,) the most frequent target among each voxel's points (-1 when none of them has one)."""
    labelled = point_targets >= 0
    flat = point_to_voxel[labelled] * num_classes + point_targets[labelled]
    counts = torch.bincount(flat, minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    best = counts.argmax(dim=1)
    return torch.where(counts.sum(dim=1) > 0, best, torch.full_like(best, -1))


# -- the losses ----------------------------------------------------------------------------------------------------


def text_head_cross_entropy(features: torch.Tensor, text: torch.Tensor, targets: torch.Tensor,
                            temperature: float, class_balance: float = 0.0) -> torch.Tensor:
    """Class-weighted cross-entropy on the text-embedding head, over the voxels with a target (>= 0):

        L_ce = sum_v w_{y_v} * -log softmax_c(<n(f_v), n(t_c)> / temperature)[y_v]  /  sum_v w_{y_v}
        w_c  = (n_c / n) ^ -class_balance        (n_c: voxels of class c in this sweep, n: all labelled)

    ``class_balance`` 0 is the plain mean; 0.5 (inverse square root of the frequency) lets the few hundred
    voxels of a small class (a sign, a bicyclist) count next to tens of thousands of road voxels.
    The targets are seen-class ground truth plus pseudo labels (projected from 2D, or self-training's);
    0 when no voxel has a target.
    """
    labelled = targets >= 0
    if not labelled.any():
        return features.sum() * 0.0
    # Logits of every voxel, then the labelled rows: indexing (V, C) is far cheaper than indexing (V, D).
    logits = (F.normalize(features, dim=1) @ F.normalize(text, dim=1).T / temperature)[labelled]
    targets = targets[labelled]
    weight = None
    if class_balance:
        counts = torch.bincount(targets, minlength=len(text)).to(logits.dtype)
        weight = (counts / counts.sum()).clamp(min=1e-12) ** -class_balance
    return F.cross_entropy(logits, targets, weight=weight)


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned (K, D) sets: row i of ``queries`` and of ``keys`` are a pair.

        L = 1/2 [ CE(n(Q) n(K)^T / T, diag) + CE(n(K) n(Q)^T / T, diag) ]

    0 when there are fewer than two pairs (no negative to contrast with).
    """
    if len(queries) < 2:
        return queries.sum() * 0.0
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    target = torch.arange(len(queries), device=queries.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def mcfa_semantic_loss(voxel_features: torch.Tensor, voxel_labels: torch.Tensor, cell_features: torch.Tensor,
                       cell_labels: torch.Tensor, num_classes: int, temperature: float) -> torch.Tensor:
    """MCFA, semantic (global) granularity: class prototypes of the 3D network against CLIP's.

        P3_c = mean_{v : y_v = c} n(f_v)        (3D prototype: voxels labelled c in this sweep)
        P2_c = mean_{j : l_j = c} x_j           (2D prototype: cells the teacher labels c)
        L_sem = InfoNCE({P3_c}, {P2_c}) over the classes present in both

    Our choice: the 3D labels y are the training targets (ground truth of seen classes plus pseudo labels);
    the 2D labels l are the teacher's own labels over all classes; prototypes are per sweep (not a memory
    bank over the data set), and the InfoNCE is symmetric.
    """
    features = F.normalize(voxel_features, dim=1)
    prototypes_3d, present_3d = _class_means(features, voxel_labels, num_classes)
    prototypes_2d, present_2d = _class_means(cell_features.to(features.dtype), cell_labels, num_classes)
    both = present_3d & present_2d
    return info_nce(prototypes_3d[both], prototypes_2d[both], temperature)


def mcfa_spatial_loss(point_features: torch.Tensor, point_cells: torch.Tensor, cell_features: torch.Tensor,
                      temperature: float, max_cells: int, min_points: int,
                      generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                      feature_rows: torch.Tensor | None = None) -> torch.Tensor:
    """MCFA, spatial (local) granularity: each image cell's pooled 3D feature against that cell's CLIP feature.

        z_j = mean_{p : cell(p) = j} n(f_p)     (points falling in cell j, f_p their voxel's feature)
        L_spa = InfoNCE({z_j}, {x_j}) over cells hit by at least ``min_points`` points

    Rows may stand for several points at once: with ``weights`` (the number of points of a row), z_j is the
    weighted mean, so one row per (voxel, cell) pair gives exactly the per-point mean at a fraction of the cost.
    With ``feature_rows``, row r's feature is ``point_features[feature_rows[r]]`` (e.g. rows = (voxel, cell)
    pairs, features = per voxel): only the rows of the chosen cells are then gathered.
    Our choice: at most ``max_cells`` cells per sweep, drawn at random (the cost is K^2); cells of the same
    class are negatives of each other, as in a plain InfoNCE, which the 3D features can satisfy only by
    following the fine-grained differences of CLIP's features.
    """
    hit = torch.nonzero(point_cells >= 0).squeeze(1)
    cells, inverse = torch.unique(point_cells[hit], return_inverse=True)
    row_weights = torch.ones(len(hit), dtype=point_features.dtype, device=point_features.device) \
        if weights is None else weights[hit].to(point_features.dtype)
    counts = torch.zeros(len(cells), dtype=point_features.dtype, device=point_features.device)
    counts.index_add_(0, inverse, row_weights)
    enough = torch.nonzero(counts >= min_points).squeeze(1)
    if len(enough) > max_cells:
        enough = enough[torch.randperm(len(enough), generator=generator)[:max_cells].to(enough.device)]
    # Pool only the rows of the chosen cells: normalising every row would cost most of this loss's backward.
    slot = torch.full((len(cells),), -1, dtype=torch.long, device=cells.device)
    slot[enough] = torch.arange(len(enough), device=cells.device)
    row_slot = slot[inverse]
    rows = row_slot >= 0
    pooled = torch.zeros(len(enough), point_features.shape[1], dtype=point_features.dtype,
                         device=point_features.device)
    chosen_rows = hit[rows] if feature_rows is None else feature_rows[hit[rows]]
    pooled.index_add_(0, row_slot[rows], F.normalize(point_features[chosen_rows], dim=1) * row_weights[rows, None])
    pooled = pooled / counts[enough][:, None]
    return info_nce(pooled, cell_features[cells[enough]].to(pooled.dtype), temperature)


def _class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) mean feature per class and (C,) bool "class has members"; rows without members are 0."""
    # Unlabelled rows go to an extra row C that is dropped: no (N, D) gather of the labelled rows.
    slots = torch.where(labels >= 0, labels, torch.full_like(labels, num_classes))
    sums = torch.zeros(num_classes + 1, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, slots, features)
    counts = torch.bincount(slots, minlength=num_classes + 1)[:num_classes]
    present = counts > 0
    return sums[:num_classes] / counts.clamp(min=1)[:, None], present
