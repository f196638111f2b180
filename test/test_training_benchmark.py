"""CI-sized versions of the synthetic ablation (README): the full method learns the unseen classes, (a) cannot; with
the front camera only, self-training carries them to the points no camera sees."""

import json
import math
from pathlib import Path

import pytest
from test_training_pipeline import training_script

from clip_seg3d_ros.training.benchmark import format_table, write_results

# The shipped synthetic config (its schedule too) on fewer scenes cropped to 25 m: a few minutes here.
SYNTHETIC = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"
FRONT_CAMERA = SYNTHETIC.with_name("synthetic_front_camera.yaml")
SMALL = ["data.synthetic_train_scenes=6", "data.synthetic_val_scenes=4", "data.max_range=25", "eval.num_bev=0"]


@pytest.mark.slow
def test_the_full_method_learns_unseen_classes_that_seen_ground_truth_alone_cannot(tmp_path):
    run_benchmark = training_script("benchmark").run_benchmark
    results = run_benchmark(tmp_path, SYNTHETIC, overrides=SMALL, variants=["a", "e"], progress=False)
    seen_only, full = results["seeds"][0]["a"], results["seeds"][0]["e"]
    # (a) never saw a label of an unseen class: it cannot predict them.
    assert seen_only["miou_unseen"] < 2.0
    # The full method, taught by the teacher's pseudo labels and its own, learns them: measured 20.3 vs 0.0 unseen
    # mIoU at this size (the full-size benchmark, in the README: 76.2); the margin leaves room for float noise.
    assert full["miou_unseen"] > seen_only["miou_unseen"] + 10.0, format_table(results)
    # The teacher reference is computed on the camera-visible training points and is what pseudo labels carry.
    assert results["teacher"]["miou_unseen"] > 20.0
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["seeds"]["0"]["e"]["miou_unseen"] == pytest.approx(full["miou_unseen"])
    assert "(e) + self-training" in (tmp_path / "benchmark.md").read_text()


# The front-camera benchmark as it ships, for one seed the benchmark's tables did not use, evaluated on 16 scenes
# (the benchmark's 4 and 12 more: a few objects of each unseen class are too few to tell runs apart). Measured
# on seeds 0 / 1 / 2 (README): on the unseen classes no camera sees, (e) - (d) = +9.6 / +3.9 / +6.0 mIoU on those
# 16 scenes; the margin below is the smallest gain minus a point. Seed 3 here: +6.3 (42.1 -> 48.4), truck labels
# beyond the camera 100% right, recall 82%.
HELD_OUT_SEED = 3
MIN_GAIN = 3.0


@pytest.mark.slow
def test_self_training_beats_clip_guided_training_on_unseen_points_no_camera_sees(tmp_path):
    """Front camera only: (e) starts from (d)'s model after the CLIP-guided epochs (the benchmark's branch) and
    self-trains; (d) goes on with CLIP-guided training for as many epochs. On the points no camera sees the
    teacher labelled nothing: what (e) adds there is self-training's. About 4-5 minutes of the suite here."""
    run_benchmark = training_script("benchmark").run_benchmark
    results = run_benchmark(tmp_path, FRONT_CAMERA, overrides=["data.synthetic_val_scenes=16", "eval.num_bev=0"],
                            variants=["d", "e"], seeds=[HELD_OUT_SEED], progress=False)
    clip_guided, self_trained = (results["seeds"][HELD_OUT_SEED][variant] for variant in ("d", "e"))
    assert self_trained["trained_epochs"] == 15 and clip_guided["trained_epochs"] == 60  # branched from (d)
    gain = self_trained["out_of_view"]["miou_unseen"] - clip_guided["out_of_view"]["miou_unseen"]
    assert gain > MIN_GAIN, format_table(results)
    # The labels self-training gave the training sweeps beyond the camera are right (checked on the hidden truth).
    quality = json.loads((tmp_path / f"seed_{HELD_OUT_SEED}" / "e" / "self_training" / "round_0" /
                          "label_quality.json").read_text())
    truck = quality["out_of_view"]["truck"]
    assert truck["precision"] > 0.9 and truck["recall"] > 0.2, truck


