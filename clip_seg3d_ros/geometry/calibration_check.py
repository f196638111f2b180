"""How well a LiDAR-to-camera calibration fits a scene: the sweep's depth edges against the image's edges.

The measure follows Levinson & Thrun ("Automatic online calibration of cameras and lasers", RSS 2013): where
the range jumps between neighbouring points of a LiDAR ring, the nearer point lies on an object's outline, and a
right calibration projects it onto an edge of the image. :func:`edge_alignment` is the mean image-edge strength
under the projected depth-edge points (0..1). It needs no labels and no target, and it is sensitive to the
calibration: rotating it by a degree or two moves the outlines off the image's edges and lowers the score, so
a calibration is checked by comparing its score with that of the same calibration perturbed
(:func:`perturbed`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clip_seg3d_ros.geometry.camera import CameraModel, project_points

MIN_JUMP_M = 0.5
"""A range jump between ring neighbours of at least this many metres is a depth edge (an outline); smaller ones
are the slope of a surface."""


def depth_edges(points: np.ndarray, min_jump: float = MIN_JUMP_M) -> np.ndarray:
    """(N,) bool: the points nearer than a ring neighbour by ``min_jump`` or more (the foreground side of an
    outline). ``points`` in the sensor's own order, ring by ring, as LiDAR drivers and SemanticKITTI keep them."""
    distance = np.linalg.norm(np.asarray(points, dtype=np.float64)[:, :3], axis=1)
    before = np.r_[distance[0], distance[:-1]]
    after = np.r_[distance[1:], distance[-1]]
    return np.maximum(before - distance, after - distance) >= min_jump


def image_edges(image: np.ndarray, spread: int = 3, decay: float = 0.5) -> np.ndarray:
    """(H, W) float32 edge strength in [0, 1]: the grey image's central-difference gradient (the larger of the
    two directions), normalised, then spread ``spread`` pixels with a factor ``decay`` per pixel, so that a point
    one or two pixels off an edge still counts, less (Levinson and Thrun's inverse distance transform)."""
    grey = np.asarray(image, dtype=np.float32)
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    edges = np.zeros_like(grey)
    edges[:, 1:-1] = np.abs(grey[:, 2:] - grey[:, :-2])
    edges[1:-1, :] = np.maximum(edges[1:-1, :], np.abs(grey[2:, :] - grey[:-2, :]))
    edges /= max(float(edges.max()), 1e-6)
    for _ in range(spread):
        spread_out = edges.copy()
        spread_out[1:, :] = np.maximum(spread_out[1:, :], decay * edges[:-1, :])
        spread_out[:-1, :] = np.maximum(spread_out[:-1, :], decay * edges[1:, :])
        spread_out[:, 1:] = np.maximum(spread_out[:, 1:], decay * edges[:, :-1])
        spread_out[:, :-1] = np.maximum(spread_out[:, :-1], decay * edges[:, 1:])
        edges = spread_out
    return edges


def edge_alignment(points: np.ndarray, camera: CameraModel, edges: np.ndarray) -> float:
    """Mean of ``edges`` (:func:`image_edges` of the camera's image) under the depth-edge points of ``points``
    that ``camera`` sees; NaN when it sees none."""
    outline = depth_edges(points)
    projection = project_points(np.asarray(points)[outline, :3], camera)
    if not len(projection.point_indices):
        return float("nan")
    rows, columns = projection.pixel_indices()
    return float(edges[rows, columns].mean())


def perturbed(camera: CameraModel, axis: int, degrees: float) -> CameraModel:
    """``camera`` with its LiDAR-to-camera transform turned by ``degrees`` about its own axis ``axis`` (0: x,
    right; 1: y, down; 2: z, forward, the optical axis)."""
    angle = np.radians(degrees)
    first, second = [(1, 2), (2, 0), (0, 1)][axis]
    rotation = np.eye(4)
    rotation[first, first] = rotation[second, second] = np.cos(angle)
    rotation[first, second], rotation[second, first] = -np.sin(angle), np.sin(angle)
    return dataclasses.replace(camera, lidar_to_camera=rotation @ camera.lidar_to_camera)
