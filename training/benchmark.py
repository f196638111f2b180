"""The synthetic-world ablation: ``python training/benchmark.py [--config F] [--seeds 0 1 2] [--out runs/benchmark]``.

Trains (a) seen ground truth only, (b) + pseudo labels, (c) + MCFA semantic, (d) + MCFA spatial,
(e) + self-training, and the annotation-free full method (and on request the self-training ablations), each
with each seed in --out/seed_<seed>/<variant>, and prints the table of the README: mean and spread over the
seeds, all points and split by whether a camera sees them (also written to --out/benchmark.md and
--out/benchmark.json). See clip_seg3d_ros/training/benchmark.py for what each variant is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# training/train.py: Python puts this script's folder on sys.path
from train import DEFAULT_CONFIG, EXPECTED_ERRORS, train

from clip_seg3d_ros.evaluation.summary import json_compatible
from clip_seg3d_ros.training.benchmark import (
    MAIN_VARIANTS,
    SELF_TRAINING_VARIANTS,
    VARIANTS,
    format_table,
    teacher_reference,
    variant_config,
    write_results,
)
from clip_seg3d_ros.training.config import ConfigError, load_config
from clip_seg3d_ros.training.data import RunData, prepare_data
from clip_seg3d_ros.training.distributed import process_device
from clip_seg3d_ros.training.steps import kept_checkpoint

RUN_RESULT = "benchmark_run.json"  # a finished run's metrics, time and epochs, in its folder


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
    shared: dict[str, RunData] = {}
    results: dict = {"seeds": {seed: {} for seed in seeds}}
    for (seed, variant), config in configs.items():
        if config.setting not in shared:
            shared[config.setting] = prepare_data(config, process_device(config.device))
        run_dir = out_dir / f"seed_{seed}" / variant
        if (run_dir / RUN_RESULT).exists():  # trained before, into this folder: the benchmark resumes
            if load_config(run_dir / "config.yaml") != config:
                raise ConfigError(f"{run_dir} holds a run of another config: choose another --out")
            results["seeds"][seed][variant] = json.loads((run_dir / RUN_RESULT).read_text())
            continue
        branch = out_dir / f"seed_{seed}" / "d" / kept_checkpoint(base.schedule.epochs)
        start_from = branch if variant in SELF_TRAINING_VARIANTS and branch.exists() else None
        started = time.perf_counter()
        metrics = train(config, run_dir, data=shared[config.setting], progress=progress, start_from=start_from,
                        keep_after_epochs=base.schedule.epochs if variant == "d" else None)
        metrics["seconds"] = time.perf_counter() - started
        metrics["epochs"] = config.total_epochs
        metrics["trained_epochs"] = config.total_epochs - (base.schedule.epochs if start_from else 0)
        results["seeds"][seed][variant] = metrics
        (run_dir / RUN_RESULT).write_text(json.dumps(json_compatible(metrics), indent=1, allow_nan=False))
    if "zero_shot" in shared:
        results["teacher"] = teacher_reference(shared["zero_shot"], base.data.unseen_classes)
    write_results(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="applied to every variant, e.g. --set data.synthetic_train_scenes=24")
    parser.add_argument("--variants", nargs="*", default=list(MAIN_VARIANTS), choices=list(VARIANTS),
                        help="default: %(default)s; the others are self-training ablations (README)")
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
