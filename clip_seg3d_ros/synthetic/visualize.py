"""A picture of one sample for a visual check: bird's-eye view of the labelled points, camera images with
the points projected into them, and the rendered class-id images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders to files with Agg: no pyplot, no global backend

from clip_seg3d_ros.evaluation.colors import class_colors, label_colors
from clip_seg3d_ros.evaluation.plots import class_legend_handles, draw_bev
from clip_seg3d_ros.geometry.camera import project_points
from clip_seg3d_ros.sample import Sample


def plot_sample(sample: Sample, path: str | Path, view_range: float = 50.0) -> None:
    """Write a PNG: the bird's-eye view on the left; per camera its image with projected points, then its
    class-id image, on the right."""
    labels = sample.labels if sample.labels is not None else np.full(len(sample.points), -1)
    rows = max(2 * len(sample.cameras), 1)
    figure = Figure(figsize=(20, 4.5 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, 2, width_ratios=[1, 1.4])

    colors = class_colors(sample.class_names)
    bev = figure.add_subplot(grid[:, 0])
    draw_bev(bev, sample.points, label_colors(labels, colors), view_range)
    bev.set_title(f"{sample.name}: {len(sample.points):,} points, bird's-eye view")
    for frame in sample.cameras:  # the cameras' fields of view, to see which points they cover
        camera = frame.camera
        corners = np.linalg.inv(camera.K) @ np.array([[0, camera.width - 1], [camera.height / 2] * 2, [1, 1]])
        to_lidar = np.linalg.inv(camera.lidar_to_camera)
        far = to_lidar[:3, :3] @ (corners * view_range) + to_lidar[:3, 3:]
        centre = to_lidar[:3, 3]
        bev.plot([far[0, 0], centre[0], far[0, 1]], [far[1, 0], centre[1], far[1, 1]], "k--", linewidth=0.8)

    handles = class_legend_handles(sample.class_names, colors, labels)
    bev.legend(handles=handles, loc="upper left", fontsize=8, ncol=2, framealpha=0.85)

    for index, frame in enumerate(sample.cameras):
        projection = project_points(sample.points[:, :3], frame.camera)
        image_axes = figure.add_subplot(grid[2 * index, 1])
        image_axes.imshow(frame.image)
        image_axes.scatter(projection.pixels[:, 0], projection.pixels[:, 1],
                           c=label_colors(labels[projection.point_indices], colors) / 255.0, s=0.4, linewidths=0)
        image_axes.set_xlim(-0.5, frame.camera.width - 0.5)
        image_axes.set_ylim(frame.camera.height - 0.5, -0.5)
        image_axes.set_title(f"camera {frame.camera.name}: RGB with {len(projection.point_indices):,} projected points")
        image_axes.axis("off")
        if frame.label_image is not None:
            label_axes = figure.add_subplot(grid[2 * index + 1, 1])
            label_axes.imshow(label_colors(frame.label_image, colors))
            label_axes.set_title(f"camera {frame.camera.name}: rendered class ids")
            label_axes.axis("off")
    figure.savefig(path, dpi=100)
