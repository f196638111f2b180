"""Per-stage latency of the node's processing path, one new sweep per run; prints one JSON object.

    python benchmarks/node_latency.py                      # a generated 120,000-point, 64-beam sweep
    python benchmarks/node_latency.py --points 000000.bin  # a KITTI .bin scan (float32 x, y, z, intensity)
    python benchmarks/node_latency.py --checkpoint model.pt --device cuda
    python benchmarks/node_latency.py --device cuda --precision bf16  # the network under bf16 autocast
    python benchmarks/node_latency.py --cpu-matmul mkl     # the CPU's large matmuls on MKL (default: auto)

Stages are the node's own, timed by the same code (:class:`clip_seg3d_ros.runtime.runtime.SegmentRuntime`):
preprocess (validation, NaN filtering, voxelization), inference (MinkUNet, projection, classifier, softmax),
fusion (0 here: no cameras), postprocess (per-point labels and scores back on the host), total.
Every run labels the scan from a new pose (:func:`scans.moved_scans`), as a moving robot sees a new sweep each
time: caches keyed by shape (oneDNN's kernels) must not make repeating one sweep look faster than the node is.
Without a checkpoint the network of ``--preset`` is randomly initialised: latency does not depend on the
weights. ``--precision`` bf16 / fp16 runs the network under autocast (see :class:`Segmenter`); fp16 is
for GPUs (CPUs have no fast float16 matmul). ``--cpu-matmul`` is the node's ``cpu_matmul`` choice
(:func:`clip_seg3d_ros.sparse.conv.set_cpu_matmul`); ``onednn_matmuls`` in the output says which path ran.
This is a benchmark, not a test: figures depend on the machine, which the output names.

An unusable input (a missing or malformed scan file, a bad checkpoint, an unknown or absent device) is one
``error: ...`` line on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
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
from clip_seg3d_ros.sparse.conv import CPU_MATMULS, onednn_matmuls, set_cpu_matmul
from clip_seg3d_ros.vocabulary import Vocabulary
from scans import device_description, generated_sweep, moved_scans


def time_stages(runtime: SegmentRuntime, points: np.ndarray, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each stage for each of ``repeats`` sweeps after ``warmup`` untimed ones, every run on the
    scan from a new pose."""
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for run, scan in enumerate(moved_scans(points, warmup + repeats)):
        timings = runtime.process(scan).timings_ms
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
    parser.add_argument("--cpu-matmul", default="auto", choices=CPU_MATMULS,
                        help="the CPU's large float32 matmuls: auto (by the CPU), onednn or mkl")
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
    set_cpu_matmul(args.cpu_matmul)
    torch.set_num_threads(args.num_threads or default_threads())  # the node's rule, so figures are the node's
    points = read_scan(args.points) if args.points else generated_sweep(args.num_points)
    segmenter, preset = build_segmenter(args, device)
    times = time_stages(SegmentRuntime(segmenter), points, args.warmup, args.repeats)
    result = {
        "device": device_description(device),
        "torch": torch.__version__,
        "sparse_backend": segmenter.sparse_backend,
        # The cpu_matmul choice, and whether it put the native engine's large CPU float32 matmuls on oneDNN.
        "cpu_matmul": args.cpu_matmul,
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
