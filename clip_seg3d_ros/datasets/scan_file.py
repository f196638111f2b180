"""Reading LiDAR scan files: KITTI-style .bin (float32 x, y, z, intensity) and .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip_seg3d_ros.sample import DatasetError


def read_scan(path: str | Path, values_per_point: int = 4) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity; a .bin holds ``values_per_point`` float32s per point (5 in nuScenes),
    a .npy an (N, 3) or (N, >=4) array; a missing intensity becomes 0."""
    path = Path(path)
    if path.suffix == ".npy":
        try:  # never pickles: a scan is plain numbers (numpy's own message would advise loading it unsafely)
            points = np.load(path, allow_pickle=False)
        except (ValueError, EOFError) as error:
            raise DatasetError(f"{path}: not a numpy array of points (corrupt, or it holds Python objects)") from error
        if not np.issubdtype(points.dtype, np.number):
            raise DatasetError(f"{path}: points must be numbers, got dtype {points.dtype}")
        points = points.astype(np.float32)
    else:
        points = np.fromfile(path, dtype=np.float32)
        if points.size % values_per_point:
            raise DatasetError(f"{path}: {points.size} floats is not a whole number of {values_per_point}-value points")
        points = points.reshape(-1, values_per_point)
    if points.ndim != 2 or points.shape[1] < 3:
        raise DatasetError(f"{path}: expected (N, 3) or (N, 4) points, got {points.shape}")
    if points.shape[1] == 3:
        points = np.hstack([points, np.zeros((len(points), 1), dtype=np.float32)])
    return np.ascontiguousarray(points[:, :4])
