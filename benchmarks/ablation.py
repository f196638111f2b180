"""The synthetic-world ablation: ``python benchmarks/ablation.py [--config F] [--seeds 0 1 2] [--out runs/benchmark]``.

What each part of the method adds, each variant trained with each seed in --out/seed_<seed>/<variant>:

    (a) seen ground truth only (no CLIP image features at all: the classifier is still CLIP's text)
    (b) + projected 2D pseudo labels of the unseen classes
    (c) + MCFA semantic alignment
    (d) + MCFA spatial alignment
    (e) + self-training: the full method
    teacher: the 2D teacher's own labels, for the points a camera sees (what the 3D network inherits)
    annotation-free: the full method without any 3D label
    e_*: self-training ablations, one change each against (e)

(a)-(d) train as many epochs as (e) does in total (its CLIP-guided epochs plus its self-training epochs),
so that (e) - (d) measures self-training, not a longer schedule. Prints the table of docs/training.md: mean and
spread over the seeds, all points and split by whether a camera sees them (also written to --out/benchmark.md
and --out/benchmark.json). The front-camera benchmark (``make benchmark-front``) is this one with
``--set data.synthetic_cameras=1`` (FRONT_CAMERA).

Not a script of the package: it composes the library's training phases (clip_seg3d_ros/training/loop.py),
preparing each setting's data once and branching the self-training variants from (d)'s model.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import Checkpoint
from clip_seg3d_ros.evaluation.metrics import ConfusionMatrix, summarize
from clip_seg3d_ros.evaluation.summary import json_compatible
from clip_seg3d_ros.training.checkpoints import LAST_CHECKPOINT, ResumeError, checkpoint_with_training_state
from clip_seg3d_ros.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from clip_seg3d_ros.training.data import RunData, class_flags, prepare_data
from clip_seg3d_ros.training.distributed import ProcessGroup
from clip_seg3d_ros.training.loop import (
    EXPECTED_ERRORS,
    continue_from,
    finish,
    open_run_folder,
    set_up_process,
    start_run,
    train_epochs,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"
FRONT_CAMERA = ("data.synthetic_cameras=1",)  # one 90-degree front camera, as SemanticKITTI (make benchmark-front)
RUN_RESULT = "benchmark_run.json"  # a finished run's metrics, time and epochs, in its folder

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
MAIN_VARIANTS = ("a", "b", "c", "d", "e", "annotation_free")  # docs/training.md's ablation; the others on request
SELF_TRAINING_VARIANTS = tuple(variant for variant in VARIANTS if variant.startswith("e"))


def run_benchmark(out_dir: str | Path, config_path: str | Path | None = None, overrides: Sequence[str] = (),
                  variants: Sequence[str] = MAIN_VARIANTS, seeds: Sequence[int] | None = None,
                  progress: bool = True) -> dict:
    """Train every variant with every seed into ``out_dir/seed_<seed>/<variant>``; returns
    {"seeds": {seed: {variant: metrics}}, "teacher": metrics} (see write_results). ``seeds``: default the
    config's own seed.

    Variants with the same setting share the prepared data (scenes and teacher outputs are made once: the seed
    sets the initial weights and the augmentations, not the world). The self-training variants start from (d)'s
    model after the CLIP-guided epochs when (d) of that seed ran first (now or earlier, into the same
    folder): the same model they would train from scratch, a quarter of the time. Every variant's config is
    made first, so that one that cannot run is reported before any training. A run that finished before into
    the same folder with the same config (its RUN_RESULT is there) is not trained again: an interrupted
    benchmark goes on where it stopped, and benchmarks run side by side into one folder are summed up by
    running it once more.
    """
    out_dir = Path(out_dir)
    base = load_config(config_path, list(overrides))
    seeds = [base.seed] if seeds is None else list(seeds)
    in_order = [variant for variant in VARIANTS if variant in variants]  # (d) before the variants branching from it
    configs = {(seed, variant): variant_config(base, [*overrides, f"seed={seed}"], config_path, variant)
               for seed in seeds for variant in in_order}
    device, group = set_up_process(base)  # the variants differ in neither compute settings nor device
    shared: dict[str, RunData] = {}
    results: dict = {"seeds": {seed: {} for seed in seeds}}
    for (seed, variant), config in configs.items():
        if config.setting not in shared:
            shared[config.setting] = prepare_data(config, device)
        run_dir = out_dir / f"seed_{seed}" / variant
        if (run_dir / RUN_RESULT).exists():  # trained before, into this folder: the benchmark resumes
            if load_config(run_dir / "config.yaml") != config:
                raise ConfigError(f"{run_dir} holds a run of another config: choose another --out")
            results["seeds"][seed][variant] = json.loads((run_dir / RUN_RESULT).read_text())
            continue
        branch = out_dir / f"seed_{seed}" / "d" / kept_checkpoint(base.schedule.epochs)
        start_from = branch if variant in SELF_TRAINING_VARIANTS and branch.exists() else None
        started = time.perf_counter()
        keep_after_epochs = base.schedule.epochs if variant == "d" else None
        metrics = train_variant(config, run_dir, shared[config.setting], device, group, progress,
                                start_from=start_from, keep_after_epochs=keep_after_epochs)
        metrics["seconds"] = time.perf_counter() - started
        metrics["epochs"] = config.total_epochs
        metrics["trained_epochs"] = config.total_epochs - (base.schedule.epochs if start_from else 0)
        results["seeds"][seed][variant] = metrics
        (run_dir / RUN_RESULT).write_text(json.dumps(json_compatible(metrics), indent=1, allow_nan=False))
    if "zero_shot" in shared:
        results["teacher"] = teacher_reference(shared["zero_shot"], base.data.unseen_classes)
    write_results(results, out_dir)
    return results


def train_variant(config: TrainConfig, run_dir: Path, data: RunData, device: torch.device, group: ProcessGroup,
                  progress: bool = True, start_from: Path | None = None, keep_after_epochs: int | None = None) -> dict:
    """One variant's run, from the library's phases as ``train()`` runs them, on data prepared once.

    ``start_from``: a kept checkpoint of another run (:func:`branch_point`) to go on from instead of epoch 0;
    ``keep_after_epochs``: keep a copy of last.pt after that many epochs (:func:`kept_checkpoint`), the branch
    point of the self-training variants. Returns the final metrics.
    """
    run = start_run(config, run_dir, data, device, group, progress)
    if start_from is not None:
        continue_from(run, branch_point(start_from, config))
    open_run_folder(run)
    if keep_after_epochs is not None:
        train_epochs(run, until=keep_after_epochs)
        shutil.copyfile(run_dir / LAST_CHECKPOINT, run_dir / kept_checkpoint(keep_after_epochs))
    train_epochs(run, until=config.total_epochs)
    return finish(run)


def kept_checkpoint(epochs: int) -> str:
    """The name of the copy of last.pt after ``epochs`` epochs that (d) keeps for the self-training variants."""
    return f"after_{epochs}_epochs.pt"


def branch_point(path: Path, config: TrainConfig) -> Checkpoint:
    """A last.pt of ANOTHER run that a run of ``config`` may start from, as if it had trained those epochs itself.

    That holds when the other run had the same config but for the schedule, the same number of epochs in all
    (the learning rate decays over the whole run) and was saved within this run's CLIP-guided epochs: up to
    there the two runs take the same steps (every random choice comes from (seed, epoch, sweep)). So a
    self-training variant can start from (d)'s model after the CLIP-guided epochs instead of training them
    again; a test checks that it ends with the model it would have trained from scratch.
    """
    saved = checkpoint_with_training_state(path)
    other = config_from_dict(saved.train_config)
    if replace(other, schedule=config.schedule) != config or other.total_epochs != config.total_epochs:
        raise ResumeError(f"cannot start from {path}: its run had another config or another number of epochs")
    if saved.training_state["epoch"] + 1 > config.schedule.epochs:
        raise ResumeError(f"cannot start from {path}: saved after epoch {saved.training_state['epoch'] + 1}, "
                          f"past this run's {config.schedule.epochs} CLIP-guided epochs")
    return saved


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
    {variant: metrics}}, "teacher": metrics}, as :func:`run_benchmark` makes it."""
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
    """The Markdown tables of docs/training.md: per variant the mean ± standard deviation over the seeds of mIoU seen /
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--set", dest="overrides", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="applied to every variant, e.g. --set data.synthetic_train_scenes=24")
    parser.add_argument("--variants", nargs="*", default=list(MAIN_VARIANTS), choices=list(VARIANTS),
                        help="default: %(default)s; the others are self-training ablations (docs/training.md)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="train every variant with each of these seeds (default: the config's)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        results = run_benchmark(args.out, args.config, args.overrides, args.variants, args.seeds,
                                progress=not args.quiet)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"per-run metrics and plots: {args.out}/seed_<seed>/<variant>/eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
