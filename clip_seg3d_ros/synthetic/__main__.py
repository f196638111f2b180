"""Draw one synthetic scene for a visual check.

    python -m clip_seg3d_ros.synthetic --out scene.png [--seed N] [--index I]
"""

from __future__ import annotations

import argparse
import time

from clip_seg3d_ros.synthetic.visualize import plot_sample
from clip_seg3d_ros.synthetic.world import SyntheticWorld, WorldConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clip_seg3d_ros.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--index", type=int, default=0, help="scene index within the world")
    args = parser.parse_args(argv)

    world = SyntheticWorld(WorldConfig(seed=args.seed))
    start = time.perf_counter()
    sample = world.scene(args.index)
    seconds = time.perf_counter() - start
    plot_sample(sample, args.out)
    sizes = ", ".join(f"{frame.camera.name} {frame.camera.width}x{frame.camera.height}" for frame in sample.cameras)
    print(f"{sample.name}: {len(sample.points):,} points, cameras {sizes}, made in {seconds:.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
