"""Kernel maps: which input row feeds which output row through which kernel offset.

Three ways to build one, from cheapest to most general:

- a downsampling map (the UNet's 2x2x2 stride-2 conv): every input voxel lies in exactly one output voxel, at
  the offset given by the lowest bit of its cell coordinates. No search at all: the output voxels and each
  input's output row come from the ``unique(..., return_inverse=True)`` that made the coarser level;
- a submanifold map (same voxels in and out, odd kernel): the kernel is point-symmetric, so half of the
  offsets are looked up and the other half are the same pairs swapped; and a column of offsets (dx, dy, all
  dz) is found with one binary search (see :func:`submanifold_map`): 4 searches per voxel for 3x3x3, not 27.
  On the CPU the keys searched are the cell numbers of the level's bounding box (:class:`LevelBox`) when
  they fit 32 bits, and a level whose box is small (the coarse levels of a sweep) is instead looked up in a
  dense grid of its box (:func:`grid_submanifold_map`), with the same symmetry;
- any other map: every offset looked up in the sorted hash keys of the input voxels.

Each map is built with one host synchronisation on CUDA (the per-offset pair counts that size the matmuls);
making a coarser level costs one more (``unique``). A map is built once per pass and level and serves the
convolution, its transposed twin and both backwards.
"""

from __future__ import annotations

