"""The sparse voxel tensor and the coordinate cache shared by every tensor of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clip_seg3d_ros.sparse.coords import (
    CoordinateIndex,
    check_coordinate_range,
    downsample_coords,
    hash_coords,
    kernel_offsets,
)


@dataclass
class KernelMap:
    """Which input row feeds which output row through each kernel offset.

    ``pairs[k] = (input_rows, output_rows)`` for offset ``k`` in :func:`kernel_offsets` order.
    ``identity_offset`` names an offset whose pairs are exactly (i, i) for every row (the centre of a
    submanifold kernel); the convolution uses a plain matmul there instead of gather/scatter.
    """

    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    num_inputs: int
    num_outputs: int
    identity_offset: int | None = None
    _flat: tuple | None = field(default=None, repr=False, compare=False)

    def flattened(self) -> tuple[list[int], list[int], torch.Tensor, torch.Tensor]:
        """The non-identity offsets' pairs concatenated: (offsets, pair counts, input rows, output rows).

        One gather and one scatter-add over all offsets instead of one per offset: autograd then allocates
        one input-sized gradient buffer per convolution, not one per offset. Computed once per map.
        """
        if self._flat is None:
            kept = [k for k, (rows_in, _) in enumerate(self.pairs) if k != self.identity_offset and rows_in.numel()]
            rows_in = [self.pairs[k][0] for k in kept]
            rows_out = [self.pairs[k][1] for k in kept]
            device = self.pairs[0][0].device if self.pairs else None
            empty = torch.empty(0, dtype=torch.long, device=device)
            self._flat = (kept, [len(rows) for rows in rows_in], torch.cat(rows_in) if kept else empty,
                          torch.cat(rows_out) if kept else empty)
        return self._flat

    def transposed(self) -> KernelMap:
        """The map of the transposed convolution: every pair with its ends swapped."""
        return KernelMap(
            pairs=[(rows_out, rows_in) for rows_in, rows_out in self.pairs],
            num_inputs=self.num_outputs,
            num_outputs=self.num_inputs,
            identity_offset=self.identity_offset,
        )


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
    kernel_maps: dict[tuple[int, int, int], KernelMap] = field(default_factory=dict)
    torchsparse_caches: object | None = None

    def index(self, stride: int) -> CoordinateIndex:
        if stride not in self.indices:
            self.indices[stride] = CoordinateIndex(self.coords[stride])
        return self.indices[stride]

    def coords_at(self, stride: int) -> torch.Tensor:
        """Coordinates at ``stride``, computed from the finest known level if not seen yet."""
        if stride not in self.coords:
            finer = max(s for s in self.coords if s < stride and stride % s == 0)
            self.coords[stride] = downsample_coords(self.coords[finer], stride)
        return self.coords[stride]

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int) -> KernelMap:
        """Kernel map from the level at ``in_stride`` to the level at ``out_stride`` (>= in_stride).

        Output row ``o`` at coordinate ``q`` receives input row ``i`` through offset ``d`` when the input
        coordinate is ``q + d * in_stride``, which is what dense cross-correlation does.
        """
        key = (in_stride, out_stride, kernel_size)
        if key not in self.kernel_maps:
            self.kernel_maps[key] = self._build_kernel_map(in_stride, out_stride, kernel_size)
        return self.kernel_maps[key]

    def _build_kernel_map(self, in_stride: int, out_stride: int, kernel_size: int) -> KernelMap:
        out_coords = self.coords_at(out_stride)
        in_index = self.index(in_stride)
        offsets = kernel_offsets(kernel_size, out_coords.device) * in_stride
        # (outputs, offsets) keys of every candidate neighbour, looked up in one vectorised call.
        neighbour_keys = hash_coords(out_coords).unsqueeze(1) + _offset_keys(offsets).unsqueeze(0)
        input_rows = in_index.lookup_keys(neighbour_keys.reshape(-1)).view(len(out_coords), len(offsets))
        pairs = []
        for k in range(len(offsets)):
            out_rows = torch.nonzero(input_rows[:, k] >= 0).squeeze(1)
            pairs.append((input_rows[out_rows, k], out_rows))
        identity = None
        if in_stride == out_stride and kernel_size % 2 == 1:
            identity = len(offsets) // 2  # the zero offset sits in the middle of an odd kernel
        num_inputs = len(self.coords[in_stride])
        return KernelMap(pairs=pairs, num_inputs=num_inputs, num_outputs=len(out_coords), identity_offset=identity)


def _offset_keys(offsets: torch.Tensor) -> torch.Tensor:
    """Key increments of spatial offsets: hash(c + d) == hash(c) + (hash(d) - hash(0)) while nothing carries."""
    with_batch = torch.cat([torch.zeros_like(offsets[:, :1]), offsets], dim=1)
    return hash_coords(with_batch) - hash_coords(torch.zeros_like(with_batch[:1]))


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
