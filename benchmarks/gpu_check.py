"""Everything to measure on a GPU, in one process and one call; prints one JSON object.

    PYTHONPATH=.:$(ls .gpu/transforms3d-*.whl) python3 benchmarks/gpu_check.py --points .gpu/000000.bin

Run from the repository root: ``.`` on ``PYTHONPATH`` is the package's checkout (nothing is installed there).

- ``bench``: the node's per-stage latency (``node_latency.py`` of this folder) on the scan, presets small and
  standard, precisions fp32, bf16 and fp16, sparse backends native (one matmul per kernel offset) and batched
  (one grouped / padded matmul per convolution), random weights (latency does not depend on them);
- ``sparse``, ``sparse_batched``: the native half of the peer benchmark (``sparse_bench.py`` of this folder) on
  CUDA, per op and for the whole network, with either backend;
- ``syncs_per_map``: device-to-host synchronisations while each kernel map of the scan is built (CUDA's sync
  debug mode counts them);
- ``device_vs_cpu``: the small network's output on CUDA against the CPU's (float32, same weights and voxels),
  and float64 gradient checks of the convolution's backward on CUDA;
- ``precision``: per-point label agreement and largest probability difference of bf16 / fp16 against fp32 on
  the scan (random weights: a trained checkpoint is what makes these figures conclusive).

Needs torch, numpy, pyyaml, tqdm and pillow, and transforms3d (imported by the package): where it is not
installed, its pure-Python wheel on ``PYTHONPATH`` serves (Python imports from a wheel as from a zip).

``--device cpu --quick`` is a dry run of the script itself (the small preset, fp32 and bf16, one repeat, no
sync counts), so that a scarce GPU session does not find its bugs; the test suite runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import node_latency
import sparse_bench
from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_CLASSES
from clip_seg3d_ros.models import MINKUNET_PRESETS, MinkUNet, ModelConfig, PointSegmentationNet
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor, sparse_conv3d
from clip_seg3d_ros.vocabulary import Vocabulary
from clip_seg3d_ros.voxelize import voxelize


def printed_json(function, argv: list[str]) -> dict:
    """Run a tool's main/run with ``argv`` and return the JSON object it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        function(argv)
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


def bench_runs(points: str, device: str, quick: bool) -> list[dict]:
    runs = []
    presets, precisions = (("small",), ("fp32", "bf16")) if quick else (("small", "standard"), ("fp32", "bf16", "fp16"))
    repeats = ["--warmup", "0", "--repeats", "1"] if quick else ["--warmup", "3", "--repeats", "20"]
    for preset, precision, backend in itertools.product(presets, precisions, ("native", "batched")):
        args = ["--points", points, "--preset", preset, "--precision", precision, "--device", device,
                "--backend", backend, *repeats]
        result = printed_json(lambda argv: node_latency.run(node_latency.parse_args(argv)), args)
        kept = ("preset", "precision", "voxels", "device", "sparse_backend", "onednn_matmuls")
        runs.append({key: result[key] for key in kept} | {"ms": result["ms"]})
    return runs


def syncs_per_map(points: str, voxel_size: float = 0.05) -> dict:
    xyz = torch.from_numpy(read_scan(points))[:, :3].cuda()
    voxels = voxelize(xyz, xyz, voxel_size)
    cache = CoordinateCache()
    SparseTensor(voxels.feats, voxels.coords, cache=cache)
    counts = {}

    def count(name, build):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build()
        torch.cuda.set_sync_debug_mode("default")
        counts[name] = sum("synchroniz" in str(w.message) for w in caught)

    for stride in (1, 2, 4, 8):
        count(f"coarser level {2 * stride} (unique)", lambda s=stride: cache.coords_at(2 * s))
        count(f"2x2x2 map from {stride}", lambda s=stride: cache.kernel_map(s, 2 * s, 2).by_output())
    for stride in (1, 2, 4, 8, 16):
        count(f"submanifold map at {stride}", lambda s=stride: cache.kernel_map(s, s, 3).by_output())
    return counts


