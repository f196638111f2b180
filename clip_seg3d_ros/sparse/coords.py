"""Integer voxel coordinates: hashing, lookup and kernel offsets.

Coordinates are int64 rows ``[batch, x, y, z]`` on the finest voxel grid. A tensor at stride ``s`` only
holds coordinates that are multiples of ``s``, as in MinkowskiEngine and torchsparse, so every level of a
UNet addresses the same grid and coordinates can be compared across levels.
"""

from __future__ import annotations

import torch

# Each spatial axis gets a 16-bit field of the 64-bit key and the batch index the 15 bits above them.
# Coordinates are limited to half of a field so that a neighbour a few (strided) voxels away can
# never carry into the next field and alias another voxel.
_FIELD_BITS = 16
_FIELD_OFFSET = 1 << (_FIELD_BITS - 1)
COORD_LIMIT = 1 << (_FIELD_BITS - 2)
"""Voxel coordinates must lie in [-COORD_LIMIT, COORD_LIMIT): about +-820 m at 5 cm voxels."""
MAX_BATCH = (1 << 15) - 1


def check_coordinate_range(coords: torch.Tensor) -> None:
    """Raise ValueError when coordinates leave the range that hashing supports."""
    if coords.numel() == 0:
        return
    spatial = coords[:, 1:]
    low, high = int(spatial.min()), int(spatial.max())
    if low < -COORD_LIMIT or high >= COORD_LIMIT:
        raise ValueError(
            f"voxel coordinates span [{low}, {high}], outside the supported [-{COORD_LIMIT}, {COORD_LIMIT}); "
            "crop the cloud or use a larger voxel size"
        )
    batch_low, batch_high = int(coords[:, 0].min()), int(coords[:, 0].max())
    if batch_low < 0 or batch_high > MAX_BATCH:
        raise ValueError(f"batch indices span [{batch_low}, {batch_high}], outside [0, {MAX_BATCH}]")


def hash_coords(coords: torch.Tensor) -> torch.Tensor:
    """Map (N, 4) integer coordinates [batch, x, y, z] to (N,) unique int64 keys.

    Keys sort in batch-major, then x, y, z order, so sorting keys sorts coordinates.
    """
    c = coords.long()
    key = c[:, 0]
    for axis in range(1, 4):
        key = (key << _FIELD_BITS) | (c[:, axis] + _FIELD_OFFSET)
    return key


def offset_key(dx: int, dy: int, dz: int) -> int:
    """The key increment of a spatial offset: hash(c + d) == hash(c) + offset_key(d) while nothing carries,
    which the coordinate limit guarantees for offsets of a few (strided) voxels."""
    return (dx << (2 * _FIELD_BITS)) + (dy << _FIELD_BITS) + dz


def unhash_coords(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hash_coords`: (N,) keys -> (N, 4) int64 coordinates."""
    mask = (1 << _FIELD_BITS) - 1
    z = (keys & mask) - _FIELD_OFFSET
    y = ((keys >> _FIELD_BITS) & mask) - _FIELD_OFFSET
    x = ((keys >> (2 * _FIELD_BITS)) & mask) - _FIELD_OFFSET
    batch = keys >> (3 * _FIELD_BITS)
    return torch.stack([batch, x, y, z], dim=1)


class CoordinateIndex:
    """Sorted hash keys of one coordinate set, answering "which row holds this coordinate?"."""

    def __init__(self, coords: torch.Tensor) -> None:
        keys = hash_coords(coords)
        # Voxelization and downsampling give key-sorted coordinates: on the CPU, where checking costs no
        # device synchronisation, such a set is used as it is (its sorted position is its row).
        if keys.device.type == "cpu" and bool((keys[1:] > keys[:-1]).all()):
            self.sorted_keys, self.order = keys, None
        else:
            self.sorted_keys, self.order = torch.sort(keys)

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """The rows (int64) of the coordinates at ``positions`` in sorted order."""
        return positions.long() if self.order is None else self.order[positions]

    def lookup_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Row index of each key in the indexed set, or -1 where absent."""
        if self.sorted_keys.numel() == 0:
            return torch.full_like(keys, -1)
        position = torch.searchsorted(self.sorted_keys, keys).clamp_(max=self.sorted_keys.numel() - 1)
        found = self.sorted_keys[position] == keys
        return torch.where(found, self.rows(position), torch.full_like(position, -1))

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        return self.lookup_keys(hash_coords(coords))


def kernel_offsets(kernel_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(K, 3) int64 offsets of a cubic kernel, in torchsparse's (and MinkowskiEngine's) weight order.

    Per axis the offsets run from -((k - 1) // 2) to k // 2: centred for odd k, {0, 1} for k = 2. With an odd
    kernel volume x varies fastest, with an even one z does; matching this order is what lets a weight
    tensor be shared with torchsparse.
    """
    axis = torch.arange(-((kernel_size - 1) // 2), kernel_size // 2 + 1, device=device)
    if kernel_size % 2 == 1:
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    else:
        x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], dim=1)


def downsample_coords(coords: torch.Tensor, new_stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of a coarser level: floor to multiples of ``new_stride``, unique, key-sorted; and (N,) the row
    of each input coordinate among them."""
    if new_stride & (new_stride - 1) == 0:  # a power of two: clearing the low bits floors (two's complement)
        coarse = coords & torch.tensor([-1, -new_stride, -new_stride, -new_stride], device=coords.device)
    else:
        coarse = coords.clone()
        coarse[:, 1:] = torch.div(coords[:, 1:], new_stride, rounding_mode="floor") * new_stride
    keys, parent = torch.unique(hash_coords(coarse), return_inverse=True)
    return unhash_coords(keys), parent
