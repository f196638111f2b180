"""The synthetic-world ablation: ``python training/benchmark.py [--out runs/benchmark] [--set k=v ...]``.

Trains (a) seen ground truth only, (b) + pseudo labels, (c) + MCFA semantic, (d) + MCFA spatial,
(e) + self-training, and the annotation-free full method, each in --out/<variant>, and prints the table of
the README (also written to --out/benchmark.md and --out/benchmark.json). See
clip_seg3d_ros/training/benchmark.py for what each variant is.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# training/train.py: Python puts this script's folder on sys.path
from train import DEFAULT_CONFIG, EXPECTED_ERRORS, train

from clip_seg3d_ros.training.benchmark import VARIANTS, format_table, teacher_reference, variant_config, write_results
from clip_seg3d_ros.training.config import load_config
from clip_seg3d_ros.training.data import RunData, prepare_data
from clip_seg3d_ros.training.distributed import process_device


def run_benchmark(out_dir: str | Path, config_path: str | Path | None = None, overrides: Sequence[str] = (),
                  variants: Sequence[str] = tuple(VARIANTS), progress: bool = True) -> dict:
    """Train every variant into ``out_dir/<variant>`` and return {variant: metrics}, plus "teacher".

    Variants with the same setting share the prepared data (scenes and teacher outputs are made once). Every
    variant's config is made first, so that one that cannot run is reported before any training.
    """
    out_dir = Path(out_dir)
    base = load_config(config_path, list(overrides))
    configs = {variant: variant_config(base, overrides, config_path, variant) for variant in variants}
    shared: dict[str, RunData] = {}
    results: dict[str, dict] = {}
    for variant, config in configs.items():
        if config.setting not in shared:
            shared[config.setting] = prepare_data(config, process_device(config.device))
        started = time.perf_counter()
        metrics = train(config, out_dir / variant, data=shared[config.setting], progress=progress)
        metrics["seconds"] = time.perf_counter() - started
        metrics["epochs"] = config.total_epochs
        results[variant] = metrics
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
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        results = run_benchmark(args.out, args.config, args.overrides, args.variants, progress=not args.quiet)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"per-variant runs, metrics and plots: {args.out}/<variant>/eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
