"""The synthetic-world ablation: ``python training/benchmark.py [--out runs/benchmark] [--set k=v ...]``.

Trains (a) seen ground truth only, (b) + pseudo labels, (c) + MCFA semantic, (d) + MCFA spatial,
(e) + self-training, and the annotation-free full method, each in --out/<variant>, and prints the table of
the README (also written to --out/benchmark.md and --out/benchmark.json). See
clip_seg3d_ros/training/benchmark.py for what each variant is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clip_seg3d_ros.training.benchmark import VARIANTS, format_table, run_benchmark
from clip_seg3d_ros.training.config import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"


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
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"per-variant runs, metrics and plots: {args.out}/<variant>/eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
