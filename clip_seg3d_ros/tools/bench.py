"""Per-stage latency of the node's processing path, one new sweep per run; prints one JSON object.

    python -m clip_seg3d_ros.tools.bench                      # a generated 120,000-point, 64-beam sweep
    python -m clip_seg3d_ros.tools.bench --points 000000.bin  # a KITTI .bin scan (float32 x, y, z, intensity)
    python -m clip_seg3d_ros.tools.bench --checkpoint model.pt --device cuda
    python -m clip_seg3d_ros.tools.bench --device cuda --precision bf16  # the network under bf16 autocast

Stages are the node's own, timed by the same code (:class:`clip_seg3d_ros.runtime.runtime.SegmentRuntime`):
preprocess (validation, NaN filtering, voxelization), inference (MinkUNet, projection, classifier, softmax),
fusion (0 here: no cameras), postprocess (per-point labels and scores back on the host), total.
Every run labels the scan from a new pose (:func:`moved_scans`), as a moving robot sees a new sweep each time:
caches keyed by shape (oneDNN's kernels) must not make repeating one sweep look faster than the node is.
Without a checkpoint the network of ``--preset`` is randomly initialised: latency does not depend on the
weights. ``--precision`` bf16 / fp16 runs the network under autocast (see :class:`Segmenter`); fp16 is
for GPUs (CPUs have no fast float16 matmul). This is a benchmark, not a test: figures depend on the machine,
which the output names.

An unusable input (a missing or malformed scan file, a bad checkpoint, an unknown or absent device) is one
``error: ...`` line on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from clip_seg3d_ros.checkpoint import CheckpointError
from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.models import MINKUNET_PRESETS, ModelConfig, PointSegmentationNet
from clip_seg3d_ros.runtime.runtime import STAGES, SegmentRuntime
from clip_seg3d_ros.runtime.settings import default_threads
from clip_seg3d_ros.segmenter import PRECISIONS, Segmenter
from clip_seg3d_ros.sparse.backend import BACKENDS
from clip_seg3d_ros.sparse.conv import onednn_matmuls
from clip_seg3d_ros.vocabulary import Vocabulary


def generated_sweep(num_points: int = 120_000, seed: int = 0) -> np.ndarray:
    """A 64-beam spinning-LiDAR sweep (HDL-64-like: +2 to -24.8 deg) of a ground plane and obstacles.

    Obstacles are azimuth segments with a random distance and height, so the point density falls with range
    like a real sweep; rays that hit nothing within 100 m give no point. Returns (num_points, 4) float32.
    """
    rng = np.random.default_rng(seed)
    beams, sensor_height, max_range = 64, 1.73, 100.0
    columns = int(np.ceil(1.4 * num_points / beams))  # extra columns make up for rays that hit nothing
    elevation = np.radians(np.linspace(2.0, -24.8, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :]
    segments = 150
    distance = np.repeat(rng.uniform(4.0, 60.0, segments), int(np.ceil(columns / segments)))[None, :columns]
    height = np.repeat(rng.uniform(0.5, 12.0, segments), int(np.ceil(columns / segments)))[None, :columns]

    to_ground = np.where(elevation < 0, sensor_height / np.sin(-np.minimum(elevation, -1e-6)), np.inf)
    to_obstacle = distance / np.cos(elevation)
    obstacle_z = to_obstacle * np.sin(elevation)  # height above the sensor where the ray meets the obstacle
    hits_obstacle = (to_obstacle < to_ground) & (obstacle_z < height - sensor_height)
    ray_range = np.where(hits_obstacle, to_obstacle, to_ground)
    ray_range = ray_range + rng.normal(0.0, 0.02, ray_range.shape)
    direction = np.stack(np.broadcast_arrays(
        np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)), axis=-1)
    points = (ray_range[..., None] * direction).reshape(-1, 3)
    returned = (ray_range < max_range).reshape(-1)
    points = points[returned][:num_points]
    if len(points) < num_points:
        raise ValueError(f"could only generate {len(points)} points")
    intensity = rng.uniform(0.0, 1.0, (num_points, 1))
    return np.hstack([points, intensity]).astype(np.float32)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"cpu: {model}, {torch.get_num_threads()} threads"


def moved_scans(points: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """The scan seen from ``count`` poses: each turned by a random yaw and moved up to 0.5 m in x and y (float32,
    intensity kept). Every pose puts the points in other voxels, so each is a new sweep to the network."""
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(count):
        yaw = rng.uniform(0.0, 2.0 * np.pi)
        rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        moved = points.copy()
        moved[:, :2] = points[:, :2] @ rotation.T + rng.uniform(-0.5, 0.5, 2)
        scans.append(moved.astype(np.float32))
    return scans


def time_stages(processor: SegmentRuntime, points: np.ndarray, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each stage for each of ``repeats`` sweeps after ``warmup`` untimed ones, every run on the
    scan from a new pose."""
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for run, scan in enumerate(moved_scans(points, warmup + repeats)):
        timings = processor.process(scan).timings_ms
        if run >= warmup:
            for stage in STAGES:
                times[stage].append(timings[stage])
    return times


