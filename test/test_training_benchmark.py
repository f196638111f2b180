"""A CI-sized version of the synthetic ablation (README): the full method learns the unseen classes, (a) cannot."""

import json
import math
from pathlib import Path

import pytest
from test_training_pipeline import training_script

from clip_seg3d_ros.training.benchmark import format_table, write_results

# The shipped synthetic config (its schedule too) on fewer scenes cropped to 25 m: a few minutes here.
SYNTHETIC = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"
SMALL = ["data.synthetic_train_scenes=6", "data.synthetic_val_scenes=4", "data.max_range=25", "eval.num_bev=0"]


@pytest.mark.slow
def test_the_full_method_learns_unseen_classes_that_seen_ground_truth_alone_cannot(tmp_path):
    run_benchmark = training_script("benchmark").run_benchmark
    results = run_benchmark(tmp_path, SYNTHETIC, overrides=SMALL, variants=["a", "e"], progress=False)
    seen_only, full = results["a"], results["e"]
    # (a) never saw a label of an unseen class: it cannot predict them.
    assert seen_only["miou_unseen"] < 2.0
    # The full method, taught by the teacher's pseudo labels and its own, learns them: measured 20.3 vs 0.0 unseen
    # mIoU at this size (the full-size benchmark, in the README: 76.2); the margin leaves room for float noise.
    assert full["miou_unseen"] > seen_only["miou_unseen"] + 10.0, format_table(results)
    # The teacher reference is computed on the camera-visible training points and is what pseudo labels carry.
    assert results["teacher"]["miou_unseen"] > 20.0
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["e"]["miou_unseen"] == pytest.approx(full["miou_unseen"])
    assert "(e) + self-training" in (tmp_path / "benchmark.md").read_text()


def test_a_nan_metric_is_written_as_null_in_strict_json(tmp_path):
    """A class absent from the validation scenes has no IoU (NaN); JSON has no NaN, so benchmark.json says null."""
    metrics = {"miou": 50.0, "miou_seen": 60.0, "miou_unseen": math.nan, "hiou": math.nan, "epochs": 2,
               "seconds": 1.0, "iou_per_class": {"car": 60.0, "truck": math.nan}}
    write_results({"a": metrics}, tmp_path)
    text = (tmp_path / "benchmark.json").read_text()
    assert "NaN" not in text
    saved = json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert saved["a"]["miou_unseen"] is None and saved["a"]["iou_per_class"] == {"car": 60.0, "truck": None}
    assert "(a) seen ground truth only" in (tmp_path / "benchmark.md").read_text()
