"""The metrics as text and strict JSON (clip_seg3d_ros.evaluation.summary)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip_seg3d_ros.evaluation.summary import format_metrics_table, json_compatible, write_metrics_json


def test_format_metrics_table_lists_every_class_with_its_split_and_iou():
    metrics = {
        "miou": 50.0, "miou_seen": 62.5, "miou_unseen": 25.0, "hiou": 100 / 3, "points": 1234,
        "iou_per_class": {"road": 75.0, "car": 50.0, "truck": 25.0, "pole": None},
    }
    lines = format_metrics_table(metrics, [True, True, False, True]).splitlines()
    assert lines[0] == "mIoU 50.0 | seen 62.5 | unseen 25.0 | hIoU 33.3 | 1,234 points"
    assert lines[2:] == [
        "| class | split  |  IoU % |",
        "| ----- | ------ | -----: |",
        "| road  | seen   |   75.0 |",
        "| car   | seen   |   50.0 |",
        "| truck | unseen |   25.0 |",
        "| pole  | seen   | absent |",
    ]
    with pytest.raises(ValueError, match="seen flags"):
        format_metrics_table(metrics, [True])


def test_json_compatible_turns_nan_into_null_and_numpy_scalars_into_plain_values():
    value = {"miou": float("nan"), 3: (np.float32(0.5), np.int64(7), [np.float64("nan"), None, "text", True])}
    converted = json_compatible(value)
    assert converted == {"miou": None, "3": [0.5, 7, [None, None, "text", True]]}
    assert type(converted["3"][0]) is float and type(converted["3"][1]) is int
    json.dumps(converted, allow_nan=False)  # strict JSON: would raise on a NaN left behind


def test_write_metrics_json_adds_the_classes_and_split_as_strict_json(tmp_path):
    metrics = {"miou": 40.0, "miou_seen": 40.0, "miou_unseen": float("nan"), "hiou": float("nan"),
               "iou_per_class": {"road": 40.0, "pole": None}, "points": np.int64(12)}
    path = write_metrics_json(metrics, ("road", "pole"), np.array([True, True]), tmp_path / "out" / "metrics.json")
    assert path == tmp_path / "out" / "metrics.json"
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text) == {
        "miou": 40.0, "miou_seen": 40.0, "miou_unseen": None, "hiou": None,
        "iou_per_class": {"road": 40.0, "pole": None}, "points": 12,
        "class_names": ["road", "pole"], "seen": [True, True],
    }