def build_segmenter(args: argparse.Namespace, device: torch.device) -> tuple[Segmenter, str]:
    if args.checkpoint:
        segmenter = Segmenter.from_checkpoint(args.checkpoint, device=device, sparse_backend=args.backend,
                                              precision=args.precision)
        return segmenter, segmenter.config.preset
    torch.manual_seed(0)
    config = ModelConfig.from_preset(args.preset, voxel_size=args.voxel_size)
    vocabulary = Vocabulary(SEMANTICKITTI_CLASSES, torch.randn(len(SEMANTICKITTI_CLASSES), config.embed_dim))
    segmenter = Segmenter(PointSegmentationNet(config), vocabulary, device, args.backend, precision=args.precision)
    return segmenter, args.preset


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def _positive_metres(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of metres > 0, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, help="KITTI .bin scan (default: a generated 120,000-point sweep)")
    parser.add_argument("--num-points", type=_at_least(1), default=120_000, help="size of the generated sweep")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: random weights)")
    parser.add_argument("--preset", default="standard", choices=sorted(MINKUNET_PRESETS))
    parser.add_argument("--voxel-size", type=_positive_metres, default=0.05, help="metres, without --checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="the network's precision: fp32, or bf16 / fp16 autocast")
    parser.add_argument("--num-threads", type=_at_least(0), default=0,
                        help="torch CPU threads, as the node's num_threads (0: half the cores)")
    parser.add_argument("--warmup", type=_at_least(0), default=3)
    parser.add_argument("--repeats", type=_at_least(1), default=20)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark's JSON object; 0, or 1 after one ``error: ...`` line for an unusable input."""
    args = parse_args(argv)
    try:
        run(args)
    except (CheckpointError, OSError, ValueError, EOFError) as error:  # EOFError: np.load of a cut .npy
        detail = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.strerror else error
        print(f"error: {' '.join(str(detail).split())}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> dict:
    """The benchmark of ``args`` (cheap checks first: device, scan file, then the checkpoint)."""
    device = resolve_device(args.device)
    torch.set_num_threads(args.num_threads or default_threads())  # the node's rule, so figures are the node's
    points = read_scan(args.points) if args.points else generated_sweep(args.num_points)
    segmenter, preset = build_segmenter(args, device)
    times = time_stages(SegmentRuntime(segmenter), points, args.warmup, args.repeats)
    result = {
        "device": device_description(device),
        "torch": torch.__version__,
        "sparse_backend": segmenter.sparse_backend,
        # CPU float32 matmuls of the native engine on oneDNN (where a probe found it faster than MKL) or not.
        "onednn_matmuls": device.type == "cpu" and onednn_matmuls(),
        "precision": segmenter.precision,
        "threads": torch.get_num_threads(),
        "preset": preset,
        "points": int(len(points)),
        "voxels": int(len(segmenter.preprocess(points).voxels.coords)),
        "voxel_size": segmenter.config.voxel_size,
        "source": str(args.points) if args.points else "generated sweep, seed 0",
        "sweeps": "a new pose of the scan every run (random yaw, up to 0.5 m shift)",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "ms": {
            stage: {"median": round(float(np.median(t)), 2), "p90": round(float(np.percentile(t, 90)), 2)}
            for stage, t in times.items()
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(main())
