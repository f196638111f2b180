"""Class colours, the one colouring of labels shared by the plots and the ROS node's RGB cloud.

    colors = class_colors(class_names)     # (C, 3) uint8 RGB, one per class
    rgb = label_colors(labels, colors)     # (..., 3) uint8, grey (UNLABELLED_RGB) where a label is < 0

Plain numpy: no matplotlib (the node must not need it), no ROS, no synthetic world. The colours are
nevertheless exactly those matplotlib gave the plots before (``tab20`` and ``hsv_to_rgb``), so pictures made
before and after this module existed agree; a test compares the two.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES, SEMANTICKITTI_PALETTE

UNLABELLED_RGB = np.array([153, 153, 153], dtype=np.uint8)  # ground truth -1 / prediction -1
# matplotlib's "tab20" qualitative colour map (its colours are exact multiples of 1/255), copied here so that
# colouring does not need matplotlib.
TAB20_RGB = np.array([
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
    (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148),
    (227, 119, 194), (247, 182, 210), (127, 127, 127), (199, 199, 199), (188, 189, 34), (219, 219, 141),
    (23, 190, 207), (158, 218, 229),
], dtype=np.uint8)
TAB20_RGB.setflags(write=False)
GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # hue step that keeps successive generated colours far apart
GENERATED_SATURATION, GENERATED_VALUE = 0.65, 0.9


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(C, 3) uint8 RGB, one colour per class.

    When every name is a SemanticKITTI class (any subset, any order) the benchmark's own colours are used, so
    pictures of any vocabulary over those classes look like the familiar ones. Any other list gets matplotlib's
    ``tab20`` by position, then golden-ratio hues beyond 20 classes: deterministic for a given list, but a
    class's colour depends on where it stands in the list.
    """
    names = list(class_names)
    if all(name in SEMANTICKITTI_CLASSES for name in names):
        indices = [SEMANTICKITTI_CLASSES.index(name) for name in names]
        return SEMANTICKITTI_PALETTE[indices].reshape(len(names), 3).copy()
    hues = (np.arange(max(len(names) - len(TAB20_RGB), 0)) * GOLDEN_RATIO_CONJUGATE) % 1.0
    generated = [colorsys.hsv_to_rgb(float(hue), GENERATED_SATURATION, GENERATED_VALUE) for hue in hues]
    generated_rgb = np.round(np.array(generated, dtype=np.float64).reshape(-1, 3) * 255.0).astype(np.uint8)
    return np.concatenate([TAB20_RGB, generated_rgb])[: len(names)]


def label_colors(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(..., 3) uint8: ``colors[label]`` for each label, :data:`UNLABELLED_RGB` for negative (ignored) labels."""
    labels = np.asarray(labels)
    if labels.size and labels.max() >= len(colors):
        raise ValueError(f"label {labels.max()} has no colour: only {len(colors)} classes")
    return np.where(labels[..., None] >= 0, colors[np.maximum(labels, 0)], UNLABELLED_RGB).astype(np.uint8)
