"""The sparse voxel tensor and the coordinate cache shared by every tensor of one forward pass."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from clip_seg3d_ros.sparse.coords import CoordinateIndex, check_coordinate_range, downsample_coords
from clip_seg3d_ros.sparse.kernel_map import (
    KernelMap,
    LevelBox,
    downsampling_map,
    grid_submanifold_map,
    searched_map,
    submanifold_map,
)

GRID_CELLS_PER_VOXEL = 192
GRID_MAX_CELLS = 1 << 22
"""A submanifold map is looked up in a dense grid when its box has at most GRID_CELLS_PER_VOXEL cells per voxel
and GRID_MAX_CELLS in all (a 16 MB table): the grid costs in proportion to its box, the column searches in
proportion to the voxels, so the grid is the faster where the box is dense in voxels and its table small. A
LiDAR sweep's coarse levels qualify, its fine ones do not."""


class Workspace:
    """Scratch memory for the convolutions: the gathered rows and their products.

    A fresh tensor of tens of megabytes costs more to fault in than the gather that fills it (the CPU
    allocator hands large blocks back to the system when they are freed), so one buffer per thread, device and
    dtype is kept and grown when too small. A network keeps one across passes (:class:`MinkUNet` does); a
    cache without one gets its own. A taken region is only valid until the next ``take`` on that thread.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def take(self, like: torch.Tensor, *shapes: tuple[int, int]) -> list[torch.Tensor]:
        """Contiguous, uninitialised tensors of ``shapes`` with ``like``'s dtype and device, side by side."""
        sizes = [rows * cols for rows, cols in shapes]
        key = (threading.get_ident(), like.device, like.dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < sum(sizes):
            # A normal tensor even under inference_mode: one made there could not be written to afterwards
            # (the same network labels sweeps under inference_mode and trains outside it).
            with torch.inference_mode(False):
                buffer = self._buffers[key] = like.new_empty(sum(sizes))
        return [part.view(shape) for part, shape in zip(buffer[: sum(sizes)].split(sizes), shapes, strict=True)]


@dataclass
class CoordinateCache:
    """Coordinates, hash indices and kernel maps of one forward pass, keyed by tensor stride.

    Every tensor derived from one input shares this object: kernel maps are built once per
    (input stride, output stride, kernel size) and reused by every convolution of that shape, and the
    coordinates of each encoder level stay available so that upsampling restores them exactly.
    ``backend`` is ``"native"`` or ``"torchsparse"`` (see :mod:`clip_seg3d_ros.sparse.backend`).
    """

    backend: str = "native"
    coords: dict[int, torch.Tensor] = field(default_factory=dict)
    indices: dict[int, CoordinateIndex] = field(default_factory=dict)
    parents: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    kernel_maps: dict[tuple[int, int, int], KernelMap] = field(default_factory=dict)
    workspace: Workspace = field(default_factory=Workspace, repr=False)
    torchsparse_caches: object | None = None

    def index(self, stride: int) -> CoordinateIndex:
        if stride not in self.indices:
            self.indices[stride] = CoordinateIndex(self.coords[stride])
        return self.indices[stride]

    def coords_at(self, stride: int) -> torch.Tensor:
        """Coordinates at ``stride``, computed from the finest known level if not seen yet.

        Each fine voxel's row at the new level is kept (``parents``): it is the 2x2x2 stride-2 kernel map.
        """
        if stride not in self.coords:
            finer = max(s for s in self.coords if s < stride and stride % s == 0)
            self.coords[stride], self.parents[finer, stride] = downsample_coords(self.coords[finer], stride)
        return self.coords[stride]

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int) -> KernelMap:
        """Kernel map from the level at ``in_stride`` to the level at ``out_stride`` (>= in_stride), built once.

        Output row ``o`` at coordinate ``q`` receives input row ``i`` through offset ``d`` when the input
        coordinate is ``q + d * in_stride``, which is what dense cross-correlation does. The transposed
        convolution back to ``in_stride`` uses the same map with its pairs swapped.
        """
        key = (in_stride, out_stride, kernel_size)
        if key not in self.kernel_maps:
            out_coords = self.coords_at(out_stride)
            if in_stride == out_stride and kernel_size % 2 == 1:
                coords = self.coords[in_stride]
                box = None
                if coords.device.type == "cpu" and len(coords):  # the box's size is read back: free on the CPU
                    box = LevelBox(coords, in_stride, radius=kernel_size // 2)
                if box is not None and box.volume <= min(GRID_CELLS_PER_VOXEL * len(coords), GRID_MAX_CELLS):
                    kernel_map = grid_submanifold_map(box, kernel_size)
                else:
                    kernel_map = submanifold_map(self.index(in_stride), kernel_size, in_stride, box)
            elif out_stride == 2 * in_stride and kernel_size == 2 and (in_stride, out_stride) in self.parents:
                kernel_map = downsampling_map(self.coords[in_stride], in_stride, self.parents[in_stride, out_stride],
                                              len(out_coords))
            else:
                kernel_map = searched_map(self.index(in_stride), len(self.coords[in_stride]), out_coords,
                                          kernel_size, in_stride)
            self.kernel_maps[key] = kernel_map
        return self.kernel_maps[key]


@dataclass
class SparseTensor:
    """Features on active voxels.

    ``feats``: (N, C) float; ``coords``: (N, 4) int64 ``[batch, x, y, z]`` on the finest grid, multiples of
    ``stride``; ``cache``: shared with every tensor derived from the same input.
    """

    feats: torch.Tensor
    coords: torch.Tensor
    stride: int = 1
    cache: CoordinateCache = field(default_factory=CoordinateCache)

    def __post_init__(self) -> None:
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"{self.feats.shape[0]} feature rows for {self.coords.shape[0]} coordinates")
        if self.stride not in self.cache.coords:  # a new level: check once, then share
            check_coordinate_range(self.coords)
            self.cache.coords[self.stride] = self.coords

    def with_feats(self, feats: torch.Tensor) -> SparseTensor:
        """Same voxels, new features (the result of a pointwise layer)."""
        return SparseTensor(feats=feats, coords=self.coords, stride=self.stride, cache=self.cache)
