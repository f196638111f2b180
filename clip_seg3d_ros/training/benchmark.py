"""The ablation benchmark on the synthetic world: what each part of the method adds.

    (a) seen ground truth only (no CLIP image features at all: the classifier is still CLIP's text)
    (b) + projected 2D pseudo labels of the unseen classes
    (c) + MCFA semantic alignment
    (d) + MCFA spatial alignment
    (e) + self-training: the full method
    teacher: the 2D teacher's own labels, for the points a camera sees (what the 3D network inherits)
    annotation-free: the full method without any 3D label
    e_*: self-training ablations, one change each against (e)

(a)-(d) train as many epochs as (e) does in total (its CLIP-guided epochs plus its self-training epochs),
so that (e) - (d) measures self-training, not a longer schedule. ``training/benchmark.py`` trains them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, summarize
from clip_seg3d_ros.evaluation.summary import json_compatible
from clip_seg3d_ros.training.config import ConfigError, TrainConfig, load_config
from clip_seg3d_ros.training.data import RunData, class_flags

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "a": ("(a) seen ground truth only", ["loss.use_pseudo_labels=false", "loss.semantic_weight=0",
                                         "loss.spatial_weight=0"]),
    "b": ("(b) + projected pseudo labels", ["loss.semantic_weight=0", "loss.spatial_weight=0"]),
    "c": ("(c) + MCFA semantic", ["loss.spatial_weight=0"]),
    "d": ("(d) + MCFA spatial", []),
    "e": ("(e) + self-training (full method)", []),
    "annotation_free": ("annotation-free (full method, no 3D label)", ["setting=annotation_free"]),
    # Self-training ablations: one change each against (e) as configured, with the same number of epochs.
    "e_no_segments": ("(e) without spreading labels over segments", ["schedule.self_training_segment_voxel=0"]),
    "e_segments_0.1": ("(e), segment support 0.1 instead of 0.3", ["schedule.self_training_segment_support=0.1"]),
}
MAIN_VARIANTS = ("a", "b", "c", "d", "e", "annotation_free")  # the README's ablation; the others on request
SELF_TRAINING_VARIANTS = tuple(variant for variant in VARIANTS if variant.startswith("e"))


def variant_config(base: TrainConfig, base_overrides: Sequence[str], config_path: str | Path | None,
                   variant: str) -> TrainConfig:
    """The config of one variant: the base config plus the variant's switches."""
    _, switches = VARIANTS[variant]
    if variant in ("a", "b", "c", "d"):
        switches = [*switches, f"schedule.epochs={base.total_epochs}", "schedule.self_training_rounds=0"]
    elif base.schedule.self_training_rounds == 0:
        raise ConfigError(f"variant {variant} needs self-training: set schedule.self_training_rounds >= 1")
    config = load_config(config_path, [*base_overrides, *switches])
    if config.total_epochs != base.total_epochs:
        raise ConfigError(f"variant {variant} would train {config.total_epochs} epochs, the others "
                          f"{base.total_epochs}: compare like with like")
    return config


def teacher_reference(data: RunData, unseen: Sequence[str]) -> dict:
    """mIoU of the teacher's own labels (all classes, after its thresholds) on the camera-visible points of
    the training sweeps; a visible point the teacher leaves unlabelled counts as a miss."""
    class_names = data.vocabulary.names
    confusion = ConfusionMatrix(len(class_names))
    for index in range(len(data.train)):
        sample = data.train[index]
        if sample.truth is None:
            continue
        visible = sample.point_cell >= 0
        confusion.update(sample.cell_labels[sample.point_cell[visible]], sample.truth[visible])
    return summarize(confusion, class_names, class_flags(class_names, unseen))


def write_results(results: dict, out_dir: str | Path) -> None:
    """``out_dir``/benchmark.json (strict JSON: a metric that is NaN, e.g. a class absent from the validation
    scenes, is null) and ``out_dir``/benchmark.md (:func:`format_table`). ``results``: {"seeds": {seed:
    {variant: metrics}}, "teacher": metrics}, as ``training/benchmark.py`` makes it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(json_compatible(results), indent=1, allow_nan=False))
    (out_dir / "benchmark.md").write_text(format_table(results))


# The table's columns: (title, view or None for all points, metric).
COLUMNS = [("mIoU seen", None, "miou_seen"), ("mIoU unseen", None, "miou_unseen"), ("hIoU", None, "hiou"),
           ("unseen, camera-seen points", "in_view", "miou_unseen"),
           ("unseen, points no camera sees", "out_of_view", "miou_unseen"),
           ("hIoU, points no camera sees", "out_of_view", "hiou")]


def metric(metrics: dict, view: str | None, key: str) -> float:
    """One figure of a run's metrics, NaN where it has none (a NaN mean; no camera split)."""
    scope = metrics if view is None else metrics.get(view, {})
    value = scope.get(key)
    return float("nan") if value is None else float(value)


def spread(values: Sequence[float]) -> str:
    """"mean" for one value, "mean ± sample standard deviation" for several; NaN values are left out."""
    values = np.asarray([value for value in values if not math.isnan(value)])
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def format_table(results: dict) -> str:
    """The Markdown tables of the README: per variant the mean ± standard deviation over the seeds of mIoU seen /
    unseen / hIoU, over all points and over the points a camera sees / none sees; then unseen mIoU per seed."""
    runs = results.get("seeds", {})
    seeds = list(runs)
    lines = [f"{len(seeds)} seed(s): {', '.join(str(seed) for seed in seeds)}; mean ± standard deviation over them; "
             "time per run",
             "",
             "| variant | " + " | ".join(title for title, _, _ in COLUMNS) + " | epochs | time (s) |",
             "| --- |" + " ---: |" * (len(COLUMNS) + 2)]
    for variant, (title, _) in VARIANTS.items():
        done = [runs[seed][variant] for seed in seeds if variant in runs[seed]]
        if not done:
            continue
        cells = [spread([metric(m, view, key) for m in done]) for _, view, key in COLUMNS]
        trained = done[0].get("trained_epochs", done[0]["epochs"])
        epochs = f"{done[0]['epochs']}" + ("" if trained == done[0]["epochs"] else f" ({trained} own)")
        seconds = np.mean([m["seconds"] for m in done])
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {epochs} | {seconds:.0f} |")
    if "teacher" in results:
        m = results["teacher"]
        lines.append(f"| teacher's 2D labels on camera-visible training points | {m['miou_seen']:.1f} | "
                     f"{m['miou_unseen']:.1f} | {m['hiou']:.1f} |" + " |" * (len(COLUMNS) - 1))
    if len(seeds) > 1:
        lines += ["", "Unseen mIoU (all points / points no camera sees) per seed:", "",
                  "| variant | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
                  "| --- |" + " ---: |" * len(seeds)]
        for variant, (title, _) in VARIANTS.items():
            if any(variant in runs[seed] for seed in seeds):
                lines.append(f"| {title} | " + " | ".join(
                    "" if variant not in runs[seed] else
                    f"{metric(runs[seed][variant], None, 'miou_unseen'):.1f} / "
                    f"{metric(runs[seed][variant], 'out_of_view', 'miou_unseen'):.1f}" for seed in seeds) + " |")
    return "\n".join(lines) + "\n"
