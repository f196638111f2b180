"""Pictures of segmentation results: bird's-eye views, confusion matrix, per-class IoU bars.

Every figure is a bare matplotlib ``Figure`` saved with the Agg canvas: no pyplot, no global backend, no
display, and nothing survives the call (pyplot would keep every figure alive until it is closed). The class
colours come from :mod:`clip_seg3d_ros.evaluation.colors` (plain numpy), which the ROS node uses too, so its
output cloud is coloured exactly as these plots colour the classes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from clip_seg3d_ros.evaluation.colors import UNLABELLED_RGB, class_colors, label_colors
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix

BACKGROUND_RGB = np.array([255, 255, 255], dtype=np.uint8)  # bird's-eye-view pixels without a point
SEEN_COLOR = "tab:blue"
UNSEEN_COLOR = "tab:red"


def bev_image(points: np.ndarray, rgb: np.ndarray, view_range: float = 50.0, resolution: float = 0.2) -> np.ndarray:
    """Bird's-eye-view raster (H, W, 3) uint8 of the square |x|, |y| <= ``view_range`` around the sensor.

    Columns run along +x (forward), rows along y with +y (left) at the top, so the array is an image the right
    way up. Each pixel takes the colour of its highest point (what one sees from above: the car, not the road
    under it); pixels without a point are white. A raster instead of a scatter plot because it is fast for
    100k+ points and its colours are exact (no antialiasing blends), which keeps pictures comparable.
    """
    if view_range <= 0 or resolution <= 0:
        raise ValueError(f"view_range and resolution must be positive, got {view_range} and {resolution}")
    size = int(np.ceil(2.0 * view_range / resolution))
    image = np.tile(BACKGROUND_RGB, (size, size, 1))
    points = np.asarray(points, dtype=np.float64)
    column = np.floor((points[:, 0] + view_range) / resolution)
    row = size - 1 - np.floor((points[:, 1] + view_range) / resolution)
    inside = np.isfinite(points[:, :3]).all(axis=1) & (column >= 0) & (column < size) & (row >= 0) & (row < size)
    pixel = (row[inside] * size + column[inside]).astype(np.int64)
    height, colour = points[inside, 2], np.asarray(rgb)[inside]
    # Sort by pixel, then height; the last point of each pixel's run is its highest. (Assigning all points
    # and relying on "the last write wins" is not guaranteed by numpy for repeated indices.)
    order = np.lexsort((height, pixel))
    pixel, colour = pixel[order], colour[order]
    top = np.ones(len(pixel), dtype=bool)
    top[:-1] = pixel[1:] != pixel[:-1]
    image.reshape(-1, 3)[pixel[top]] = colour[top]
    return image


def draw_bev(
    axes: Axes, points: np.ndarray, rgb: np.ndarray, view_range: float = 50.0, resolution: float = 0.2
) -> None:
    """Draw :func:`bev_image` on ``axes`` in metres (x forward to the right, y left upwards)."""
    axes.imshow(
        bev_image(points, rgb, view_range, resolution),
        extent=(-view_range, view_range, -view_range, view_range),
        interpolation="nearest",
    )
    axes.set_xlim(-view_range, view_range)
    axes.set_ylim(-view_range, view_range)
    axes.set_xlabel("x forward [m]")
    axes.set_ylabel("y left [m]")


def class_legend_handles(class_names: Sequence[str], colors: np.ndarray, *label_arrays: np.ndarray) -> list[Patch]:
    """Legend patches for the classes that occur in any of ``label_arrays``, plus one for ignored points."""
    labels = np.concatenate([np.asarray(array).reshape(-1) for array in label_arrays])
    handles = [Patch(color=colors[index] / 255.0, label=class_names[index]) for index in np.unique(labels[labels >= 0])]
    if (labels < 0).any():
        handles.append(Patch(color=UNLABELLED_RGB / 255.0, label="unlabelled / ignored"))
    return handles


def plot_bev_pair(
    points: np.ndarray,
    ground_truth: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    view_range: float = 50.0,
    resolution: float = 0.2,
) -> Path:
    """Write a PNG: the prediction's bird's-eye view next to the ground truth's, in the same class colours."""
    colors = class_colors(class_names)
    labelled = ground_truth >= 0
    accuracy = 100.0 * float((prediction[labelled] == ground_truth[labelled]).mean()) if labelled.any() else np.nan
    figure = Figure(figsize=(17, 7.5), layout="constrained")
    left, right = figure.subplots(1, 2, sharex=True, sharey=True)
    draw_bev(left, points, label_colors(prediction, colors), view_range, resolution)
    left.set_title(f"prediction ({accuracy:.1f} % of labelled points correct)")
    draw_bev(right, points, label_colors(ground_truth, colors), view_range, resolution)
    right.set_title("ground truth")
    figure.legend(
        handles=class_legend_handles(class_names, colors, ground_truth, prediction), loc="outside right upper"
    )
    figure.suptitle(title or f"{len(points):,} points, bird's-eye view")
    return _save(figure, path)