def test_a_nan_metric_is_written_as_null_in_strict_json(tmp_path):
    """A class absent from the validation scenes has no IoU (NaN); JSON has no NaN, so benchmark.json says null."""
    metrics = {"miou": 50.0, "miou_seen": 60.0, "miou_unseen": math.nan, "hiou": math.nan, "epochs": 2,
               "seconds": 1.0, "iou_per_class": {"car": 60.0, "truck": math.nan}}
    write_results({"seeds": {0: {"a": metrics}}}, tmp_path)
    text = (tmp_path / "benchmark.json").read_text()
    assert "NaN" not in text
    saved = json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))["seeds"]["0"]
    assert saved["a"]["miou_unseen"] is None and saved["a"]["iou_per_class"] == {"car": 60.0, "truck": None}
    assert "(a) seen ground truth only" in (tmp_path / "benchmark.md").read_text()


def test_the_table_gives_mean_and_sample_deviation_over_seeds_and_the_view_split():
    def run(unseen, out_of_view_unseen):
        split = {"miou_unseen": out_of_view_unseen, "hiou": 40.0}
        return {"miou_seen": 70.0, "miou_unseen": unseen, "hiou": 50.0, "miou": 60.0, "epochs": 60,
                "trained_epochs": 15, "seconds": 100.0, "in_view": {"miou_unseen": 80.0, "hiou": 75.0},
                "out_of_view": split}

    results = {"seeds": {0: {"e": run(40.0, 30.0)}, 1: {"e": run(50.0, 36.0)}, 2: {"e": run(60.0, 33.0)}}}
    table = format_table(results)
    row = next(line for line in table.splitlines() if line.startswith("| (e) + self-training"))
    # unseen 40 / 50 / 60: mean 50, sample sd 10; out of view 30 / 36 / 33: mean 33, sd 3
    assert row.split(" | ")[1:7] == ["70.0 ± 0.0", "50.0 ± 10.0", "50.0 ± 0.0", "80.0 ± 0.0", "33.0 ± 3.0",
                                     "40.0 ± 0.0"]
    assert "| 60 (15 own) | 100 |" in row
    assert "| (e) + self-training (full method) | 40.0 / 30.0 | 50.0 / 36.0 | 60.0 / 33.0 |" in table
    # one seed: plain values, no per-seed table; a run without the camera split: n/a
    single = format_table({"seeds": {0: {"d": {**run(40.0, 30.0), "trained_epochs": 60}}}})
    assert "| (d) + MCFA spatial | 70.0 | 40.0 | 50.0 | 80.0 | 30.0 | 40.0 | 60 | 100 |" in single
    assert "per seed" not in single
    no_split = {key: value for key, value in run(40.0, 30.0).items() if key not in ("in_view", "out_of_view")}
    assert "| n/a | n/a | n/a |" in format_table({"seeds": {0: {"e": no_split}}})


def test_a_benchmark_goes_on_where_it_stopped_and_refuses_a_folder_of_another_config(tmp_path):
    from test_training_pipeline import TINY

    from clip_seg3d_ros.training.config import ConfigError

    run_benchmark = training_script("benchmark").run_benchmark
    tiny = [*TINY, "optim.samples_per_step=1", "eval.num_bev=0"]
    first = run_benchmark(tmp_path, FRONT_CAMERA, overrides=tiny, variants=["d"], seeds=[5], progress=False)
    d = first["seeds"][5]["d"]
    assert (tmp_path / "seed_5" / "d" / "after_2_epochs.pt").exists() and d["trained_epochs"] == 3
    # Once more with (e): (d) is read back, not trained again; (e) starts from (d) after the CLIP-guided epochs.
    second = run_benchmark(tmp_path, FRONT_CAMERA, overrides=tiny, variants=["d", "e"], seeds=[5], progress=False)
    again = second["seeds"][5]["d"]
    assert (again["miou"], again["seconds"]) == pytest.approx((d["miou"], d["seconds"]))  # the same run's record
    assert second["seeds"][5]["e"]["trained_epochs"] == 1 and second["seeds"][5]["e"]["epochs"] == 3
    assert json.loads((tmp_path / "benchmark.json").read_text())["seeds"]["5"]["e"]["epochs"] == 3
    with pytest.raises(ConfigError, match="another config"):
        run_benchmark(tmp_path, FRONT_CAMERA, overrides=[*tiny, "optim.lr=0.1"], variants=["d"], seeds=[5],
                      progress=False)
