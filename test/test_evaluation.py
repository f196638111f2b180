"""Evaluation of a Segmenter on synthetic sweeps and the report it writes (metrics.json, metrics.md, PNGs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from clip_seg3d_ros import Segmenter, Vocabulary
from clip_seg3d_ros.evaluation.colors import class_colors
from clip_seg3d_ros.evaluation.metrics import evaluate_labels
from clip_seg3d_ros.evaluation.plots import SEEN_COLOR, UNSEEN_COLOR, bev_image, plot_iou_per_class
from clip_seg3d_ros.evaluation.report import EvaluationResult, evaluate_segmenter, write_report
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.sample import Sample
from clip_seg3d_ros.synthetic import CLASS_NAMES, PALETTE, SyntheticWorld

UNSEEN = ("motorcycle", "truck", "bicyclist", "traffic-sign")
SEEN = [name not in UNSEEN for name in CLASS_NAMES]
CROP_RADIUS = 15.0  # metres: enough of a street for every structure class, quick on a CPU


@pytest.fixture(scope="module")
def network() -> PointSegmentationNet:
    torch.manual_seed(0)
    return PointSegmentationNet(ModelConfig.from_preset("small", embed_dim=16)).eval()


@pytest.fixture(scope="module")
def embeddings() -> torch.Tensor:
    """Fixed random unit text embeddings, one per SemanticKITTI class."""
    return torch.nn.functional.normalize(torch.randn(len(CLASS_NAMES), 16, generator=torch.Generator().manual_seed(1)))


@pytest.fixture(scope="module")
def segmenter(network, embeddings) -> Segmenter:
    return Segmenter(network, Vocabulary(list(CLASS_NAMES), embeddings, SEEN))


def _crop(sample: Sample, radius: float) -> Sample:
    near = np.linalg.norm(sample.points[:, :2], axis=1) < radius
    return Sample(sample.name, sample.points[near], sample.class_names, sample.labels[near])


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    world = SyntheticWorld()
    return [_crop(world.scene(index), CROP_RADIUS) for index in range(2)]


@pytest.fixture(scope="module")
def result(segmenter, samples) -> EvaluationResult:
    unlabelled = Sample("no_ground_truth", samples[0].points[:100], list(CLASS_NAMES))
    return evaluate_segmenter(segmenter, [samples[0], unlabelled, samples[1]], SEEN, num_bev=1, progress=False)


def test_metrics_equal_evaluate_labels_on_the_segmenters_own_outputs(result, segmenter, samples):
    predictions = [segmenter(sample.points)[0] for sample in samples]
    expected, confusion = evaluate_labels(predictions, [sample.labels for sample in samples], CLASS_NAMES, SEEN)
    assert result.metrics == expected
    np.testing.assert_array_equal(result.confusion.counts, confusion.counts)
    assert result.metrics["points"] == sum(len(sample.points) for sample in samples) > 10_000
    assert result.num_samples == 2  # the sample without labels is skipped
    assert result.class_names == list(CLASS_NAMES) and result.seen == SEEN
    assert len(result.bev_samples) == 1
    name, points, ground_truth, prediction = result.bev_samples[0]
    assert name == samples[0].name and points.shape == (len(samples[0].points), 3)
    np.testing.assert_array_equal(ground_truth, samples[0].labels)
    np.testing.assert_array_equal(prediction, predictions[0])


def test_a_reordered_subset_vocabulary_with_a_new_class_is_mapped_by_name(network, embeddings, segmenter, samples):
    sample = samples[0]
    full_prediction = segmenter(sample.points)[0]
    dominant = int(np.bincount(full_prediction[full_prediction != CLASS_NAMES.index("pole")]).argmax())
    # Reversed order, no "pole", and the dominant class renamed "fire hydrant" (same embedding, so it takes over
    # exactly that class's points): those points must count as misses, pole and the renamed class as never
    # predicted.
    names = [("fire hydrant" if index == dominant else name) for index, name in enumerate(CLASS_NAMES)]
    rows = [index for index in reversed(range(len(names))) if names[index] != "pole"]
    vocabulary = Vocabulary([names[row] for row in rows], embeddings[rows], [True] * len(rows))
    other = Segmenter(network, vocabulary)

    with pytest.warns(UserWarning, match="pole"):
        evaluated = evaluate_segmenter(other, [sample], SEEN, progress=False)

    raw = other(sample.points)[0]
    to_dataset = np.array([CLASS_NAMES.index(name) if name in CLASS_NAMES else -1 for name in vocabulary.names])
    expected, _ = evaluate_labels([to_dataset[raw]], [sample.labels], CLASS_NAMES, SEEN)
    assert evaluated.metrics == expected
    hydrant = vocabulary.names.index("fire hydrant")
    assert evaluated.confusion.missed.sum() == (raw == hydrant).sum() > 0
    assert evaluated.confusion.counts[:, [CLASS_NAMES.index("pole"), dominant]].sum() == 0
    assert evaluated.metrics["iou_per_class"]["pole"] == 0.0


def test_bad_inputs_are_clear_errors(network, segmenter, samples):
    tiny = Sample("tiny", samples[0].points[:200], list(CLASS_NAMES), samples[0].labels[:200])
    renamed = Sample("renamed", tiny.points, [f"class {i}" for i in range(len(CLASS_NAMES))], tiny.labels)
    with pytest.raises(ValueError, match="has classes"):
        evaluate_segmenter(segmenter, [tiny, renamed], SEEN, progress=False)
    with pytest.raises(ValueError, match="no class in common"):
        evaluate_segmenter(segmenter, [renamed], SEEN, progress=False)
    with pytest.raises(ValueError, match="seen flags"):
        evaluate_segmenter(segmenter, [tiny], SEEN[:-1], progress=False)
    unlabelled = Sample("unlabelled", tiny.points, list(CLASS_NAMES))
    with pytest.raises(ValueError, match="no sample had ground-truth labels"):
        evaluate_segmenter(segmenter, [unlabelled], SEEN, progress=False)


def _rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _packed(colours: np.ndarray) -> np.ndarray:
    """RGB triples as single integers (much faster to compare and count than rows)."""
    colours = np.asarray(colours, dtype=np.int64).reshape(-1, 3)
    return (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]


def _uint8_rgb(colour: str) -> np.ndarray:
    return np.round(np.array(to_rgb(colour)) * 255).astype(np.uint8)


def _contains(image: np.ndarray, colour) -> bool:
    return bool((_packed(image) == _packed(colour)).any())


def test_write_report_writes_the_metrics_and_legible_pictures(result, tmp_path):
    paths = write_report(result, tmp_path / "report")
    name = result.bev_samples[0][0]
    assert set(paths) == {"metrics_json", "metrics_md", "confusion_matrix", "iou_per_class", f"bev_{name}"}
    assert all(path.parent == tmp_path / "report" and path.stat().st_size > 0 for path in paths.values())

    document = json.loads(paths["metrics_json"].read_text())
    for key in ("miou", "miou_seen", "miou_unseen", "hiou", "iou_per_class", "points", "class_names", "seen"):
        assert key in document
    assert document["class_names"] == list(CLASS_NAMES) and document["seen"] == SEEN
    assert document["iou_per_class"] == result.metrics["iou_per_class"]
    for key in ("miou", "miou_seen", "miou_unseen", "hiou"):
        assert document[key] == pytest.approx(result.metrics[key]) and 0.0 <= document[key] <= 100.0
    assert all(value is None or 0.0 <= value <= 100.0 for value in document["iou_per_class"].values())

    table = paths["metrics_md"].read_text()
    for class_name, flag in zip(CLASS_NAMES, SEEN, strict=True):
        assert f"| {class_name} " in table and ("seen" if flag else "unseen") in table

    for path in paths.values():
        if path.suffix == ".png":
            image = _rgb(path)
            assert image.shape[0] > 300 and image.shape[1] > 300, path.name
            assert len(np.unique(_packed(image))) > 20, f"{path.name} looks blank"

    # Prediction on the left half, ground truth on the right, each in the classes' SemanticKITTI colours.
    _, _, ground_truth, prediction = result.bev_samples[0]
    bev = _rgb(paths[f"bev_{name}"])
    left, right = bev[:, : bev.shape[1] // 2], bev[:, bev.shape[1] // 2 :]
    assert _contains(right, PALETTE[np.bincount(ground_truth[ground_truth >= 0]).argmax()])
    assert _contains(left, PALETTE[np.bincount(prediction[prediction >= 0]).argmax()])


def test_report_of_other_classes_writes_nan_as_null_and_marks_absent_classes(tmp_path):
    names = ["grass", "tree", "rock", "water"]
    seen = [True, True, True, True]  # no unseen class: mIoU unseen and hIoU are NaN
    target = np.array([0, 0, 1, 1, 2, 2, -1])
    predicted = np.array([0, 1, 1, 1, 2, 0, 3])  # "water" occurs nowhere labelled: absent, no IoU
    metrics, confusion = evaluate_labels([predicted], [target], names, seen)
    points = np.random.default_rng(0).uniform(-20, 20, size=(len(target), 3))
    evaluation = EvaluationResult(metrics, confusion, names, seen, [("a/b", points, target, predicted)], 1)
    paths = write_report(evaluation, tmp_path)

    text = paths["metrics_json"].read_text()
    assert "NaN" not in text
    document = json.loads(text)
    assert document["miou_unseen"] is None and document["hiou"] is None
    assert document["iou_per_class"]["water"] is None
    assert document["miou"] == pytest.approx(100.0 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert "| water | seen  | absent |" in paths["metrics_md"].read_text()
    assert paths["bev_a_b"].name == "bev_a_b.png"  # the sample name made safe for a file name
    assert _contains(_rgb(paths["bev_a_b"]), class_colors(names)[0])


def test_iou_bars_are_coloured_by_split(tmp_path):
    metrics = {
        "miou": 70.0, "miou_seen": 80.0, "miou_unseen": 60.0, "hiou": 68.6, "points": 10,
        "iou_per_class": {"road": 80.0, "truck": 60.0, "pole": None},
    }
    bars = _packed(_rgb(plot_iou_per_class(metrics, [True, False, True], tmp_path / "bars.png")))
    # Each bar covers thousands of pixels; the legend's patches and the red tick label only a few hundred.
    assert (bars == _packed(_uint8_rgb(SEEN_COLOR))).sum() > 5000
    assert (bars == _packed(_uint8_rgb(UNSEEN_COLOR))).sum() > 5000


def test_bev_image_is_upright_and_shows_the_highest_point_of_each_pixel():
    red, green, blue = [255, 0, 0], [0, 255, 0], [0, 0, 255]
    points = np.array([
        [9.5, 9.5, 0.0],  # front left: top right of the image
        [9.5, 9.5, 2.0],  # above it, drawn
        [-9.5, -9.5, 0.0],  # back right: bottom left
        [30.0, 0.0, 5.0],  # outside the view
        [np.nan, 0.0, 0.0],
    ])
    image = bev_image(points, np.array([red, green, blue, red, red], dtype=np.uint8), view_range=10.0, resolution=1.0)
    assert image.shape == (20, 20, 3)
    np.testing.assert_array_equal(image[0, 19], green)
    np.testing.assert_array_equal(image[19, 0], blue)
    assert (image.reshape(-1, 3) == 255).all(axis=1).sum() == 20 * 20 - 2  # the rest is white background


def test_metrics_are_split_by_whether_a_camera_sees_the_point(segmenter):
    """The in-view / out-of-view metrics are those of the two halves of every sweep, the halves found by
    projecting into each camera (here a front and a rear one)."""
    from clip_seg3d_ros.geometry import project_points
    from clip_seg3d_ros.training.data import SyntheticScenes

    scenes = SyntheticScenes(0, [0, 1], cameras=2)
    samples = [scenes[index] for index in range(2)]
    for sample in samples:  # cropped to keep it quick; the cameras stay
        near = np.linalg.norm(sample.points[:, :2], axis=1) < CROP_RADIUS
        sample.points, sample.labels = sample.points[near], sample.labels[near]
    result = evaluate_segmenter(segmenter, samples, SEEN, num_bev=0, progress=False)
    halves = {True: ([], []), False: ([], [])}
    for sample in samples:
        seen_by = np.zeros(len(sample.points), dtype=bool)
        for frame in sample.cameras:
            seen_by[project_points(sample.points[:, :3], frame.camera).point_indices] = True
        prediction = segmenter(sample.points)[0]
        for view, (predictions, truths) in halves.items():
            predictions.append(prediction[seen_by == view])
            truths.append(sample.labels[seen_by == view])
    in_view, _ = evaluate_labels(*halves[True], CLASS_NAMES, SEEN)
    out_of_view, _ = evaluate_labels(*halves[False], CLASS_NAMES, SEEN)
    assert result.metrics["in_view"] == in_view and result.metrics["out_of_view"] == out_of_view
    # Two 90-degree cameras of four quarters: about half the points each side, and they add up.
    assert 0.3 < in_view["points"] / result.metrics["points"] < 0.7
    assert in_view["points"] + out_of_view["points"] == result.metrics["points"]
    table = format_metrics_table(result.metrics, SEEN)
    assert f"seen by a camera: mIoU {in_view['miou']:.1f}" in table
    assert f"seen by no camera: mIoU {out_of_view['miou']:.1f}" in table


def test_sweeps_without_cameras_have_no_view_split(result):
    assert "in_view" not in result.metrics and "out_of_view" not in result.metrics
    assert "seen by a camera" not in format_metrics_table(result.metrics, SEEN)
