"""Write a dataset as a rosbag2 (mcap or sqlite3) that looks like a robot's recording, for replay and the node.

    python -m clip_seg3d_ros.tools.to_bag --dataset synthetic --scenes 20 --out synthetic_bag
    python -m clip_seg3d_ros.tools.to_bag --dataset semantickitti --root KITTI --sequences 08 --out kitti08
    python -m clip_seg3d_ros.tools.to_bag --dataset nuscenes --root NUSCENES --scene-names scene-0061 --out nu
    python -m clip_seg3d_ros.tools.to_bag --dataset folder --root MY_DATA --out mine --storage sqlite3

Topics, stamps and metadata: :mod:`clip_seg3d_ros.ros.bag_writer`, which writes the bag. An unusable input (no
or a wrong dataset root, a malformed dataset file, an existing --out) is one ``error: ...`` line on stderr and
exit status 1, no traceback, and no partial bag left behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from rosbags.rosbag2 import WriterError

from clip_seg3d_ros.files import atomic_outputs, os_error_line, signals_interrupt
from clip_seg3d_ros.ros.bag_reader import BagError, one_line
from clip_seg3d_ros.ros.bag_writer import DEFAULT_BASE_TIME_S, STORAGES, write_bag
from clip_seg3d_ros.sample import Sample


def load_samples(args: argparse.Namespace) -> tuple[Iterable[Sample], int, list[str], int]:
    """The chosen dataset's samples (lazily), their number, class names and the base time for its stamps."""
    base_time = DEFAULT_BASE_TIME_S
    if args.dataset == "synthetic":
        from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig

        world = SyntheticWorld(WorldConfig(seed=args.seed, cameras=() if args.no_images else WorldConfig().cameras))
        count = args.scenes if args.limit is None else min(args.scenes, args.limit)
        return (world.scene(i) for i in range(count)), count, world.class_names, base_time
    if args.root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root")
    if not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root}: no such folder")
    if args.dataset == "semantickitti":
        from clip_seg3d_ros.datasets.semantickitti import SemanticKITTI

        dataset = SemanticKITTI(args.root, args.sequences, with_images=not args.no_images)
    elif args.dataset == "nuscenes":
        from clip_seg3d_ros.datasets.nuscenes import NuScenes

        dataset = NuScenes(args.root, version=args.version, scenes=args.scene_names, with_images=not args.no_images)
        base_time = 0  # nuScenes timestamps are absolute (microseconds since the epoch)
    else:
        from clip_seg3d_ros.datasets.folder import FolderDataset

        dataset = FolderDataset(args.root)
    count = len(dataset) if args.limit is None else min(len(dataset), args.limit)
    samples = (dataset[i] for i in range(count))
    if args.no_images and args.dataset == "folder":
        samples = (Sample(s.name, s.points, s.class_names, s.labels, [], s.timestamp) for s in samples)
    return samples, count, list(dataset.class_names), base_time


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=["synthetic", "semantickitti", "nuscenes", "folder"])
    parser.add_argument("--root", type=Path, help="dataset root (not for synthetic)")
    parser.add_argument("--out", required=True, type=Path, help="the bag folder to create (must not exist)")
    parser.add_argument("--storage", default="mcap", choices=sorted(STORAGES))
    parser.add_argument("--scenes", type=_positive_int, default=10, help="synthetic: number of scenes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: world seed")
    parser.add_argument("--sequences", nargs="+", default=["08"], help="SemanticKITTI sequences (default 08)")
    parser.add_argument("--version", default="v1.0-mini", help="nuScenes version folder (default v1.0-mini)")
    parser.add_argument("--scene-names", nargs="+", help="nuScenes scene names (default: all)")
    parser.add_argument("--limit", type=_positive_int, help="write at most this many sweeps")
    parser.add_argument("--no-images", action="store_true", help="LiDAR and ground truth only")
    parser.add_argument("--lidar-frame", default="lidar", help="frame_id of the clouds (default lidar)")
    parser.add_argument("--base-time", type=int, help="seconds added to the data's timestamps (default "
                        f"{DEFAULT_BASE_TIME_S}; 0 for nuScenes, whose times are absolute)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between sweeps without times")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The bag appears whole or not at all: an error, Ctrl-C or SIGTERM leaves nothing that blocks the next run.
        with signals_interrupt(), atomic_outputs([args.out]) as (out,):
            samples, count, class_names, base_time = load_samples(args)
            summary = write_bag(
                samples, out, storage=args.storage, lidar_frame=args.lidar_frame,
                base_time_s=base_time if args.base_time is None else args.base_time, period_s=args.period,
                class_names=class_names, total=count,
            )
    except OSError as error:  # no space, read-only, permission, not a directory, exists already
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 1
    except (ValueError, WriterError, BagError, yaml.YAMLError) as error:  # JSON errors are ValueErrors
        # The datasets parse their YAML from text, so PyYAML's message names no file: name the root at least.
        where = f"{args.root}: invalid YAML: " if isinstance(error, yaml.YAMLError) else ""
        print(f"error: {where}{one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no bag was written", file=sys.stderr)
        return 130
    topics = ", ".join(f"{topic} {count}" for topic, count in sorted(summary.messages.items()))
    print(f"wrote {len(summary.sweep_stamps)} sweeps to {args.out}: {topics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
