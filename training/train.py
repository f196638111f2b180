"""Train the 3D network by distilling CLIP: ``python training/train.py [--config FILE] [--out DIR] [--set k=v ...]``.

With no arguments it trains on the synthetic world (config/train/synthetic.yaml) with the small network,
a few minutes on a laptop CPU. ``--set`` changes any setting of the config, e.g. ``--set seed=1``,
``--set setting=annotation_free`` or ``--set data.synthetic_cameras=1`` (front camera only). Under
``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel. ``--resume``
continues the run in ``--out`` after its last finished epoch.

The run itself, top to bottom, is :func:`clip_seg3d_ros.training.loop.train`. Every expected failure (see
EXPECTED_ERRORS there) is one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clip_seg3d_ros.files import os_error_line, signals_interrupt
from clip_seg3d_ros.training.config import load_config
from clip_seg3d_ros.training.loop import EXPECTED_ERRORS, train

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic"), help="run folder (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set schedule.epochs=4 optim.lr=0.001")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        with signals_interrupt():  # SIGTERM, like Ctrl-C, lets a checkpoint being written clean up after itself
            metrics = train(config, args.out, resume=args.resume, progress=not args.quiet)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # no space, read-only, permission, not a directory
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; continue with --resume --out {args.out}", file=sys.stderr)
        return 130
    if metrics:
        print(f"\nmodel: {args.out / 'model.pt'}\nmetrics and plots: {args.out / 'eval'}\n"
              f"TensorBoard: tensorboard --logdir {args.out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
