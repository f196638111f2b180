"""The native sparse convolution against spconv, side by side in one process; prints one JSON object.

    pip install spconv==2.3.8            # optional (the CPU wheel from PyPI); not a dependency of the package
    python benchmarks/sparse_bench.py --points 000000.bin   # a KITTI .bin scan
    python benchmarks/sparse_bench.py --points 000000.bin --cpu-matmul mkl   # large CPU matmuls on MKL
    python benchmarks/sparse_bench.py --device cuda --native-only [--backend batched]

For each voxel size and thread count: the scan's voxels and their coarser levels (strides 1 to 16), the
same weights in both engines, and per op (kernel-map build, submanifold 3x3x3 convs at a few widths and
levels, the 2x2x2 stride-2 conv, its transposed conv) and for the whole MinkUNet forward the median of
``--repeats`` runs. The whole network labels a new sweep at every run (the scan from a new pose, the same
poses in both engines); its outputs are compared on the scan itself. Native and spconv runs are interleaved
(their order alternating), so that both see the same load on a shared machine; ``ratio`` is native / spconv,
and each time comes with its range.

Outputs are compared at 1 thread only: spconv's CPU wheel scatters with a thread race, so its results at 2
threads can be wrong. Without spconv (or with ``--native-only``, or on CUDA, where the PyPI wheel does not
run) only the native times are printed. ``--cpu-matmul`` (auto, onednn or mkl) chooses where the native engine's
large CPU float32 matmuls run (:func:`clip_seg3d_ros.sparse.conv.set_cpu_matmul`); ``onednn_matmuls`` in the
output says which path ran. This is a benchmark, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.models import MINKUNET_PRESETS, MinkUNet
from clip_seg3d_ros.models.minkunet import ResidualBlock
from clip_seg3d_ros.sparse import CoordinateCache, SparseBatchNorm, SparseConv3d, SparseReLU, SparseTensor
from clip_seg3d_ros.sparse.conv import CPU_MATMULS, onednn_matmuls, set_cpu_matmul, sparse_conv3d
from clip_seg3d_ros.sparse.coords import CoordinateIndex
from clip_seg3d_ros.voxelize import voxelize
from scans import device_description, generated_sweep, moved_scans

LEVELS = (1, 2, 4, 8, 16)  # the MinkUNet's strides
SUBMANIFOLD_OPS = ((1, 16), (1, 32), (2, 32), (4, 64), (8, 128), (16, 256))  # (stride, channels)
DOWN_OPS = ((1, 32), (4, 64))  # 2x2x2 stride-2 conv from this stride, channels in and out
UP_OPS = ((2, 32), (8, 64))  # its transposed conv from this stride back to half of it


def spconv_module():
    try:
        import spconv.pytorch as spc
    except ImportError:
        return None
    return spc


# -- the scan's levels in both engines -------------------------------------------------------------------------------
class Levels:
    """The voxels of every level, as our coordinates and as spconv's indices (the same voxels, in the same order).

    spconv indexes voxels from 0 on each level's own grid: index = (coordinate - origin) / stride, with the
    origin a multiple of the coarsest stride so that flooring gives the same coarse voxels in both engines.
    """

    def __init__(self, points: torch.Tensor, voxel_size: float, device: torch.device) -> None:
        voxels = voxelize(points[:, :3], points[:, :3], voxel_size)
        cache = CoordinateCache()
        SparseTensor(feats=voxels.feats, coords=voxels.coords, cache=cache)
        self.coords = {stride: cache.coords_at(stride).to(device) for stride in LEVELS}
        top = LEVELS[-1]
        self.origin = torch.div(voxels.coords[:, 1:].min(0).values, top, rounding_mode="floor") * top
        extent = voxels.coords[:, 1:].max(0).values - self.origin + 1
        self.shape = (torch.div(extent + top - 1, top, rounding_mode="floor") * top).tolist()
        self.device = device

    def spconv_indices(self, stride: int) -> torch.Tensor:
        coords = self.coords[stride].cpu()
        grid = torch.div(coords[:, 1:] - self.origin, stride, rounding_mode="floor")
        return torch.cat([coords[:, :1], grid], dim=1).int().contiguous()

    def spconv_shape(self, stride: int) -> list[int]:
        return [size // stride for size in self.shape]

    def native_rows(self, spconv_indices: torch.Tensor, stride: int) -> torch.Tensor:
        """Our row of each voxel that spconv lists (spconv orders the outputs of a strided conv its own way)."""
        coords = spconv_indices.long()
        coords = torch.cat([coords[:, :1], coords[:, 1:] * stride + self.origin], dim=1)
        return CoordinateIndex(self.coords[stride].cpu()).lookup(coords)


def spconv_weight(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Our (K, C_in, C_out) kernel in spconv's KRSC layout (C_out, kx, ky, kz, C_in) for indices [b, x, y, z].

    Our offsets run x fastest for an odd kernel and z fastest for an even one (torchsparse's order).
    """
    c_in, c_out = kernel.shape[-2:]
    k = kernel_size
    if k % 2 == 1:
        return kernel.reshape(k, k, k, c_in, c_out).permute(4, 2, 1, 0, 3).contiguous()
    return kernel.reshape(k, k, k, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()


# -- the MinkUNet in spconv, with our network's weights -------------------------------------------------------------
def spconv_minkunet(net: MinkUNet, spc) -> nn.Module:
    """Our MinkUNet rebuilt from spconv modules with the same weights. Kernel maps are shared by indice key,
    as ours are by stride: ``subm{s}`` for the 3x3x3 convs at stride s, ``down{s}`` for the stride-2 conv from
    s and the transposed conv back to s."""

    def convert(module: nn.Module, level: int) -> nn.Module:
        if isinstance(module, SparseConv3d):
            c_in, c_out, k = module.in_channels, module.out_channels, module.kernel_size
            if k == 1:
                conv = spc.SubMConv3d(c_in, c_out, 1, bias=False)
                weight = module.kernel.detach().reshape(conv.weight.shape)  # its 1x1 path reads (C_in, C_out)
            elif module.transposed:
                conv = spc.SparseInverseConv3d(c_in, c_out, k, indice_key=f"down{level // 2}", bias=False)
                weight = spconv_weight(module.kernel.detach(), k)
            elif module.stride > 1:
                conv = spc.SparseConv3d(c_in, c_out, k, module.stride, indice_key=f"down{level}", bias=False)
                weight = spconv_weight(module.kernel.detach(), k)
            else:
                conv = spc.SubMConv3d(c_in, c_out, k, indice_key=f"subm{level}", bias=False)
                weight = spconv_weight(module.kernel.detach(), k)
            conv.weight.data.copy_(weight)
            return conv
        if isinstance(module, SparseBatchNorm):
            norm = nn.BatchNorm1d(module.num_features)
            norm.load_state_dict(module.state_dict())
            return norm
        if isinstance(module, SparseReLU):
            return nn.ReLU()
        if isinstance(module, ResidualBlock):
            return SpconvResidual(convert(module.main, level), convert(module.shortcut, level))
        if isinstance(module, nn.Identity):
            return module
        assert isinstance(module, nn.Sequential), type(module)
        return spc.SparseSequential(*[convert(child, level) for child in module])

    class SpconvResidual(spc.SparseModule):
        def __init__(self, main: nn.Module, shortcut: nn.Module) -> None:
            super().__init__()
            self.main, self.shortcut = main, shortcut

        def forward(self, x):
            main = self.main(x)
            shortcut = x.features if isinstance(self.shortcut, nn.Identity) else self.shortcut(x).features
            return main.replace_feature(torch.relu(main.features + shortcut))

    class SpconvMinkUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = convert(net.stem, 1)
            self.encoder = nn.ModuleList(
                spc.SparseSequential(convert(stage[0], 2**i), convert(stage[1], 2 ** (i + 1)))
                for i, stage in enumerate(net.encoder))
            self.up = nn.ModuleList(convert(up, 2 ** (4 - i)) for i, up in enumerate(net.up))
            self.decoder = nn.ModuleList(convert(stage, 2 ** (3 - i)) for i, stage in enumerate(net.decoder))

        def forward(self, x):
            skips = [self.stem(x)]
            for stage in self.encoder:
                skips.append(stage(skips[-1]))
            y = skips.pop()
            for up, decode in zip(self.up, self.decoder, strict=True):
                y = up(y)
                y = decode(y.replace_feature(torch.cat([y.features, skips.pop().features], dim=1)))
            return y

    return SpconvMinkUNet().eval()


# -- the ops ----------------------------------------------------------------------------------------------------------
Op = tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor] | None, Callable[[torch.Tensor], torch.Tensor]]
"""(native run, spconv run or None, spconv output -> rows in the native output's order)."""


