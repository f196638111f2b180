"""Kernel maps: which input row feeds which output row through which kernel offset.

Three ways to build one, from cheapest to most general:

- a downsampling map (the UNet's 2x2x2 stride-2 conv): every input voxel lies in exactly one output voxel, at
  the offset given by the lowest bit of its cell coordinates. No search at all: the output voxels and each
  input's output row come from the ``unique(..., return_inverse=True)`` that made the coarser level;
- a submanifold map (same voxels in and out, odd kernel): the kernel is point-symmetric, so half of the
  offsets are looked up and the other half are the same pairs swapped; and a column of offsets (dx, dy, all
  dz) is found with one binary search (see :func:`submanifold_map`): 4 searches per voxel for 3x3x3, not 27;
- any other map: every offset looked up in the sorted hash keys of the input voxels.

Each map is built with one host synchronisation on CUDA (the per-offset pair counts that size the matmuls);
making a coarser level costs one more (``unique``). A map is built once per pass and level and serves the
convolution, its transposed twin and both backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clip_seg3d_ros.sparse.coords import CoordinateIndex, hash_coords, kernel_offsets, offset_key


@dataclass
class KernelMap:
    """Pairs (input row, output row) of every kernel offset, concatenated and grouped by offset.

    Segment ``j`` is ``rows_in[starts[j]:starts[j + 1]]`` / ``rows_out[...]`` and goes through the weight of
    offset ``offsets[j]`` (an index into :func:`kernel_offsets`); each offset appears at most once.
    ``identity_offset`` names an offset whose pairs are exactly (i, i) for every row (the centre of a
    submanifold kernel): it is not among the segments, the convolution uses a plain matmul for it.
    """

    rows_in: torch.Tensor
    rows_out: torch.Tensor
    offsets: list[int]
    starts: list[int]
    num_inputs: int
    num_outputs: int
    identity_offset: int | None = None
    _transposed: KernelMap | None = field(default=None, repr=False, compare=False)
    _by_output: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    segments: list[tuple[int, int, int]] = field(init=False, repr=False, compare=False)
    """(offset, start, end) of each non-empty segment."""

    def __post_init__(self) -> None:
        self.segments = [(offset, self.starts[j], self.starts[j + 1]) for j, offset in enumerate(self.offsets)
                         if self.starts[j + 1] > self.starts[j]]

    def pairs(self, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input rows, output rows) through ``offset``; empty when it has none (and for the identity offset)."""
        if offset in self.offsets:
            j = self.offsets.index(offset)
            start, end = self.starts[j], self.starts[j + 1]
            return self.rows_in[start:end], self.rows_out[start:end]
        return self.rows_in[:0], self.rows_out[:0]

    def transposed(self) -> KernelMap:
        """The map of the transposed convolution (and of the convolution's input gradient): pairs swapped."""
        if self._transposed is None:
            self._transposed = KernelMap(rows_in=self.rows_out, rows_out=self.rows_in, offsets=self.offsets,
                                         starts=self.starts, num_inputs=self.num_outputs,
                                         num_outputs=self.num_inputs, identity_offset=self.identity_offset,
                                         _transposed=self)
        return self._transposed

    def by_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs ordered by output row, as ``embedding_bag`` takes them: (pair indices, (num_outputs,)
        start of each output's run). Built once per map."""
        if self._by_output is None:
            order = torch.argsort(self.rows_out, stable=True)
            # Not bincount: on CUDA it reads the maximum back to the host.
            counts = torch.zeros(self.num_outputs, dtype=torch.long, device=self.rows_out.device).index_add_(
                0, self.rows_out, torch.ones_like(self.rows_out))
            self._by_output = (order, counts.cumsum(0) - counts)
        return self._by_output


def _starts(counts: list[int]) -> list[int]:
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    return starts


def _offset_keys(offsets: torch.Tensor) -> torch.Tensor:
    """Key increments (:func:`offset_key`) of (K, 3) spatial offsets."""
    return torch.tensor([offset_key(*offset) for offset in offsets.tolist()], device=offsets.device)


def _found_pairs(input_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """From (K, N_out) looked-up input rows (-1: none), the pairs grouped by offset and their counts.

    The counts are the one transfer to the host; knowing their sum, ``nonzero_static`` needs no second one.
    """
    found = input_rows >= 0
    counts = torch.count_nonzero(found, dim=1).tolist()
    flat = torch.nonzero_static(found.reshape(-1), size=sum(counts)).squeeze(1)
    return input_rows.reshape(-1)[flat], flat % input_rows.shape[1], counts


def searched_map(in_index: CoordinateIndex, num_inputs: int, out_coords: torch.Tensor, kernel_size: int,
                 in_stride: int) -> KernelMap:
    """Output row ``o`` at coordinate ``q`` receives input row ``i`` through offset ``d`` when the input
    coordinate is ``q + d * in_stride``, which is what dense cross-correlation does."""
    offset_keys = _offset_keys(kernel_offsets(kernel_size) * in_stride).to(out_coords.device)
    neighbour_keys = offset_keys.unsqueeze(1) + hash_coords(out_coords).unsqueeze(0)  # (K, N_out)
    rows_in, rows_out, counts = _found_pairs(in_index.lookup_keys(neighbour_keys))
    return KernelMap(rows_in, rows_out, list(range(len(offset_keys))), _starts(counts), num_inputs, len(out_coords))


def submanifold_map(index: CoordinateIndex, kernel_size: int, stride: int) -> KernelMap:
    """The map of an odd kernel from the voxel set ``index`` holds (coordinates multiples of ``stride``) to itself.

    Two savings over searching every offset. Symmetry: offsets ``k`` and ``K - 1 - k`` are opposite (see
    :func:`kernel_offsets`), so the pairs of one half are those of the other with input and output swapped,
    and the centre is the identity. Columns: z fills the lowest bits of a key, so the ``kernel_size`` offsets
    (dx, dy, dz) of one column (dx, dy) have consecutive keys at this stride, and the voxels among them are
    the sorted keys right after one binary search for the column's first. So half of the (dx, dy) columns
    are searched, and the centre column's dz < 0 are the sorted keys just before each voxel's own: 4 binary
    searches per voxel for a 3x3x3 kernel instead of 27.
    """
    k, r = kernel_size, kernel_size // 2
    keys = index.sorted_keys  # looked up in sorted order; row = index.rows(position)
    n = len(keys)
    last = max(n - 1, 0)
    columns = range((k * k - 1) // 2)  # the (dx, dy) before the centre column, in offset order
    column_keys = [offset_key((c % k - r) * stride, (c // k - r) * stride, -r * stride) for c in columns]
    bases = torch.tensor(column_keys, device=keys.device).unsqueeze(1) + keys.unsqueeze(0)  # (columns, n): dz = -r
    first = torch.searchsorted(keys, bases, out_int32=True)
    candidates = [(first + m).clamp_(max=last) for m in range(k)]
    candidate_keys = [keys[candidate] for candidate in candidates]
    positions, looked_up = [], []  # (n,) sorted position of each offset's voxel, -1 where none
    for j in range(k):
        # The voxels of the column below dz = j - r take the candidates before it: it is one of the first j + 1.
        target = bases + j * stride
        found = torch.full_like(first, -1)
        for m in range(j + 1):
            found = torch.where(candidate_keys[m] == target, candidates[m], found)
        positions += list(found)
        looked_up += [j * k * k + c for c in range(len(columns))]
    own = torch.arange(n, dtype=torch.int32, device=keys.device)
    for d in range(1, r + 1):  # centre column, dz = -d: one of the d sorted keys before the voxel's own
        found = torch.full_like(own, -1)
        for back in range(1, d + 1):
            candidate = (own - back).clamp_(min=0)
            found = torch.where(keys[candidate] == keys - d * stride, candidate, found)
        positions.append(found)
        looked_up.append((r - d) * k * k + len(columns))
    found_in, found_out, counts = _found_pairs(torch.stack(positions))
    rows_in, rows_out = index.rows(found_in), index.rows(found_out)
    volume = k**3
    return KernelMap(rows_in=torch.cat([rows_in, rows_out]), rows_out=torch.cat([rows_out, rows_in]),
                     offsets=looked_up + [volume - 1 - o for o in looked_up], starts=_starts(counts + counts),
                     num_inputs=n, num_outputs=n, identity_offset=volume // 2)


def downsampling_map(coords: torch.Tensor, stride: int, parent: torch.Tensor, num_outputs: int) -> KernelMap:
    """The map of the 2x2x2 stride-2 convolution from ``coords`` (at ``stride``) to the next level, without search.

    ``parent`` (N,) is each input's row at the coarser level (:func:`downsample_coords`'s inverse). The input
    lies in its parent's cell at the offset given by the lowest bit of each cell coordinate, which with z
    varying fastest is exactly its index in :func:`kernel_offsets` for a kernel of size 2.
    """
    bits = torch.div(coords[:, 1:], stride, rounding_mode="floor") & 1
    offset = bits[:, 0] * 4 + bits[:, 1] * 2 + bits[:, 2]
    # Grouped by offset; the stable order keeps the inputs key-sorted inside each group.
    order = torch.argsort(offset, stable=True)
    counts = torch.zeros(8, dtype=torch.long, device=coords.device).index_add_(0, offset, torch.ones_like(offset))
    kernel_map = KernelMap(rows_in=order, rows_out=parent[order], offsets=list(range(8)),
                           starts=_starts(counts.tolist()), num_inputs=len(coords), num_outputs=num_outputs)
    # The transposed convolution gives every fine voxel exactly one pair: ordered by output, the pairs are the
    # inverse permutation of ``order``, which a scatter finds without the sort of by_output().
    pair_of_input = torch.empty_like(order)
    pair_of_input[order] = torch.arange(len(order), device=order.device)
    kernel_map.transposed()._by_output = (pair_of_input, torch.arange(len(order), device=order.device))
    return kernel_map
