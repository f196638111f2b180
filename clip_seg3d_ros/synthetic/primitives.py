"""The solids a synthetic scene is made of: boxes, vertical cylinders and ellipsoids, each yawed about z.

Every primitive has a local frame: its centre, then a rotation by ``yaw`` about the z axis. In that frame a
box is ``|x| <= hx, |y| <= hy, |z| <= hz``, a cylinder ``x^2 + y^2 <= r^2, |z| <= hz`` (half size (r, r, hz)) and
an ellipsoid ``(x/hx)^2 + (y/hy)^2 + (z/hz)^2 <= 1``. So the half sizes and yaw also describe each primitive's
oriented bounding box, which is all the sensors need to cull rays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2


@dataclass(frozen=True)
class Part:
    """One primitive of an object, axis-aligned in the object's frame (x along its length, z up from the ground).

    The object's yaw turns all its parts together when it is placed.
    """

    kind: int
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    label: int


@dataclass
class Primitives:
    """K primitives as arrays: ``kind`` (K,), ``center`` (K, 3), ``half_size`` (K, 3), ``yaw`` (K,) radians,
    ``label`` (K,) class index, ``instance`` (K,) object id (the parts of one object share it)."""

    kind: np.ndarray
    center: np.ndarray
    half_size: np.ndarray
    yaw: np.ndarray
    label: np.ndarray
    instance: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def to_local(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate (K, 3) world-frame vectors, one per primitive, into the primitives' frames (no translation)."""
        cos, sin = np.cos(self.yaw), np.sin(self.yaw)
        x, y = vectors[:, 0], vectors[:, 1]
        return np.stack([cos * x + sin * y, -sin * x + cos * y, vectors[:, 2]], axis=1)

    def corners(self) -> np.ndarray:
        """(K, 8, 3) corners of the oriented bounding boxes; corner i has sign bit 0, 1, 2 of i on x, y, z."""
        signs = np.array([[1 if i & bit else -1 for bit in (1, 2, 4)] for i in range(8)], dtype=np.float64)
        local = signs[None] * self.half_size[:, None, :]
        cos, sin = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = cos * local[..., 0] - sin * local[..., 1]
        y = sin * local[..., 0] + cos * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]


class PrimitiveBuilder:
    """Collects objects made of :class:`Part` s and turns them into :class:`Primitives`."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, float, float, float, float, float, float, float, int, int]] = []
        self._instances = 0

    def add(self, parts: list[Part], x: float, y: float, ground_z: float, yaw: float) -> int:
        """Place an object whose frame origin is (x, y, ground_z), turned by ``yaw``; returns its instance id."""
        instance = self._instances
        self._instances += 1
        cos, sin = np.cos(yaw), np.sin(yaw)
        for part in parts:
            px, py, pz = part.center
            self._rows.append((
                part.kind, x + cos * px - sin * py, y + sin * px + cos * py, ground_z + pz,
                *part.half_size, yaw, part.label, instance,
            ))
        return instance

    def build(self) -> Primitives:
        rows = np.array(self._rows, dtype=np.float64).reshape(-1, 10)
        return Primitives(
            kind=rows[:, 0].astype(np.int64),
            center=rows[:, 1:4],
            half_size=rows[:, 4:7],
            yaw=rows[:, 7],
            label=rows[:, 8].astype(np.int64),
            instance=rows[:, 9].astype(np.int64),
        )
