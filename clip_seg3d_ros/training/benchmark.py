"""The ablation benchmark on the synthetic world: what each part of the method adds.

    (a) seen ground truth only (no CLIP image features at all: the classifier is still CLIP's text)
    (b) + projected 2D pseudo labels of the unseen classes
    (c) + MCFA semantic alignment
    (d) + MCFA spatial alignment
    (e) + self-training: the full method
    teacher: the 2D teacher's own labels, for the points a camera sees (what the 3D network inherits)
    annotation-free: the full method without any 3D label

(a)-(d) train as many epochs as (e) does in total (its CLIP-guided epochs plus its self-training epochs),
so that (e) - (d) measures self-training, not a longer schedule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, summarize
from clip_seg3d_ros.training.config import TrainConfig, load_config
from clip_seg3d_ros.training.data import class_flags
from clip_seg3d_ros.training.trainer import RunData, prepare_data, train

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
        raise ValueError(f"variant {variant} needs self-training: set schedule.self_training_rounds >= 1")
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


def run_benchmark(out_dir: str | Path, config_path: str | Path | None = None, overrides: Sequence[str] = (),
                  variants: Sequence[str] = tuple(VARIANTS), progress: bool = True) -> dict:
    """Train every variant into ``out_dir/<variant>`` and return {variant: metrics}, plus "teacher".

    Variants with the same setting share the prepared data (scenes and teacher outputs are made once).
    """
    out_dir = Path(out_dir)
    base = load_config(config_path, list(overrides))
    shared: dict[str, RunData] = {}
    results: dict[str, dict] = {}
    for variant in variants:
        config = variant_config(base, overrides, config_path, variant)
        if config.setting not in shared:
            shared[config.setting] = prepare_data(config, resolve_device(config.device))
        started = time.perf_counter()
        metrics = train(config, out_dir / variant, data=shared[config.setting], progress=progress)
        metrics["seconds"] = time.perf_counter() - started
        metrics["epochs"] = config.total_epochs
        results[variant] = metrics
    if "zero_shot" in shared:
        results["teacher"] = teacher_reference(shared["zero_shot"], base.data.unseen_classes)
    (out_dir / "benchmark.json").write_text(json.dumps(results, indent=1, default=_json_float))
    (out_dir / "benchmark.md").write_text(format_table(results))
    return results


def _json_float(value):
    return None if isinstance(value, float) and np.isnan(value) else value


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
