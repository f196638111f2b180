"""The classes the synthetic world labels (SemanticKITTI's 19 evaluation classes) and how each one looks.

Label images and point labels index ``CLASS_NAMES``; -1 (``IGNORE_INDEX``) is sky / nothing. The render
colours and LiDAR intensities are plausible for the real classes, so both modalities carry class evidence.
"""

from __future__ import annotations

import numpy as np

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES, SEMANTICKITTI_PALETTE

CLASS_NAMES: tuple[str, ...] = tuple(SEMANTICKITTI_CLASSES)


def class_index(name: str) -> int:
    """Index of ``name`` in :data:`CLASS_NAMES`; an unknown name is a ValueError that lists the known ones."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; the synthetic world knows {list(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def _table(rows: dict[str, tuple[float, ...]], dtype: type) -> np.ndarray:
    """One row per class, in :data:`CLASS_NAMES` order, read-only so that no caller can change it by accident."""
    table = np.array([rows[name] for name in CLASS_NAMES], dtype=dtype)
    table.setflags(write=False)
    return table


# SemanticKITTI's own colours, one row per class (the synthetic classes are SemanticKITTI's), for plots.
PALETTE = SEMANTICKITTI_PALETTE

# Base colour of each class in the rendered camera images (before per-instance tint, texture and shading).
SURFACE_RGB = _table({
    "car": (70, 90, 140), "bicycle": (45, 45, 50), "motorcycle": (120, 30, 30), "truck": (205, 205, 195),
    "other-vehicle": (215, 175, 45), "person": (150, 95, 75), "bicyclist": (60, 95, 165),
    "motorcyclist": (35, 35, 40), "road": (85, 85, 90), "parking": (110, 105, 105), "sidewalk": (170, 165, 155),
    "other-ground": (140, 120, 95), "building": (185, 145, 115), "fence": (125, 100, 80),
    "vegetation": (55, 115, 40), "trunk": (95, 70, 45), "terrain": (125, 150, 75), "pole": (150, 150, 155),
    "traffic-sign": (30, 80, 200),
}, np.float64)

# Mean LiDAR return intensity in [0, 1]: asphalt is dark, vegetation bright, signs retro-reflective.
INTENSITY = _table({
    "car": (0.25,), "bicycle": (0.2,), "motorcycle": (0.25,), "truck": (0.3,), "other-vehicle": (0.3,),
    "person": (0.15,), "bicyclist": (0.15,), "motorcyclist": (0.15,), "road": (0.1,), "parking": (0.12,),
    "sidewalk": (0.25,), "other-ground": (0.2,), "building": (0.3,), "fence": (0.25,), "vegetation": (0.35,),
    "trunk": (0.3,), "terrain": (0.4,), "pole": (0.4,), "traffic-sign": (0.9,),
}, np.float64)[:, 0]
