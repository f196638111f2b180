"""Training-step time, peak memory and loss curve of the MinkUNet with CPU matmuls on oneDNN against MKL only.

    python benchmarks/train_step_bench.py                      # a generated 120,000-point sweep
    python benchmarks/train_step_bench.py --points 000000.bin  # a KITTI .bin scan

Two copies of the same randomly initialised network (``--preset``, ``--seed``, with a linear head) train side
by side, each step on a new sweep (the scan from a new pose, the same for both): a step is forward,
cross-entropy against each voxel's height band (a target that holds across poses), backward and SGD. One copy
runs with ``set_cpu_matmul("onednn")`` (float32 matmuls big enough go to oneDNN, see
:func:`clip_seg3d_ros.sparse.conv.set_cpu_matmul`), the other with ``set_cpu_matmul("mkl")`` (every matmul on
``mm``), their steps interleaved so that both see the same machine load; ``onednn_matmuls`` per engine in the
output says whether oneDNN really ran (a PyTorch build without oneDNN's linear keeps MKL), and ``auto_picks``
which of the two this CPU's ``auto`` rule would take. Per engine: the median step time, the peak memory growth
of a step (the process's high-water mark VmHWM, reset before each step through ``/proc/self/clear_refs``; null
where that is unavailable), and the loss of every step; and the largest difference between the two loss curves.
The process's choice is ``auto`` again afterwards. Prints one JSON object. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.models import MINKUNET_PRESETS, MinkUNet
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor
from clip_seg3d_ros.sparse import conv as sparse_conv
from clip_seg3d_ros.voxelize import voxelize
from scans import device_description, generated_sweep, moved_scans

ENGINES = ("onednn", "mkl")  # cpu_matmul choices, timed against each other
NUM_CLASSES = 20


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_memory() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure(points: torch.Tensor, voxel_size: float, preset: str, steps: int, seed: int) -> dict:
    # Every step trains on a new sweep (the scan from a new pose), as training does: one sweep repeated would
    # let shape-keyed caches (oneDNN's kernels) flatter the oneDNN engine.
    bands = torch.linspace(points[:, 2].min().item(), points[:, 2].max().item(), NUM_CLASSES + 1)[1:-1]
    sweeps = []
    for scan in moved_scans(points.numpy(), steps, seed):
        voxels = voxelize(torch.from_numpy(scan[:, :3]), torch.from_numpy(scan), voxel_size)
        sweeps.append((voxels, torch.bucketize(voxels.feats[:, 2].contiguous(), bands)))
    nets, optimizers = {}, {}
    for engine in ENGINES:
        torch.manual_seed(seed)
        backbone = MinkUNet(points.shape[1], **MINKUNET_PRESETS[preset])
        nets[engine] = torch.nn.ModuleDict({"backbone": backbone,
                                            "head": torch.nn.Linear(backbone.out_channels, NUM_CLASSES)})
        optimizers[engine] = torch.optim.SGD(nets[engine].parameters(), lr=0.01, momentum=0.9)
    times = {engine: [] for engine in ENGINES}
    peaks = {engine: [] for engine in ENGINES}
    losses = {engine: [] for engine in ENGINES}
    onednn_ran = {}
    try:
        for voxels, labels in sweeps:
            for engine in ENGINES:
                sparse_conv.set_cpu_matmul(engine)
                onednn_ran[engine] = sparse_conv.onednn_matmuls()
                resettable = _reset_peak_memory()
                rss_before = _status_kib("VmRSS")
                start = time.perf_counter()
                x = SparseTensor(feats=voxels.feats, coords=voxels.coords, cache=CoordinateCache())
                net = nets[engine]
                loss = F.cross_entropy(net["head"](net["backbone"](x).feats), labels)
                optimizers[engine].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[engine].step()
                times[engine].append(time.perf_counter() - start)
                high_water = _status_kib("VmHWM")
                if resettable and rss_before is not None and high_water is not None:
                    peaks[engine].append((high_water - rss_before) / 1024)
                losses[engine].append(loss.item())
    finally:
        sparse_conv.set_cpu_matmul("auto")
    first, second = ENGINES
    return {
        "voxels_median": statistics.median(len(voxels.coords) for voxels, _ in sweeps),
        "engines": {engine: {
            "onednn_matmuls": onednn_ran[engine],
            # The first step builds the workspace and warms the allocator: left out of the time and memory.
            "step_ms_median": round(statistics.median(times[engine][1:]) * 1e3, 1),
            "step_ms_range": [round(min(times[engine][1:]) * 1e3, 1), round(max(times[engine][1:]) * 1e3, 1)],
            "peak_memory_growth_mib": round(statistics.median(peaks[engine][1:]), 1) if peaks[engine] else None,
            "losses": losses[engine],
        } for engine in ENGINES},
        "loss_curve_max_abs_difference": max(abs(a - b) for a, b in zip(losses[first], losses[second],
                                                                         strict=True)),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, help="KITTI .bin scan (default: a generated 120,000-point sweep)")
    parser.add_argument("--voxel-size", type=float, default=0.3)
    parser.add_argument("--preset", choices=sorted(MINKUNET_PRESETS), default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is a warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    points = torch.from_numpy(read_scan(args.points) if args.points else generated_sweep())
    description = device_description(torch.device("cpu"))
    torch.set_num_threads(args.threads)
    result = measure(points, args.voxel_size, args.preset, args.steps, args.seed)
    print(json.dumps({"device": description, "threads": args.threads, "torch": torch.__version__,
                      "auto_picks": "onednn" if sparse_conv.onednn_matmuls() else "mkl",
                      "source": str(args.points) if args.points else "generated sweep, seed 0",
                      "voxel_size": args.voxel_size, "preset": args.preset, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