def plot_confusion_matrix(
    confusion: ConfusionMatrix, class_names: Sequence[str], seen: Sequence[bool], path: str | Path
) -> Path:
    """Write a PNG of the row-normalised confusion matrix (each row: where that class's points went).

    Unseen classes' names are bold red on both axes. When some labelled points were predicted as no class
    (invalid coordinates, or a class outside the evaluated list), a last column "(none)" holds them, so every
    row still sums to 1. Rows of classes absent from the ground truth are grey.
    """
    names = list(class_names)
    counts = confusion.counts.astype(np.float64)
    column_names = list(names)
    if confusion.missed.any():
        counts = np.concatenate([counts, confusion.missed[:, None].astype(np.float64)], axis=1)
        column_names.append("(none)")
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(totals > 0, counts / totals, np.nan)

    size = max(6.0, 0.42 * len(names) + 3.0)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.9")
    image = axes.imshow(fractions, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the ground-truth class's points")
    fontsize = 7 if len(names) > 12 else 9
    for row, column in zip(*np.nonzero(np.nan_to_num(fractions) >= 0.01), strict=True):
        value = fractions[row, column]
        axes.text(column, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=fontsize,
                  color="white" if value > 0.5 else "black")
    axes.set_xticks(range(len(column_names)), column_names, rotation=90)
    axes.set_yticks(range(len(names)), names)
    for tick_labels in (axes.get_xticklabels()[: len(names)], axes.get_yticklabels()):
        for label, is_seen in zip(tick_labels, seen, strict=True):
            if not is_seen:
                label.set_color(UNSEEN_COLOR)
                label.set_fontweight("bold")
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title("Confusion matrix, % of each ground-truth row (red bold: unseen classes)")
    return _save(figure, path)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.1f}"


def plot_iou_per_class(metrics: Mapping, seen: Sequence[bool], path: str | Path) -> Path:
    """Write a PNG bar chart of the per-class IoU of a :func:`clip_seg3d_ros.evaluation.metrics.summarize` dictionary.

    Bars are coloured seen / unseen, dashed lines mark the two means, and a class absent from both ground
    truth and predictions (no IoU) is written as "absent" instead of a bar, so it is not mistaken for 0 %.
    """
    names = list(metrics["iou_per_class"])
    values = [metrics["iou_per_class"][name] for name in names]
    seen = [bool(flag) for flag in seen]
    if len(seen) != len(names):
        raise ValueError(f"{len(seen)} seen flags for {len(names)} classes")
    colours = [SEEN_COLOR if flag else UNSEEN_COLOR for flag in seen]
    figure = Figure(figsize=(max(7.0, 0.5 * len(names) + 2.0), 5.0), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    heights = [0.0 if value is None else value for value in values]
    axes.bar(positions, heights, color=colours, width=0.75)
    for position, value in zip(positions, values, strict=True):
        if value is None:
            axes.text(position, 2.0, "absent", rotation=90, ha="center", va="bottom", fontsize=8, color="0.4")
        else:
            axes.text(position, value + 1.0, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    for key, colour in (("miou_seen", SEEN_COLOR), ("miou_unseen", UNSEEN_COLOR)):
        if not np.isnan(metrics[key]):
            axes.axhline(metrics[key], color=colour, linestyle="--", linewidth=1.0)
    axes.set_xticks(positions, names, rotation=60, ha="right", rotation_mode="anchor")
    for label, flag in zip(axes.get_xticklabels(), seen, strict=True):
        if not flag:
            label.set_color(UNSEEN_COLOR)
            label.set_fontweight("bold")
    axes.set_xlim(-0.6, len(names) - 0.4)
    axes.set_ylim(0.0, 105.0)
    axes.set_ylabel("IoU [%]")
    axes.set_title(
        f"mIoU {_percent(metrics['miou'])}   seen {_percent(metrics['miou_seen'])}   "
        f"unseen {_percent(metrics['miou_unseen'])}   hIoU {_percent(metrics['hiou'])}"
    )
    axes.legend(
        handles=[
            Patch(color=SEEN_COLOR, label="seen class"),
            Patch(color=UNSEEN_COLOR, label="unseen class"),
            Line2D([], [], color=SEEN_COLOR, linestyle="--", label="mIoU seen"),
            Line2D([], [], color=UNSEEN_COLOR, linestyle="--", label="mIoU unseen"),
        ],
        loc="upper right",
        fontsize=8,
        ncol=2,
    )
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    """Save and let go of the figure (a bare Figure is freed with its last reference; no pyplot registry)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"  # renamed when whole (see files.py)
    try:
        figure.savefig(temporary, dpi=100, format=path.suffix.lstrip(".") or "png")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
        figure.clear()
    return path
