"""Evaluate a checkpoint: ``python training/evaluate.py --checkpoint CKPT --out DIR [--config FILE] [--set k=v]``.

The data (validation split) and the seen / unseen classes come from the training config saved in the
checkpoint, or from ``--config`` / ``--set`` (e.g. to point ``data.root`` at the data set on this machine).
Writes DIR/metrics.json (miou, miou_seen, miou_unseen, hiou, iou_per_class; percent), DIR/metrics.md, a
confusion-matrix PNG, a per-class IoU bar chart and bird's-eye views of predictions next to ground truth.
The work is :func:`clip_seg3d_ros.training.validation.evaluate_checkpoint`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clip_seg3d_ros.checkpoint import CheckpointError
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.sample import DatasetError
from clip_seg3d_ros.training.config import ConfigError
from clip_seg3d_ros.training.validation import evaluate_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json and the plots")
    parser.add_argument("--config", type=Path, help="training config to take the data from (default: the checkpoint's)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--calibration-bias", type=float, default=None,
                        help="lower the seen classes' scores by this cosine (default: the config's eval value)")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = evaluate_checkpoint(args.checkpoint, args.out, args.config, args.overrides, args.device,
                                     args.calibration_bias, progress=not args.quiet)
    # What a user can get wrong, each one line; anything else is a bug and keeps its traceback.
    except (CheckpointError, ConfigError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_metrics_table(result.metrics, result.seen))
    print(f"\nmetrics and plots: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
