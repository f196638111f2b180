"""The ablation benchmark on the synthetic world: what each part of the method adds.

    (a) seen ground truth only (no CLIP image features at all: the classifier is still CLIP's text)
    (b) + projected 2D pseudo labels of the unseen classes
    (c) + MCFA semantic alignment
    (d) + MCFA spatial alignment
    (e) + self-training: the full method
    teacher: the 2D teacher's own labels, for the points a camera sees (what the 3D network inherits)
    annotation-free: the full method without any 3D label

(a)-(d) train as many epochs as (e) does in total (its CLIP-guided epochs plus its self-training epochs),
so that (e) - (d) measures self-training, not a longer schedule. ``training/benchmark.py`` trains them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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
}


def variant_config(base: TrainConfig, base_overrides: Sequence[str], config_path: str | Path | None,
                   variant: str) -> TrainConfig:
    """The config of one variant: the base config plus the variant's switches."""
    _, switches = VARIANTS[variant]
    if variant in ("a", "b", "c", "d"):
        switches = [*switches, f"schedule.epochs={base.total_epochs}", "schedule.self_training_rounds=0"]
    elif base.schedule.self_training_rounds == 0:
        raise ConfigError(f"variant {variant} needs self-training: set schedule.self_training_rounds >= 1")
    return load_config(config_path, [*base_overrides, *switches])


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
    scenes, is null) and ``out_dir``/benchmark.md (:func:`format_table`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(json_compatible(results), indent=1, allow_nan=False))
    (out_dir / "benchmark.md").write_text(format_table(results))


def format_table(results: dict) -> str:
    """The Markdown table of the README: mIoU seen / unseen / hIoU (and all classes) per variant."""
    lines = ["| variant | mIoU seen | mIoU unseen | hIoU | mIoU all | epochs | train + eval time (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant, (title, _) in VARIANTS.items():
        if variant in results:
            m = results[variant]
            lines.append(f"| {title} | {m['miou_seen']:.1f} | {m['miou_unseen']:.1f} | {m['hiou']:.1f} | "
                         f"{m['miou']:.1f} | {m['epochs']} | {m['seconds']:.0f} |")
    if "teacher" in results:
        m = results["teacher"]
        lines.append(f"| teacher's 2D labels on camera-visible training points | {m['miou_seen']:.1f} | "
                     f"{m['miou_unseen']:.1f} | {m['hiou']:.1f} | {m['miou']:.1f} | | |")
    return "\n".join(lines) + "\n"
