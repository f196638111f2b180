"""Class colours and label colouring (clip_seg3d_ros.evaluation.colors), shared by the plots and the node."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import hsv_to_rgb

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES, SEMANTICKITTI_PALETTE
from clip_seg3d_ros.evaluation.colors import GOLDEN_RATIO_CONJUGATE, UNLABELLED_RGB, class_colors, label_colors
from clip_seg3d_ros.synthetic import CLASS_NAMES, PALETTE


def matplotlib_class_colors(count: int) -> np.ndarray:
    """What class_colors gave a list of ``count`` non-SemanticKITTI names when it was written with matplotlib."""
    tab20 = np.asarray(matplotlib.colormaps["tab20"].colors, dtype=np.float64)
    hues = (np.arange(max(count - len(tab20), 0)) * GOLDEN_RATIO_CONJUGATE) % 1.0
    generated = hsv_to_rgb(np.stack([hues, np.full_like(hues, 0.65), np.full_like(hues, 0.9)], axis=1))
    return np.round(np.concatenate([tab20, generated])[:count] * 255.0).astype(np.uint8)


@pytest.mark.parametrize("count", [0, 1, 5, 20, 21, 45])
def test_generic_class_colors_equal_matplotlibs_tab20_and_hsv_colours(count):
    colours = class_colors([f"class {i}" for i in range(count)])
    assert colours.dtype == np.uint8 and colours.shape == (count, 3)
    np.testing.assert_array_equal(colours, matplotlib_class_colors(count))


def test_class_colors_use_the_semantickitti_palette_by_name_and_tab20_otherwise():
    np.testing.assert_array_equal(class_colors(CLASS_NAMES), PALETTE)
    subset = ["road", "car", "traffic-sign"]
    np.testing.assert_array_equal(class_colors(subset), PALETTE[[CLASS_NAMES.index(name) for name in subset]])
    other = class_colors(["road", "fire hydrant"])  # one unknown name: the whole list is "other"
    np.testing.assert_array_equal(other, [[31, 119, 180], [174, 199, 232]])  # tab20's first two
    many = class_colors([f"class {i}" for i in range(40)])
    assert many.dtype == np.uint8 and many.shape == (40, 3)
    assert len(np.unique(many, axis=0)) == 40
    np.testing.assert_array_equal(many, class_colors([f"class {i}" for i in range(40)]))
    coloured = label_colors(np.array([[1, -1], [0, 2]]), class_colors(subset))
    np.testing.assert_array_equal(coloured, [[PALETTE[0], UNLABELLED_RGB], [PALETTE[8], PALETTE[18]]])
    with pytest.raises(ValueError, match="no colour"):
        label_colors(np.array([3]), class_colors(subset))


def test_the_semantickitti_palette_is_the_benchmarks_and_read_only():
    assert PALETTE is SEMANTICKITTI_PALETTE and list(CLASS_NAMES) == SEMANTICKITTI_CLASSES
    assert SEMANTICKITTI_PALETTE.shape == (19, 3) and SEMANTICKITTI_PALETTE.dtype == np.uint8
    # semantic-kitti.yaml color_map, converted from BGR: car [245, 150, 100], traffic-sign [0, 0, 255]
    np.testing.assert_array_equal(SEMANTICKITTI_PALETTE[SEMANTICKITTI_CLASSES.index("car")], [100, 150, 245])
    np.testing.assert_array_equal(SEMANTICKITTI_PALETTE[SEMANTICKITTI_CLASSES.index("traffic-sign")], [255, 0, 0])
    with pytest.raises(ValueError, match="read-only"):
        SEMANTICKITTI_PALETTE[0] = 0
    colours = class_colors(SEMANTICKITTI_CLASSES)
    colours[0] = 0  # a copy: the caller may change it
    assert SEMANTICKITTI_PALETTE[0].any()
