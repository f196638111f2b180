"""The metrics as files and text: ``metrics.json`` (strict JSON) and the console / Markdown table.

    write_metrics_json(metrics, class_names, seen, "runs/eval/metrics.json")
    print(format_metrics_table(metrics, seen))

``metrics`` is a :func:`clip_seg3d_ros.evaluation.metrics.summarize` dictionary. Training's evaluation,
rosbag replay and the ROS evaluate node all write their results through these functions, so one reader
understands every ``metrics.json``. Plain numpy and the standard library: no matplotlib, no training code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clip_seg3d_ros.files import write_text_atomically


def json_compatible(value):
    """``value`` with every NaN float replaced by None (JSON has no NaN) and numpy scalars made plain.

    Mappings (keys made strings), lists and tuples are converted recursively; ``json.dumps(...,
    allow_nan=False)`` of the result is strict JSON.
    """
    if isinstance(value, Mapping):
        return {str(key): json_compatible(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_compatible(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics_json(metrics: Mapping, class_names: Sequence[str], seen: Sequence[bool], path: str | Path) -> Path:
    """Write a :func:`~clip_seg3d_ros.evaluation.metrics.summarize` dictionary plus the class list and split as strict
    JSON (NaN -> null), the one ``metrics.json`` layout that training, replay and the evaluator share."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**metrics, "class_names": list(class_names), "seen": [bool(flag) for flag in seen]}
    write_text_atomically(path, json.dumps(json_compatible(document), indent=2, allow_nan=False) + "\n")
    return path


def _cell(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def format_metrics_table(metrics: Mapping, seen: Sequence[bool]) -> str:
    """The metrics as text that reads well on a console and is also a Markdown table (for metrics.md).

    A summary line (mIoU, seen, unseen, hIoU, points), the same for the points a camera sees and those none
    sees where ``metrics`` has that split, then one row per class: split and IoU in percent, "absent" for a
    class with no IoU (in neither ground truth nor predictions).
    """
    per_class = metrics["iou_per_class"]
    if len(seen) != len(per_class):
        raise ValueError(f"{len(seen)} seen flags for {len(per_class)} classes")
    rows = [
        (name, "seen" if flag else "unseen", "absent" if iou is None else f"{iou:.1f}")
        for (name, iou), flag in zip(per_class.items(), seen, strict=True)
    ]
    header = ("class", "split", "IoU %")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(
            cell.rjust(width) if column == 2 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ) + " |"

    rule = f"| {'-' * widths[0]} | {'-' * widths[1]} | {'-' * (widths[2] - 1)}: |"
    summary = [_summary_line("", metrics)]
    for key, title in VIEWS.items():
        if key in metrics:
            summary.append(_summary_line(f"{title}: ", metrics[key]))
    return "\n".join([*summary, "", line(header), rule, *(line(row) for row in rows)])


VIEWS = {"in_view": "seen by a camera", "out_of_view": "seen by no camera"}  # the split metrics may have


def _summary_line(prefix: str, metrics: Mapping) -> str:
    return (f"{prefix}mIoU {_cell(metrics['miou'])} | seen {_cell(metrics['miou_seen'])} | "
            f"unseen {_cell(metrics['miou_unseen'])} | hIoU {_cell(metrics['hiou'])} | {metrics['points']:,} points")
