"""Points -> voxels and back.

A voxel's feature is the mean of its points' features; devoxelization hands every point the value of the
voxel it fell into, so points that shared a voxel get the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clip_seg3d_ros.sparse.coords import check_coordinate_range, hash_coords, unhash_coords


@dataclass
class Voxelization:
    """``coords``: (V, 4) int64 [batch, x, y, z], key-sorted; ``feats``: (V, C) mean point features;
    ``point_to_voxel``: (N,) row of each point's voxel; ``counts``: (V,) points per voxel."""

    coords: torch.Tensor
    feats: torch.Tensor
    point_to_voxel: torch.Tensor
    counts: torch.Tensor


def voxelize(
    xyz: torch.Tensor,
    feats: torch.Tensor,
    voxel_size: float,
    batch_index: torch.Tensor | None = None,
) -> Voxelization:
    """Group points (N, 3) metres, with features (N, C), into voxels of edge ``voxel_size`` metres.

    ``batch_index`` (N,) int assigns points to clouds of a batch (all 0 when omitted).
    Coordinates must be finite: the caller filters NaN/inf points first.
    """
    if xyz.ndim != 2 or xyz.shape[1] != 3 or feats.shape[0] != xyz.shape[0]:
        raise ValueError(f"expected xyz (N, 3) and feats (N, C), got {tuple(xyz.shape)} and {tuple(feats.shape)}")
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    cells = torch.floor(xyz / voxel_size).long()
    if batch_index is None:
        batch_index = torch.zeros(len(xyz), dtype=torch.long, device=xyz.device)
    coords = torch.cat([batch_index.long()[:, None], cells], dim=1)
    check_coordinate_range(coords)
    keys, point_to_voxel, counts = torch.unique(hash_coords(coords), return_inverse=True, return_counts=True)
    summed = feats.new_zeros(len(keys), feats.shape[1]).index_add_(0, point_to_voxel, feats)
    mean = summed / counts.unsqueeze(1).to(feats.dtype)
    return Voxelization(coords=unhash_coords(keys), feats=mean, point_to_voxel=point_to_voxel, counts=counts)


def devoxelize(voxel_values: torch.Tensor, point_to_voxel: torch.Tensor) -> torch.Tensor:
    """Per-voxel values (V, ...) -> per-point values (N, ...), each point taking its voxel's value."""
    return voxel_values[point_to_voxel]