def device_against_cpu(points: str, device: str) -> dict:
    torch.manual_seed(0)
    scan = torch.from_numpy(read_scan(points))
    voxels = voxelize(scan[:, :3], scan, 0.3)
    net = MinkUNet(4, **MINKUNET_PRESETS["small"]).eval()
    with torch.inference_mode():
        on_cpu = net(SparseTensor(voxels.feats, voxels.coords)).feats
        on_device = net.to(device)(SparseTensor(voxels.feats.to(device), voxels.coords.to(device))).feats.cpu()
    gradchecks = {}
    rng = np.random.default_rng(0)
    cells = rng.choice(6**3, 80, replace=False)
    coords = torch.from_numpy(np.stack([np.zeros_like(cells), cells // 36, cells // 6 % 6, cells % 6], 1)).to(device)
    for name, kernel_size, stride, transposed in (("submanifold 3", 3, 1, False), ("strided 2", 2, 2, False),
                                                  ("transposed 2", 2, 2, True)):
        fine = SparseTensor(torch.zeros(len(coords), 1, device=device), coords)
        level = fine.cache.coords_at(stride) if transposed else coords
        feats = torch.randn(len(level), 3, dtype=torch.float64, device=device, requires_grad=True)
        kernel = torch.randn(kernel_size**3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)

        def convolve(feats, kernel, level=level, kernel_size=kernel_size, stride=stride, transposed=transposed,
                     cache=fine.cache):
            x = SparseTensor(feats, level, stride if transposed else 1, cache)
            return sparse_conv3d(x, kernel, kernel_size, stride, transposed).feats

        gradchecks[name] = bool(torch.autograd.gradcheck(convolve, (feats, kernel), eps=1e-6, atol=1e-8))
    return {"small network, 0.3 m: max abs difference": float(f"{(on_device - on_cpu).abs().max():.3g}"),
            "output max abs": float(f"{on_cpu.abs().max():.3g}"), "float64 gradcheck": gradchecks}


def precision_accuracy(points_path: str, device: str, quick: bool) -> list[dict]:
    points = read_scan(points_path)
    rows = []
    for preset in ("small",) if quick else ("small", "standard"):
        for voxel_size in (0.05, 0.3):
            torch.manual_seed(0)
            config = ModelConfig.from_preset(preset, voxel_size=voxel_size)
            net = PointSegmentationNet(config)
            vocabulary = Vocabulary(SEMANTICKITTI_CLASSES, torch.randn(len(SEMANTICKITTI_CLASSES), config.embed_dim))
            reference = Segmenter(net, vocabulary, device)
            prepared = reference.preprocess(points)
            probabilities = torch.softmax(reference.infer_logits(prepared), 1)[prepared.point_voxel]
            for precision in ("bf16",) if quick else ("bf16", "fp16"):
                other = torch.softmax(Segmenter(net, vocabulary, device, precision=precision).infer_logits(prepared),
                                      1)[prepared.point_voxel]
                rows.append({"preset": preset, "voxel_size": voxel_size, "precision": precision,
                             "point_label_agreement": round((other.argmax(1) == probabilities.argmax(1))
                                                            .float().mean().item(), 5),
                             "max_probability_difference": round((other - probabilities).abs().max().item(), 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, required=True, help="the KITTI .bin scan")
    parser.add_argument("--device", default="cuda", help="cuda (the point of it), or cpu for a dry run")
    parser.add_argument("--quick", action="store_true", help="the small preset, one repeat: checks the script")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    points, device, quick = str(args.points), args.device, args.quick
    on_cuda = torch.device(device).type == "cuda"
    result: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if on_cuda else device}
    sparse_args = ["--points", points, "--device", device, "--native-only", "--repeats", "1" if quick else "9"]
    if quick:
        sparse_args += ["--voxel-sizes", "0.3", "--threads", "1"]
    sections = {
        "device_vs_cpu": lambda: device_against_cpu(points, device),
        "syncs_per_map": lambda: syncs_per_map(points) if on_cuda else {"skipped": "counted on CUDA only"},
        "bench": lambda: bench_runs(points, device, quick),
        "sparse": lambda: printed_json(sparse_bench.main, sparse_args),
        "sparse_batched": lambda: printed_json(sparse_bench.main, [*sparse_args, "--backend", "batched"]),
        "precision": lambda: precision_accuracy(points, device, quick),
    }
    for name, section in sections.items():  # one failing section does not cost the others
        try:
            result[name] = section()
        except Exception as error:  # noqa: BLE001 - reported in the JSON, the next section still runs
            result[name] = {"error": f"{type(error).__name__}: {error}"}
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
