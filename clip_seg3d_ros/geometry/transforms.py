"""Rigid transforms as 4x4 matrices, built from quaternions with transforms3d."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import transforms3d


def transform_from_quaternion(quaternion_wxyz: Sequence[float], translation_xyz: Sequence[float]) -> np.ndarray:
    """4x4 matrix [[R, t], [0, 1]] from a (w, x, y, z) quaternion (normalised here) and a translation."""
    quaternion = np.asarray(quaternion_wxyz, dtype=np.float64)
    norm = np.linalg.norm(quaternion)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"invalid quaternion {quaternion_wxyz}")
    return transforms3d.affines.compose(
        np.asarray(translation_xyz, dtype=np.float64), transforms3d.quaternions.quat2mat(quaternion / norm), np.ones(3)
    )


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t), exact for rotations."""
    rotation, translation = transform[:3, :3], transform[:3, 3]
    inverse = np.eye(4)
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ translation
    return inverse
