"""Colours of rendered pixels: class colour, per-instance tint, a blocky texture, Lambertian light, sky.

Tint and texture are hashed from the instance id and the world position, not drawn at random, so that every
camera sees an object in the same colours.
"""

from __future__ import annotations

import numpy as np

from clip_seg3d_ros.synthetic.classes import SURFACE_RGB

SKY_HORIZON = np.array([205.0, 215.0, 228.0])
SKY_ZENITH = np.array([95.0, 140.0, 205.0])
AMBIENT = 0.35  # share of the light that reaches surfaces facing away from the sun
TEXTURE_CELL = 0.3  # metres: the size of the texture's blocks


def _hash(values: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per value (the classic shader hash)."""
    return np.modf(np.abs(np.sin(values) * 43758.5453))[0]


def shade(labels: np.ndarray, instances: np.ndarray, points: np.ndarray, normals: np.ndarray,
          directions: np.ndarray, sun: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """(R, 3) uint8 colours of R pixels from their hits: ``labels`` and ``instances`` (-1: sky), world
    ``points`` and unit ``normals``, view ``directions`` (for the sky) and a unit vector towards the ``sun``."""
    hit = labels >= 0
    up = directions[:, 2] / np.linalg.norm(directions, axis=1)
    height = np.clip(2.5 * up, 0.0, 1.0)[:, None]
    rgb = SKY_HORIZON * (1.0 - height) + SKY_ZENITH * height

    base = SURFACE_RGB[labels[hit]]
    tint = 0.8 + 0.4 * _hash(instances[hit, None] * 3.1 + np.arange(3) + 0.5)
    cells = np.floor(points[hit] / TEXTURE_CELL) @ np.array([12.9898, 78.233, 37.719])
    texture = 0.88 + 0.24 * _hash(cells)[:, None]
    light = AMBIENT + (1.0 - AMBIENT) * np.clip(normals[hit] @ sun, 0.0, None)[:, None]
    rgb[hit] = base * tint * texture * light
    rgb += rng.normal(0.0, noise_std, rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