def build_ops(levels: Levels, preset: str, spc, seed: int = 0, backend: str = "native",
              network_sweeps: list[Levels] | None = None) -> dict[str, Op]:
    """The ops on ``levels``; the whole network takes the next of ``network_sweeps`` (default: ``levels``) at
    every call, in each engine: a new sweep per timed run, the same ones for both engines."""
    generator = torch.Generator().manual_seed(seed)
    device = levels.device

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def native_cache(*strides: int) -> CoordinateCache:
        cache = CoordinateCache(backend)
        cache.coords.update({s: levels.coords[s] for s in strides})
        return cache

    same_order = lambda out: out  # noqa: E731
    ops: dict[str, Op] = {}
    if spc is not None:
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops as spconv_ops

        def spconv_pairs(stride: int, kernel_size: int, subm: bool):
            conv_stride = 1 if subm else 2
            return spconv_ops.get_indice_pairs(
                levels.spconv_indices(stride), 1, levels.spconv_shape(stride), ConvAlgo.Native, [kernel_size] * 3,
                [conv_stride] * 3, [1 if subm else 0] * 3, [1] * 3, [0] * 3, subm, False)

    # Kernel-map builds: from the level's coordinates to the pairs (and the coarser level's voxels).
    for stride in LEVELS:
        def native(stride=stride):
            return native_cache(stride).kernel_map(stride, stride, 3).rows_in
        spconv_run = None if spc is None else (lambda stride=stride: spconv_pairs(stride, 3, True)[1])
        ops[f"map submanifold 3x3x3, stride {stride}"] = (native, spconv_run, None)
    for stride in LEVELS[:-1]:
        def native(stride=stride):
            cache = native_cache(stride)
            cache.coords_at(2 * stride)
            return cache.kernel_map(stride, 2 * stride, 2).rows_in
        spconv_run = None if spc is None else (lambda stride=stride: spconv_pairs(stride, 2, False)[1])
        ops[f"map 2x2x2 stride 2, stride {stride}"] = (native, spconv_run, None)

    # Convolutions with their maps built beforehand.
    for stride, channels in SUBMANIFOLD_OPS:
        x = SparseTensor(randn(len(levels.coords[stride]), channels), levels.coords[stride], stride,
                         native_cache(stride))
        kernel = randn(27, channels, channels) / (27 * channels) ** 0.5
        x.cache.kernel_map(stride, stride, 3)
        native = lambda x=x, kernel=kernel: sparse_conv3d(x, kernel, 3).feats  # noqa: E731
        spconv_run = None
        if spc is not None:
            _, pairs, counts = spconv_pairs(stride, 3, True)
            weight, n = spconv_weight(kernel, 3), len(levels.coords[stride])
            spconv_run = (lambda x=x, weight=weight, pairs=pairs, counts=counts, n=n:  # noqa: E731
                          spconv_ops.indice_conv(x.feats, weight, pairs, counts, n, False, True))
        ops[f"submanifold 3x3x3, {channels} ch, stride {stride}"] = (native, spconv_run, same_order)

    for stride, channels in DOWN_OPS:
        cache = native_cache(stride)
        x = SparseTensor(randn(len(levels.coords[stride]), channels), levels.coords[stride], stride, cache)
        kernel = randn(8, channels, channels) / (8 * channels) ** 0.5
        cache.coords_at(2 * stride)
        cache.kernel_map(stride, 2 * stride, 2)
        native = lambda x=x, kernel=kernel: sparse_conv3d(x, kernel, 2, stride=2).feats  # noqa: E731
        spconv_run, reorder = None, None
        if spc is not None:
            out_indices, pairs, counts = spconv_pairs(stride, 2, False)
            weight, n = spconv_weight(kernel, 2), len(out_indices)
            spconv_run = (lambda x=x, weight=weight, pairs=pairs, counts=counts, n=n:  # noqa: E731
                          spconv_ops.indice_conv(x.feats, weight, pairs, counts, n, False, False))
            rows = levels.native_rows(out_indices, 2 * stride).to(device)
            reorder = lambda out, rows=rows: out.new_empty(out.shape).index_copy_(0, rows, out)  # noqa: E731
        ops[f"2x2x2 stride 2, {channels} ch, stride {stride}"] = (native, spconv_run, reorder)

    for stride, channels in UP_OPS:
        fine = stride // 2
        cache = native_cache(fine)
        cache.coords_at(stride)
        cache.kernel_map(fine, stride, 2)
        feats = randn(len(levels.coords[stride]), channels)
        x = SparseTensor(feats, levels.coords[stride], stride, cache)
        kernel = randn(8, channels, channels) / (8 * channels) ** 0.5
        native = lambda x=x, kernel=kernel: sparse_conv3d(x, kernel, 2, stride=2, transposed=True).feats  # noqa: E731
        spconv_run = None
        if spc is not None:
            out_indices, pairs, counts = spconv_pairs(fine, 2, False)
            spconv_feats = feats[levels.native_rows(out_indices, stride).to(device)].contiguous()
            weight, n = spconv_weight(kernel, 2), len(levels.coords[fine])
            spconv_run = (lambda f=spconv_feats, weight=weight, pairs=pairs, counts=counts, n=n:  # noqa: E731
                          spconv_ops.indice_conv(f, weight, pairs, counts, n, True, False))
        ops[f"transposed 2x2x2, {channels} ch, stride {stride} to {fine}"] = (native, spconv_run, same_order)

    # The whole network, kernel maps included (a new sweep every run).
    torch.manual_seed(seed)
    net = MinkUNet(4, **MINKUNET_PRESETS[preset]).to(device).eval()
    with torch.no_grad():  # BatchNorm statistics away from 0 / 1, so that a wrong layer would show
        for module in net.modules():
            if isinstance(module, SparseBatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    sweeps = [(randn(len(sweep.coords[1]), 4), sweep) for sweep in network_sweeps or [levels]]
    native_sweeps = itertools.cycle(sweeps)

    def native() -> torch.Tensor:
        feats, sweep = next(native_sweeps)
        return net(SparseTensor(feats, sweep.coords[1], cache=CoordinateCache(backend))).feats

    spconv_run = None
    if spc is not None:
        spconv_net = spconv_minkunet(net, spc)
        spconv_sweeps = itertools.cycle([(feats, sweep.spconv_indices(1), sweep.spconv_shape(1))
                                         for feats, sweep in sweeps])

        def spconv_run() -> torch.Tensor:
            feats, indices, shape = next(spconv_sweeps)
            return spconv_net(spc.SparseConvTensor(feats, indices, shape, 1)).features

    ops[f"MinkUNet {preset} forward"] = (native, spconv_run, same_order)
    return ops


# -- timing -----------------------------------------------------------------------------------------------------------
def timed(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000.0


def measure(ops: dict[str, Op], repeats: int, device: torch.device, compare: bool) -> dict[str, dict]:
    """Per op: median and range of each engine's times, the ratio, and (``compare``) how far the outputs differ."""
    results: dict[str, dict] = {}
    with torch.inference_mode():
        for name, (native, spconv_run, reorder) in ops.items():  # warm-up, and the outputs compared
            native_out = native()
            result: dict = {}
            if spconv_run is not None:
                spconv_out = spconv_run()
                if compare and reorder is not None:
                    difference = (native_out.float() - reorder(spconv_out).float()).abs().max().item()
                    result["max_abs_difference"] = float(f"{difference:.3g}")
                    result["output_max_abs"] = float(f"{native_out.abs().max().item():.3g}")
            results[name] = result
        times = {name: {"native": [], "spconv": []} for name in ops}
        for repeat in range(repeats):
            for name, (native, spconv_run, _) in ops.items():
                runs = [("native", native)] + ([("spconv", spconv_run)] if spconv_run is not None else [])
                for engine, run in runs if repeat % 2 == 0 else runs[::-1]:
                    times[name][engine].append(timed(run, device))
    for name, engine_times in times.items():
        for engine, values in engine_times.items():
            if values:
                results[name][f"{engine}_ms"] = round(statistics.median(values), 2)
                results[name][f"{engine}_range_ms"] = [round(min(values), 2), round(max(values), 2)]
        if engine_times["spconv"]:
            results[name]["ratio"] = round(results[name]["native_ms"] / results[name]["spconv_ms"], 3)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, help="KITTI .bin scan (default: a generated 120,000-point sweep)")
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[0.05, 0.3])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads (ignored on CUDA)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--preset", default="small", choices=sorted(MINKUNET_PRESETS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (spconv's PyPI wheel: CPU only)")
    parser.add_argument("--native-only", action="store_true", help="time the native engine alone")
    parser.add_argument("--backend", default="native", choices=["native", "batched"],
                        help="the native engine's form: one matmul per offset, or one call per convolution")
    parser.add_argument("--cpu-matmul", default="auto", choices=CPU_MATMULS,
                        help="the native engine's large CPU float32 matmuls: auto (by the CPU), onednn or mkl")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_cpu_matmul(args.cpu_matmul)
    spc = None if args.native_only or device.type != "cpu" else spconv_module()
    points = torch.from_numpy(read_scan(args.points) if args.points else generated_sweep())
    load_before = os.getloadavg()
    description = device_description(device)  # before the thread counts change
    settings, ratios = {}, {}
    thread_counts = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    for voxel_size in args.voxel_sizes:
        levels = Levels(points, voxel_size, device)
        # The network labels a new sweep at every timed run (the scan from new poses), as on a moving robot:
        # repeating one sweep would let shape-keyed caches (oneDNN's kernels) flatter the native engine.
        moved = [Levels(torch.from_numpy(scan), voxel_size, device)
                 for scan in moved_scans(points.numpy(), args.repeats)]
        ops = build_ops(levels, args.preset, spc, backend=args.backend, network_sweeps=[levels, *moved])
        for threads in thread_counts:
            torch.set_num_threads(threads)
            label = f"{voxel_size:g} m, " + (f"{threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu"
                                              else device.type)
            results = measure(ops, args.repeats, device, compare=threads == 1)
            settings[label] = {"voxels": {str(s): len(levels.coords[s]) for s in LEVELS}, "ops": results}
            for name, result in results.items():
                if "ratio" in result:
                    ratios.setdefault(name, {})[label] = result["ratio"]
    print(json.dumps({
        "device": description,
        "torch": torch.__version__,
        "spconv": None if spc is None else _spconv_version(),
        "backend": args.backend,
        "cpu_matmul": args.cpu_matmul,
        "onednn_matmuls": device.type == "cpu" and onednn_matmuls(),
        "points": int(len(points)),
        "source": str(args.points) if args.points else "generated sweep, seed 0",
        "repeats": args.repeats,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": "ratio = native / spconv (medians, interleaved runs); outputs compared at 1 thread only: spconv's "
                "CPU scatter has a thread race with more threads",
        "ratios": ratios,
        "settings": settings,
    }))
    return 0


def _spconv_version() -> str:
    from importlib.metadata import version

    return version("spconv")


if __name__ == "__main__":
    sys.exit(main())
