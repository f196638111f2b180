"""A small TF buffer without ROS: ``tf2_msgs/TFMessage`` in, 4x4 transforms between any two frames out.

Replay needs the LiDAR -> camera transform of each sweep from a bag's ``/tf_static`` (and ``/tf`` where the
recording has moving frames); a real robot's tree is often lidar <- base_link -> camera_link -> optical frame,
so lookups walk the tree and compose. Convention as in tf2: a TransformStamped with ``header.frame_id`` P and
``child_frame_id`` C holds the pose of C in P, i.e. ``p_P = T @ p_C``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable

import numpy as np
import transforms3d

from clip_seg3d_ros.geometry.transforms import invert_transform, transform_from_quaternion


class TransformError(LookupError):
    """No chain of transforms connects two frames."""


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def transform_to_matrix(transform) -> np.ndarray:
    """4x4 matrix of a ``geometry_msgs/Transform`` (translation x y z, rotation quaternion x y z w)."""
    rotation, translation = transform.rotation, transform.translation
    return transform_from_quaternion(
        [rotation.w, rotation.x, rotation.y, rotation.z], [translation.x, translation.y, translation.z]
    )


def matrix_to_translation_quaternion(matrix: np.ndarray) -> tuple[list[float], list[float]]:
    """(translation x y z, quaternion x y z w) of a rigid 4x4 matrix, to fill a ``geometry_msgs/Transform``."""
    w, x, y, z = transforms3d.quaternions.mat2quat(np.asarray(matrix, dtype=np.float64)[:3, :3])
    return [float(value) for value in matrix[:3, 3]], [float(x), float(y), float(z), float(w)]


class TransformBuffer:
    """Static transforms (the latest per child frame) and timed ones (all, looked up at the nearest stamp)."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._timed: dict[str, tuple[list[int], list[tuple[str, np.ndarray]]]] = {}

    def add(self, transforms: Iterable, static: bool) -> None:
        """Add the ``transforms`` (TransformStamped messages) of one TFMessage from /tf_static or /tf."""
        for transform in transforms:
            child, parent = str(transform.child_frame_id), str(transform.header.frame_id)
            matrix = transform_to_matrix(transform.transform)
            if static:
                self._static[child] = (parent, matrix)
                continue
            stamps, entries = self._timed.setdefault(child, ([], []))
            index = bisect.bisect_right(stamps, stamp_to_ns(transform.header.stamp))
            stamps.insert(index, stamp_to_ns(transform.header.stamp))
            entries.insert(index, (parent, matrix))

    @property
    def frames(self) -> set[str]:
        edges = [(child, parent) for child, (parent, _) in self._static.items()]
        edges += [(child, parent) for child, (_, entries) in self._timed.items() for parent, _ in entries]
        return {frame for edge in edges for frame in edge}

    def _edge(self, child: str, stamp_ns: int) -> tuple[str, np.ndarray] | None:
        """Parent and pose of ``child`` at ``stamp_ns``: the timed transform nearest it, except before the first
        timed stamp of a child that also has a static transform, where the static one holds (a camera recorded
        as static until it first moved)."""
        stamps, entries = self._timed.get(child, ([], []))
        if stamps and not (child in self._static and stamp_ns < stamps[0]):
            index = bisect.bisect_left(stamps, stamp_ns)
            nearest = min((i for i in (index - 1, index) if 0 <= i < len(stamps)),
                          key=lambda i: abs(stamps[i] - stamp_ns))
            return entries[nearest]
        return self._static.get(child)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> np.ndarray:
        """T with ``p_target = T @ p_source``, through the tree at ``stamp_ns``; TransformError if unconnected."""
        neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
        for child in set(self._static) | set(self._timed):
            parent, child_in_parent = self._edge(child, stamp_ns)
            neighbours.setdefault(child, []).append((parent, child_in_parent))  # p_parent = T @ p_child
            neighbours.setdefault(parent, []).append((child, invert_transform(child_in_parent)))
        # Breadth-first from the source; each frame's entry maps source points into that frame.
        reached = {source_frame: np.eye(4)}
        queue = deque([source_frame])
        while queue:
            frame = queue.popleft()
            if frame == target_frame:
                return reached[frame]
            for other, other_from_frame in neighbours.get(frame, []):
                if other not in reached:
                    reached[other] = other_from_frame @ reached[frame]
                    queue.append(other)
        raise TransformError(
            f"no transform from {source_frame!r} to {target_frame!r} (known frames: {sorted(self.frames)})"
        )