import functools
import math
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
    _segment_rows: tuple | None = field(default=None, repr=False, compare=False)
    _padded_layout: tuple | None = field(default=None, repr=False, compare=False)
    _segment_ends: torch.Tensor | None = field(default=None, repr=False, compare=False)
    segments: list[tuple[int, int, int]] = field(init=False, repr=False, compare=False)
    """(offset, start, end) of each non-empty segment."""

    def __post_init__(self) -> None:
        self.segments = [(offset, self.starts[j], self.starts[j + 1]) for j, offset in enumerate(self.offsets)
                         if self.starts[j + 1] > self.starts[j]]

    def segment_rows(self) -> tuple[list[int], list[int], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Offsets, sizes, input rows and output rows of the non-empty segments; split once per map, so that a
        convolution's loop indexes no tensor."""
        if self._segment_rows is None:
            sizes = [end - start for _, start, end in self.segments]
            used = sum(sizes)  # the non-empty segments tile the pairs from 0
            self._segment_rows = ([offset for offset, _, _ in self.segments], sizes,
                                  self.rows_in[:used].split(sizes), self.rows_out[:used].split(sizes))
        return self._segment_rows

    def padded_layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pairs laid out for one batched matmul over all offsets: (segments, longest segment) input rows,
        padded with row 0; the segments' offsets (segments,); and, in that layout, the position of each pair in
        :meth:`by_output` order. Built once per map, with no host sync."""
        if self._padded_layout is None:
            offsets, sizes, _, _ = self.segment_rows()
            device, longest, used = self.rows_in.device, max(sizes), sum(sizes)
            segment = torch.repeat_interleave(torch.arange(len(sizes), device=device), _on_device(sizes, device),
                                              output_size=used)
            segment_starts = _on_device([start for _, start, _ in self.segments], device)
            position = segment * longest + torch.arange(used, device=device) - segment_starts[segment]
            rows = torch.zeros(len(sizes) * longest, dtype=self.rows_in.dtype, device=device)
            rows[position] = self.rows_in[:used]
            self._padded_layout = (rows.view(len(sizes), longest), _on_device(offsets, device),
                                   position[self.by_output()[0]])
        return self._padded_layout

    def segment_ends(self) -> torch.Tensor:
        """(segments,) int32 end of each non-empty segment, as ``grouped_mm`` takes its groups."""
        if self._segment_ends is None:
            self._segment_ends = _on_device([end for _, _, end in self.segments], self.rows_in.device, torch.int32)
        return self._segment_ends

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
        start of each output's run). Built once per map.

        A counting sort, not a sort: every map here gives an output at most one pair per offset, so an output's
        pairs are placed segment after segment, each segment moving its outputs' write positions on by one.
        The order is the one a stable sort of ``rows_out`` gives, in O(pairs) and without a host sync.
        """
        if self._by_output is None:
            rows_out = self.rows_out
            # Not bincount: on CUDA it reads the maximum back to the host.
            counts = torch.zeros(self.num_outputs, dtype=torch.long, device=rows_out.device).index_add_(
                0, rows_out, torch.ones_like(rows_out))
            starts = counts.cumsum(0) - counts
            next_free, destination = starts.clone(), torch.empty_like(rows_out)
            for _, start, end in self.segments:
                outputs = rows_out[start:end]
                torch.index_select(next_free, 0, outputs, out=destination[start:end])
                next_free.index_add_(0, outputs, torch.ones_like(outputs))
            order = torch.empty_like(rows_out)
            order[destination] = torch.arange(len(rows_out), device=rows_out.device)
            self._by_output = (order, starts)
        return self._by_output


def _on_device(values: list[int], device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """A few host integers as a tensor on ``device``. Not ``torch.tensor(values, device=...)``: on CUDA its blocking
    copy waits for the stream, a host sync; a non-blocking copy from pageable memory is staged and returns."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _starts(counts: list[int]) -> list[int]:
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    return starts


def _offset_keys(offsets: torch.Tensor) -> torch.Tensor:
    """Key increments (:func:`offset_key`) of (K, 3) spatial offsets."""
    return _on_device([offset_key(*offset) for offset in offsets.tolist()], offsets.device)


def _found_pairs(input_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """From (K, N_out) looked-up input rows (-1: none), the pairs grouped by offset and their counts.

    The counts are the one transfer to the host; knowing their sum, ``nonzero_static`` needs no second one.
    """
    found = input_rows >= 0
    counts = torch.count_nonzero(found, dim=1).tolist()
    flat = torch.nonzero_static(found.reshape(-1), size=sum(counts)).squeeze(1)
    return torch.index_select(input_rows.reshape(-1), 0, flat), flat % input_rows.shape[1], counts


def searched_map(in_index: CoordinateIndex, num_inputs: int, out_coords: torch.Tensor, kernel_size: int,
                 in_stride: int) -> KernelMap:
    """Output row ``o`` at coordinate ``q`` receives input row ``i`` through offset ``d`` when the input
    coordinate is ``q + d * in_stride``, which is what dense cross-correlation does."""
    offset_keys = _offset_keys(kernel_offsets(kernel_size) * in_stride).to(out_coords.device)
    neighbour_keys = offset_keys.unsqueeze(1) + hash_coords(out_coords).unsqueeze(0)  # (K, N_out)
    rows_in, rows_out, counts = _found_pairs(in_index.lookup_keys(neighbour_keys))
    return KernelMap(rows_in, rows_out, list(range(len(offset_keys))), _starts(counts), num_inputs, len(out_coords))


class LevelBox:
    """The bounding box of one level's voxels in cells of its stride, padded by ``radius`` cells on every spatial
    side so that no neighbour within the radius leaves the box or wraps into the next row; ``cells`` numbers
    each voxel's cell row-major over [batch, x, y, z]. Cell numbers grow in the hash keys' order (batch, x, y,
    z): key-sorted coordinates have sorted cells. Finding the box reads it back: meant for the CPU."""

    def __init__(self, coords: torch.Tensor, stride: int, radius: int) -> None:
        low, high = (corner.tolist() for corner in torch.aminmax(coords, dim=0))
        # Coordinates are multiples of the stride: dividing the corners is exact. No padding across batch items:
        # no offset goes there.
        self.low = [low[0]] + [value // stride - radius for value in low[1:]]
        high = [high[0]] + [value // stride + radius for value in high[1:]]
        self.extent = [top + 1 - bottom for top, bottom in zip(high, self.low, strict=True)]
        self.volume = math.prod(self.extent)
        self._coords, self._stride = coords, stride

    @functools.cached_property
    def cells(self) -> torch.Tensor:
        device, stride = self._coords.device, self._stride
        grid = torch.div(self._coords, _on_device([1, stride, stride, stride], device), rounding_mode="floor")
        grid -= _on_device(self.low, device)
        extent = self.extent
        return ((grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]) * extent[3] + grid[:, 3]

    def step(self, dx: int, dy: int, dz: int) -> int:
        """Cell-number increment of a move by (dx, dy, dz) cells."""
        return (dx * self.extent[2] + dy) * self.extent[3] + dz


def submanifold_map(index: CoordinateIndex, kernel_size: int, stride: int, box: LevelBox | None = None) -> KernelMap:
    """The map of an odd kernel from the voxel set ``index`` holds (coordinates multiples of ``stride``) to itself.

    Two savings over searching every offset. Symmetry: offsets ``k`` and ``K - 1 - k`` are opposite (see
    :func:`kernel_offsets`), so the pairs of one half are those of the other with input and output swapped,
    and the centre is the identity. Columns: z is the lowest digit of a key, so the ``kernel_size`` offsets
    (dx, dy, dz) of one column (dx, dy) have consecutive keys, and the voxels among them are the sorted keys
    right after one binary search for the column's first. So half of the (dx, dy) columns are searched, and
    the centre column's dz < 0 are the sorted keys just before each voxel's own: 4 binary searches per voxel
    for a 3x3x3 kernel instead of 27. The keys searched are the 64-bit hash keys, or with ``box`` (the level's
    :class:`LevelBox`, padded by the kernel radius) its cell numbers as 32-bit keys where the box has fewer
    than 2^31 cells: half the bytes for every search to read, so faster searches.
    """
    k, r = kernel_size, kernel_size // 2
    if box is not None and box.volume < 2**31:
        keys = (box.cells if index.order is None else box.cells[index.order]).int()
        step = box.step
    else:  # looked up in sorted order; row = index.rows(position)
        keys = index.sorted_keys
        step = functools.partial(_strided_offset_key, stride)
    n = len(keys)
    last = max(n - 1, 0)
    columns = range((k * k - 1) // 2)  # the (dx, dy) before the centre column, in offset order
    column_keys = [step(c % k - r, c // k - r, -r) for c in columns]
    bases = _on_device(column_keys, keys.device, keys.dtype).unsqueeze(1) + keys.unsqueeze(0)  # (columns, n)
    first = torch.searchsorted(keys, bases, out_int32=True)
    candidates = [(first + m).clamp_(max=last) for m in range(k)]
    candidate_keys = [keys.index_select(0, candidate.view(-1)).view_as(candidate) for candidate in candidates]
    positions, looked_up = [], []  # (n,) sorted position of each offset's voxel, -1 where none
    for j in range(k):
        # The voxels of the column below dz = j - r take the candidates before it: it is one of the first j + 1.
        target = bases + step(0, 0, j)
        found = torch.full_like(first, -1)
        for m in range(j + 1):
            found = torch.where(candidate_keys[m] == target, candidates[m], found)
        positions.append(found)
        looked_up += [j * k * k + c for c in range(len(columns))]
    own = torch.arange(n, dtype=torch.int32, device=keys.device)
    for d in range(1, r + 1):  # centre column, dz = -d: one of the d sorted keys before the voxel's own
        found = torch.full_like(own, -1)
        for back in range(1, d + 1):
            candidate = (own - back).clamp_(min=0)
            found = torch.where(keys.index_select(0, candidate) == keys - step(0, 0, d), candidate, found)
        positions.append(found.unsqueeze(0))
        looked_up.append((r - d) * k * k + len(columns))
    found_in, found_out, counts = _found_pairs(torch.cat(positions))
    rows_in, rows_out = index.rows(found_in), index.rows(found_out)
    volume = k**3
    return KernelMap(rows_in=torch.cat([rows_in, rows_out]), rows_out=torch.cat([rows_out, rows_in]),
                     offsets=looked_up + [volume - 1 - o for o in looked_up], starts=_starts(counts + counts),
                     num_inputs=n, num_outputs=n, identity_offset=volume // 2)


def _strided_offset_key(stride: int, dx: int, dy: int, dz: int) -> int:
    return offset_key(dx * stride, dy * stride, dz * stride)


def grid_submanifold_map(box: LevelBox, kernel_size: int) -> KernelMap:
    """The map of :func:`submanifold_map` by a dense grid lookup over ``box`` (padded by the kernel radius).

    For the coarse levels of a sweep, whose bounding box is a few cells per voxel: a table over the box holds
    each voxel's row, and each offset is one gather from it. A dozen array operations instead of the column
    searches, whose fixed cost dominates below a few thousand voxels.
    """
    k = kernel_size
    cell, n = box.cells, len(box.cells)
    table = torch.full((box.volume,), -1, dtype=torch.int32, device=cell.device)
    table.index_put_((cell,), torch.arange(n, dtype=torch.int32, device=cell.device))
    half = k**3 // 2  # the offsets before the centre; the ones after it are their opposites
    steps = [box.step(dx, dy, dz) for dx, dy, dz in _kernel_offset_list(k)[:half]]
    neighbours = _on_device(steps, cell.device).unsqueeze(1) + cell.unsqueeze(0)
    rows_in, rows_out, counts = _found_pairs(torch.index_select(table, 0, neighbours.view(-1)).view(half, n))
    rows_in = rows_in.long()
    return KernelMap(rows_in=torch.cat([rows_in, rows_out]), rows_out=torch.cat([rows_out, rows_in]),
                     offsets=list(range(half)) + [k**3 - 1 - o for o in range(half)], starts=_starts(counts + counts),
                     num_inputs=n, num_outputs=n, identity_offset=half)


@functools.cache
def _kernel_offset_list(kernel_size: int) -> tuple[tuple[int, int, int], ...]:
    return tuple(tuple(offset) for offset in kernel_offsets(kernel_size).tolist())


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
