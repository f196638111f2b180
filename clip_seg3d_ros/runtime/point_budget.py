"""A bound on the points one sweep sends to the network (the node's ``max_points``), without losing any output.

Why: a merged multi-LiDAR cloud or a misconfigured driver can deliver many times the usual points, and the
network's memory and time grow with them. With a budget of ``B`` points and ``N > B`` valid points:

1. :func:`evenly_spaced` keeps ``B`` of them, evenly spread over the message order. A spinning LiDAR
   writes its points ring by ring or column by column, so every k-th point thins the sweep uniformly (the
   same share everywhere, no hole in any direction). Deterministic: the same sweep always gives the same
   result.
2. The kept points are voxelized and segmented as usual.
3. :func:`assign_to_kept_voxels` gives every other point the result of a kept voxel nearby: its own voxel when
   a kept point fell into it; otherwise, searching at growing scales (cells of 2, 4, ... 32 voxels), a kept
   voxel in the point's own cell of that scale or in the nearest (by cell centre) of the 26 cells around
   it. So a point takes a result from at most about 2 x 32 voxels away, from a nearer one wherever a
   kept point is near; the coarser the scale that finds it, the more approximate the choice. A point with
   no kept voxel that close is labelled -1 (ignored): it is still in the output, never dropped from it.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from clip_seg3d_ros.sparse.coords import COORD_LIMIT, CoordinateIndex, hash_coords, unhash_coords


def evenly_spaced(count: int, budget: int) -> np.ndarray:
    """``min(count, budget)`` strictly increasing indices into ``range(count)``, evenly spread, first one 0."""
    if count < 0 or budget < 0:
        raise ValueError(f"count and budget must be non-negative, got {count} and {budget}")
    if budget >= count:
        return np.arange(count)
    return (np.arange(budget, dtype=np.int64) * count) // budget


SEARCH_SCALES = (1, 2, 4, 8, 16, 32)
"""Cell sizes, in voxels, at which :func:`assign_to_kept_voxels` looks for a kept voxel near a point."""


def _cell_offsets(device: torch.device) -> torch.Tensor:
    """(27, 3) offsets: the cell itself first, then faces, edges and corners around it."""
    offsets = sorted(itertools.product((-1, 0, 1), repeat=3), key=lambda offset: sum(map(abs, offset)))
    return torch.tensor(offsets, dtype=torch.int64, device=device)


def _coarse_cells(voxel_coords: torch.Tensor, scale: int) -> tuple[CoordinateIndex, torch.Tensor]:
    """Index of the cells of ``scale`` voxels that hold a kept voxel, and one kept voxel row (the lowest) per cell."""
    coarse = torch.div(voxel_coords, scale, rounding_mode="floor")
    coarse[:, 0] = voxel_coords[:, 0]
    keys, inverse = torch.unique(hash_coords(coarse), return_inverse=True)
    rows = torch.arange(len(voxel_coords), device=voxel_coords.device)
    representative = torch.full((len(keys),), len(voxel_coords), dtype=torch.int64, device=voxel_coords.device)
    representative.scatter_reduce_(0, inverse, rows, reduce="amin")
    return CoordinateIndex(unhash_coords(keys)), representative


def assign_to_kept_voxels(
    xyz: torch.Tensor, voxel_coords: torch.Tensor, voxel_size: float, scales: tuple[int, ...] = SEARCH_SCALES
) -> torch.Tensor:
    """(M,) int64 row into ``voxel_coords`` for each point of ``xyz`` (M, 3), -1 where none is close enough.

    ``voxel_coords`` (V, 4) are [batch, x, y, z] integer voxel coordinates of one cloud (batch 0), as
    :func:`clip_seg3d_ros.voxelize.voxelize` makes them. At each scale of ``scales`` (the first must be 1:
    the point's own voxel) the point's own cell wins, then the nearest neighbouring cell (module docstring).
    """
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (M, 3), got {tuple(xyz.shape)}")
    if not scales or scales[0] != 1:
        raise ValueError(f"the first search scale must be 1 (the own voxel), got {scales}")
    rows = torch.full((len(xyz),), -1, dtype=torch.int64, device=xyz.device)
    if len(xyz) == 0 or len(voxel_coords) == 0:
        return rows
    cells = torch.floor(xyz / voxel_size).long()
    # Keys exist only for coordinates in the hashable range; a point beyond it has no voxel near it.
    margin = 2 * max(scales)
    searchable = ((cells >= -COORD_LIMIT + margin) & (cells < COORD_LIMIT - margin)).all(dim=1)
    offsets = _cell_offsets(xyz.device)
    for scale in scales:
        missing = torch.nonzero((rows < 0) & searchable).squeeze(1)
        if len(missing) == 0:
            break
        index, representative = _coarse_cells(voxel_coords, scale)
        point_cells = torch.div(cells[missing], scale, rounding_mode="floor")
        batch = torch.zeros(len(missing), 1, dtype=torch.int64, device=xyz.device)
        best_distance = torch.full((len(missing),), float("inf"), device=xyz.device)
        best_cell = torch.full((len(missing),), -1, dtype=torch.int64, device=xyz.device)
        for offset in offsets:
            cell = point_cells + offset
            found = index.lookup(torch.cat([batch, cell], dim=1))
            if not offset.any():  # the point's own cell: taken whenever it holds a kept voxel
                distance = torch.full_like(best_distance, -1.0)
            else:
                centre = (cell.to(xyz.dtype) + 0.5) * (scale * voxel_size)
                distance = torch.linalg.vector_norm(xyz[missing] - centre, dim=1)
            better = (found >= 0) & (distance < best_distance)
            best_distance = torch.where(better, distance, best_distance)
            best_cell = torch.where(better, found, best_cell)
        assigned = best_cell >= 0
        rows[missing[assigned]] = representative[best_cell[assigned]]
    return rows
