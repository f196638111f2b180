"""Evaluate a Segmenter on labelled sweeps and write the report: metrics.json, metrics.md and pictures.

    result = evaluate_segmenter(segmenter, dataset_samples, seen)
    print(format_metrics_table(result.metrics, result.seen))   # from clip_seg3d_ros.evaluation.summary
    paths = write_report(result, "runs/eval")   # metrics.json, metrics.md, confusion_matrix.png, ...

Metrics are computed in the DATASET's class list (the samples' ``class_names``, which the ground truth
indexes), not the segmenter's. The segmenter's predictions are mapped to it by class name
(:func:`clip_seg3d_ros.evaluation.metrics.prediction_lookup`), so a segmenter whose vocabulary is the same
classes in another order, a subset of them, or has extra classes can be evaluated as it is (open-vocabulary
models get their vocabulary swapped freely):
- a dataset class the vocabulary lacks can never be predicted (its IoU is 0 where it occurs; a warning says so);
- a point predicted as a class the dataset lacks counts as a miss of its true class (as an ignored prediction
  does in :mod:`clip_seg3d_ros.evaluation.metrics`);
- no class in common is a ValueError (almost certainly the wrong checkpoint or dataset).

Where the sweeps come with camera frames, the metrics are also split into the points a camera sees and the
points none sees (``in_view`` / ``out_of_view``): CLIP's pseudo labels reach only the first, so the second
measures what the 3D network carries beyond the cameras (self-training's job). A sweep without camera
frames counts wholly as out of view; when no sweep has any, there is no split.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, prediction_lookup, summarize
from clip_seg3d_ros.evaluation.plots import plot_bev_pair, plot_confusion_matrix, plot_iou_per_class
from clip_seg3d_ros.evaluation.summary import format_metrics_table, write_metrics_json
from clip_seg3d_ros.files import write_text_atomically
from clip_seg3d_ros.geometry.camera import seen_by_cameras
from clip_seg3d_ros.sample import Sample
from clip_seg3d_ros.segmenter import Segmenter


@dataclass
class EvaluationResult:
    """What :func:`evaluate_segmenter` measured; :func:`write_report` turns it into files.

    ``metrics``: the :func:`clip_seg3d_ros.evaluation.metrics.summarize` dictionary (percent, NaN where a mean has no
    class), with ``in_view`` / ``out_of_view`` summaries when the sweeps had cameras; ``class_names`` /
    ``seen``: the dataset's classes and their split; ``bev_samples``: for the first few sweeps (name, xyz (N, 3),
    ground truth (N,), prediction (N,) in ``class_names`` indices).
    """

    metrics: dict
    confusion: ConfusionMatrix
    class_names: list[str]
    seen: list[bool]
    bev_samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    num_samples: int = 0


def evaluate_segmenter(
    segmenter: Segmenter,
    samples: Iterable[Sample],
    seen: Sequence[bool],
    *,
    num_bev: int = 3,
    progress: bool = True,
) -> EvaluationResult:
    """Run ``segmenter`` on every sample that has ground truth and accumulate one confusion matrix.

    ``seen`` has one flag per dataset class (the samples' ``class_names``); all samples must share those
    names. Samples without labels are skipped; none with labels is a ValueError. The first ``num_bev`` labelled
    samples are kept for bird's-eye-view pictures.
    """
    seen = [bool(flag) for flag in seen]
    class_names: list[str] | None = None
    confusion: ConfusionMatrix | None = None
    lookup = np.empty(0, dtype=np.int64)
    by_view: dict[bool, ConfusionMatrix] = {}  # True: points a camera sees
    any_camera = False
    bev_samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    evaluated = 0
    for sample in tqdm(samples, desc="evaluating", unit="sweep", disable=not progress):
        if sample.labels is None:
            continue
        if class_names is None:
            class_names = list(sample.class_names)
            if len(seen) != len(class_names):
                raise ValueError(f"{len(seen)} seen flags for the dataset's {len(class_names)} classes")
            lookup = prediction_lookup(segmenter.class_names, class_names)
            unpredictable = [name for name in class_names if name not in segmenter.class_names]
            if unpredictable:
                warnings.warn(
                    f"the segmenter cannot predict the dataset classes {unpredictable}: their IoU is 0 where they "
                    "occur",
                    stacklevel=2,
                )
            confusion = ConfusionMatrix(len(class_names))
            by_view = {True: ConfusionMatrix(len(class_names)), False: ConfusionMatrix(len(class_names))}
        elif list(sample.class_names) != class_names:
            raise ValueError(
                f"sample {sample.name} has classes {list(sample.class_names)}, the samples before it {class_names}"
            )
        labels, _ = segmenter(sample.points)
        prediction = lookup[labels]
        confusion.update(prediction, sample.labels)
        in_view = seen_by_cameras(sample.points[:, :3], [frame.camera for frame in sample.cameras])
        any_camera |= bool(sample.cameras)
        for view, matrix in by_view.items():
            matrix.update(prediction[in_view == view], sample.labels[in_view == view])
        if len(bev_samples) < num_bev:
            bev_samples.append((sample.name, sample.points[:, :3].copy(), sample.labels.copy(), prediction))
        evaluated += 1
    if confusion is None:
        raise ValueError("no sample had ground-truth labels: nothing to evaluate")
    metrics = summarize(confusion, class_names, seen)
    if any_camera:
        metrics["in_view"] = summarize(by_view[True], class_names, seen)
        metrics["out_of_view"] = summarize(by_view[False], class_names, seen)
    return EvaluationResult(
        metrics=metrics,
        confusion=confusion,
        class_names=class_names,
        seen=seen,
        bev_samples=bev_samples,
        num_samples=evaluated,
    )


def _file_stem(name: str) -> str:
    """A sample name made safe as part of a file name ("08/000000" -> "08_000000")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sample"


def write_report(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the evaluation report into ``out_dir`` (created if needed); returns the files by key.

    Keys: ``metrics_json`` (metrics.json), ``metrics_md`` (metrics.md), ``confusion_matrix``
    (confusion_matrix.png), ``iou_per_class`` (iou_per_class.png) and ``bev_<name>`` (bev_<name>.png, one per
    kept sample: prediction next to ground truth).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics_json": write_metrics_json(result.metrics, result.class_names, result.seen,
                                                out_dir / "metrics.json")}
    markdown = out_dir / "metrics.md"
    write_text_atomically(
        markdown,
        f"# Segmentation metrics\n\n{result.num_samples} sweeps; IoU in percent.\n\n"
        f"{format_metrics_table(result.metrics, result.seen)}\n"
    )
    paths["metrics_md"] = markdown
    paths["confusion_matrix"] = plot_confusion_matrix(
        result.confusion, result.class_names, result.seen, out_dir / "confusion_matrix.png"
    )
    paths["iou_per_class"] = plot_iou_per_class(result.metrics, result.seen, out_dir / "iou_per_class.png")
    for name, points, ground_truth, prediction in result.bev_samples:
        key = f"bev_{_file_stem(name)}"
        while key in paths:  # two samples with the same (sanitised) name keep both pictures
            key += "_"
        paths[key] = plot_bev_pair(
            points, ground_truth, prediction, result.class_names, out_dir / f"{key}.png", title=name
        )
    return paths
