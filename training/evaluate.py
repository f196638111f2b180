"""Evaluate a checkpoint: ``python training/evaluate.py --checkpoint CKPT --out DIR [--config FILE] [--set k=v]``.

The data (validation split) and the seen / unseen classes come from the training config saved in the
checkpoint, or from ``--config`` / ``--set`` (e.g. to point ``data.root`` at the data set on this machine).
Writes DIR/metrics.json (miou, miou_seen, miou_unseen, hiou, iou_per_class; percent), DIR/metrics.md, a
confusion-matrix PNG, a per-class IoU bar chart and bird's-eye views of predictions next to ground truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clip_seg3d_ros.checkpoint import CheckpointError, load_checkpoint
from clip_seg3d_ros.evaluation.report import evaluate_segmenter, write_report
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.sample import DatasetError
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.training.config import ConfigError, config_from_dict, load_config
from clip_seg3d_ros.training.data import build_split, class_flags
from clip_seg3d_ros.training.distributed import process_device


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
        # Cheap before expensive: the device, the checkpoint's fields and config, the validation sweeps; only
        # then the model is built and run.
        device = process_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint)
        if args.config is not None:
            config = load_config(args.config, args.overrides)
        else:
            config = config_from_dict(checkpoint.train_config, args.overrides)
        samples = build_split(config.data, "val")  # with the images: their cameras split the metrics by view
        seen = class_flags(samples.class_names, config.data.unseen_classes)
        bias = config.eval.calibration_bias if args.calibration_bias is None else args.calibration_bias
        segmenter = Segmenter.from_checkpoint(args.checkpoint, device=device, calibration_bias=bias)
        result = evaluate_segmenter(segmenter, samples, seen, num_bev=config.eval.num_bev, progress=not args.quiet)
        write_report(result, args.out)
    # What a user can get wrong, each one line; anything else is a bug and keeps its traceback.
    except (CheckpointError, ConfigError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_metrics_table(result.metrics, result.seen))
    print(f"\nmetrics and plots: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
