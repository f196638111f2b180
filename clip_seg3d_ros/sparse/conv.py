"""Sparse 3D convolution: submanifold, strided (downsampling) and transposed (upsampling).

The native kernel, per kernel offset, gathers the offset's input rows (``index_select``) and multiplies them
by the offset's weight into one preallocated buffer of products; one ``embedding_bag`` then sums each output
row's products (a scatter-add done as a gather-sum). It runs on CPU and CUDA, with the kernel maps of
:mod:`clip_seg3d_ros.sparse.kernel_map`. Its backward (:class:`KernelMapConvolution`) is the same with the
pairs swapped, plus one matmul per offset for the weight gradient: autograd records one node per convolution
instead of a graph over the offsets' gathers and matmuls, and keeps only the input and the weight for the
backward, not the gathered rows.
"""

from __future__ import annotations

import functools
import math
import re

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from clip_seg3d_ros.compute_choices import CPU_MATMULS
from clip_seg3d_ros.sparse.kernel_map import KernelMap
from clip_seg3d_ros.sparse.tensor import SparseTensor, Workspace


def sparse_conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    kernel_size: int,
    stride: int = 1,
    transposed: bool = False,
    bias: torch.Tensor | None = None,
) -> SparseTensor:
    """Convolve ``x`` with ``weight`` of shape (K, C_in, C_out), or (C_in, C_out) for a 1x1x1 kernel at stride 1.

    - stride 1, not transposed: submanifold convolution, the output has the input's coordinates;
    - stride s > 1: output coordinates are the input's floored to multiples of ``x.stride * s``;
    - transposed with stride s: the output takes the coordinates already recorded at ``x.stride // s``
      (the matching encoder level), so a UNet's skip connections line up row for row.
    """
    if x.cache.backend == "torchsparse":
        return _torchsparse_conv3d(x, weight, kernel_size, stride, transposed, bias)
    batched = x.cache.backend == "batched"
    if kernel_size == 1 and stride == 1:
        out = x.with_feats(x.feats @ weight.reshape(weight.shape[-2], weight.shape[-1]))
    elif transposed:
        if x.stride % stride != 0 or (x.stride // stride) not in x.cache.coords:
            known = sorted(x.cache.coords)
            raise ValueError(
                f"transposed convolution from stride {x.stride} by {stride} needs the coordinates of stride "
                f"{x.stride // stride}; this pass only has strides {known}"
            )
        out_stride = x.stride // stride
        kernel_map = x.cache.kernel_map(out_stride, x.stride, kernel_size).transposed()
        feats = _convolve(x.feats, weight, kernel_map, x.cache.workspace, batched)
        out = SparseTensor(feats=feats, coords=x.cache.coords[out_stride], stride=out_stride, cache=x.cache)
    else:
        out_stride = x.stride * stride
        kernel_map = x.cache.kernel_map(x.stride, out_stride, kernel_size)
        feats = _convolve(x.feats, weight, kernel_map, x.cache.workspace, batched)
        out = SparseTensor(feats=feats, coords=x.cache.coords_at(out_stride), stride=out_stride, cache=x.cache)
    if bias is not None:
        out = out.with_feats(out.feats + bias)
    return out


def _convolve(feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap, workspace: Workspace,
              batched: bool) -> torch.Tensor:
    # Under autocast the matmuls run in its dtype; so do the gather and the scatter-add (one dtype throughout).
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        feats, weight = feats.to(dtype), weight.to(dtype)
    return KernelMapConvolution.apply(feats, weight, kernel_map, workspace, batched)


def gather_matmul_scatter(feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap,
                          workspace: Workspace, batched: bool = False) -> torch.Tensor:
    """(num_outputs, C_out): every output row's sum over its pairs of ``feats[input row] @ weight[offset]``.

    ``feats`` (num_inputs, C_in), ``weight`` (K, C_in, C_out); no autograd (see :class:`KernelMapConvolution`).
    ``batched``: all offsets' matmuls in one call (:func:`batched_products`) instead of one call per offset.
    """
    identity = kernel_map.identity_offset
    if not kernel_map.segments:
        return feats @ weight[identity] if identity is not None else feats.new_zeros(kernel_map.num_outputs,
                                                                                       weight.shape[-1])
    order, output_starts = kernel_map.by_output()
    onednn_rows = onednn_min_rows(feats, *weight.shape[-2:])  # MKL below this many rows
    if batched:
        products, order = batched_products(feats, weight, kernel_map)
    else:
        # Each offset's input rows are gathered into one small buffer that stays in cache for its matmul; the
        # products of all offsets go side by side into one preallocated buffer.
        # The gather buffer has room for oneDNN's rounded-up row counts (see onednn_matmul_into).
        offsets, sizes, segment_rows_in, _ = kernel_map.segment_rows()
        gathered, products = workspace.take(feats, (onednn_call_rows(max(sizes)), weight.shape[-2]),
                                            (sum(sizes), weight.shape[-1]))
        weights = weight.unbind(0)
        for offset, size, rows_in, product in zip(offsets, sizes, segment_rows_in, products.split(sizes),
                                                  strict=True):
            rows = torch.index_select(feats, 0, rows_in, out=gathered[:size])
            if size >= onednn_rows:
                onednn_matmul_into(gathered, weights[offset], product)
            else:
                torch.mm(rows, weights[offset], out=product)
    # The scatter-add as a gather-sum: embedding_bag sums each output's products (its pairs ordered by output
    # row) several times faster than index_add_, which adds element by element.
    out = F.embedding_bag(order, products, output_starts, mode="sum")
    if identity is None:
        return out
    if len(feats) >= onednn_rows:
        return onednn_matmul_into(feats, weight[identity], out, accumulate=True)
    return out.addmm_(feats, weight[identity])


ONEDNN_MIN_MULTIPLY_ADDS = 1 << 21
"""A CPU float32 convolution matmul runs on oneDNN from this many multiply-adds (rows x C_in x C_out) per
thread, twice that with fewer than 32 channels in or out; below, on MKL (``mm``): a oneDNN call costs more than
``mm`` and copies its product, which only a matmul large enough for oneDNN's faster kernels (on the CPUs
:func:`cpu_prefers_onednn` names) repays. The weight gradient's matmuls (channels x pairs x channels) stay on
``mm``, where oneDNN is not faster at this network's widths. The measurements behind the threshold are in
docs/benchmarks.md."""

ONEDNN_BYTES_PER_CALL = 1 << 21
"""oneDNN's matmul has no ``out=``: it is called on row blocks whose products take at most 2 MB, so that each
fresh product is a block the allocator just freed (still in cache) rather than new pages from the system
(which cost more to fault in than the matmul)."""


_cpu_matmul = "auto"


def set_cpu_matmul(choice: str) -> None:
    """Choose the CPU matmul path for this process (one of :data:`CPU_MATMULS`); ValueError otherwise."""
    global _cpu_matmul
    if choice not in CPU_MATMULS:
        raise ValueError(f"cpu_matmul must be one of {list(CPU_MATMULS)}, got {choice!r}")
    _cpu_matmul = choice


def onednn_matmuls() -> bool:
    """Whether large CPU float32 matmuls go to oneDNN in this process: the ``cpu_matmul`` choice, ``auto`` by
    :func:`cpu_prefers_onednn`. Never a timing: the same settings run the same code however busy the CPU is."""
    if _cpu_matmul == "mkl" or not onednn_linear_available():
        return False
    return _cpu_matmul == "onednn" or cpu_prefers_onednn()


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this PyTorch build has oneDNN and its linear op (a private op: a build without it keeps MKL)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def cpu_prefers_onednn(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """The ``auto`` rule: oneDNN on a CPU that is not Intel's and has AVX-512 (``avx512f``), else MKL.

    MKL's sgemm takes its AVX2 code on CPUs other than Intel's, while oneDNN picks its kernels by the
    instructions the CPU has; on an Intel CPU both use the same ones and oneDNN's extra call and copy only cost.
    Read from ``/proc/cpuinfo`` (no such file, as off Linux: MKL). The measurements behind it are in
    docs/benchmarks.md.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return False
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return bool(vendor and flags) and vendor.group(1) != "GenuineIntel" and "avx512f" in flags.group(1).split()


def onednn_min_rows(like: torch.Tensor, c_in: int, c_out: int) -> float:
    """Fewest rows from which ``(rows, c_in) @ (c_in, c_out)`` goes to oneDNN (see ONEDNN_MIN_MULTIPLY_ADDS)."""
    if like.device.type != "cpu" or like.dtype != torch.float32 or not onednn_matmuls():
        return math.inf
    narrow = 2 if min(c_in, c_out) < 32 else 1
    return ONEDNN_MIN_MULTIPLY_ADDS * narrow * torch.get_num_threads() / (c_in * c_out)


def onednn_call_rows(rows: int) -> int:
    """``rows`` rounded up to three significant bits (at most 25% more, 12% on average): the row counts oneDNN
    is called with. oneDNN builds a kernel for every new matmul shape, and keeps the last 1024; a new sweep's
    pairs come in new counts, so exact counts would build kernels on every sweep. Rounded up, a few dozen counts
    per width cover every sweep, and their kernels are built once."""
    step = 1 << max(0, rows.bit_length() - 3)
    return -(-rows // step) * step


def onednn_matmul_into(source: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor,
                       accumulate: bool = False) -> torch.Tensor:
    """``out = source[:len(out)] @ kernel`` (``out += ...`` when accumulating) by oneDNN's linear, CPU float32.

    Every call takes :func:`onednn_call_rows` rows: rows of ``source`` past ``len(out)`` (stale buffer rows) pad
    the last call, else it ends at the block's end and starts earlier (rows already computed, dropped again);
    with neither possible, that block goes to MKL.
    """
    largest_block = max(1, ONEDNN_BYTES_PER_CALL // (4 * kernel.shape[1]))
    block = 1 << (largest_block.bit_length() - 1)  # a power of two: one shape for all full blocks
    kernel_t = kernel.t()  # the linear takes (C_out, C_in): a transposed view, no copy
    for first in range(0, len(out), block):
        count = min(block, len(out) - first)
        call = onednn_call_rows(count)
        out_block = out[first:first + count]
        if first + call <= len(source):  # padded with the rows after the block
            product = torch.ops.mkldnn._linear_pointwise(source[first:first + call], kernel_t, None, "none", [], "")
            product = product[:count]
        elif first + count >= call:  # a window ending where the block ends
            window = source[first + count - call:first + count]
            product = torch.ops.mkldnn._linear_pointwise(window, kernel_t, None, "none", [], "")[call - count:]
        elif accumulate:
            out_block.addmm_(source[first:first + count], kernel)
            continue
        else:
            torch.mm(source[first:first + count], kernel, out=out_block)
            continue
        if accumulate:
            out_block.add_(product)
        else:
            out_block.copy_(product)
    return out


def batched_products(feats: torch.Tensor, weight: torch.Tensor,
                     kernel_map: KernelMap) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's product in one matmul call, and the rows of those products in by-output order.

    Two kernel launches instead of two per offset, which is what counts on a GPU for the small levels of a
    network. In bf16 with channels in multiples of 8 (the 16-byte rows grouped GEMM kernels need) it is
    ``grouped_mm``: the pairs side by side, one group per offset. Otherwise the segments are padded to the
    longest (``bmm``), which costs up to (offsets x longest) / pairs times the gather and the FLOPs.
    """
    padded_rows, offset_index, padded_order = kernel_map.padded_layout()
    kernels = weight.index_select(0, offset_index)
    c_in, c_out = weight.shape[-2:]
    if feats.dtype == torch.bfloat16 and c_in % 8 == 0 and c_out % 8 == 0:
        used = sum(kernel_map.segment_rows()[1])
        gathered = torch.index_select(feats, 0, kernel_map.rows_in[:used])
        return F.grouped_mm(gathered, kernels, offs=kernel_map.segment_ends()), kernel_map.by_output()[0]
    segments, longest = padded_rows.shape
    gathered = torch.index_select(feats, 0, padded_rows.view(-1)).view(segments, longest, c_in)
    return torch.bmm(gathered, kernels).view(segments * longest, c_out), padded_order


class KernelMapConvolution(torch.autograd.Function):
    """``gather_matmul_scatter`` with its own backward.

    The input gradient is the transposed convolution of the output gradient (pairs swapped, weights
    transposed); the weight gradient of an offset is (its gathered inputs)^T @ (its gathered output gradients).
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap,
                workspace: Workspace, batched: bool) -> torch.Tensor:
        ctx.save_for_backward(feats, weight)
        ctx.kernel_map, ctx.workspace, ctx.batched = kernel_map, workspace, batched
        return gather_matmul_scatter(feats, weight, kernel_map, workspace, batched)

    @staticmethod
    @once_differentiable  # its buffers are written in place: no second derivative
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        kernel_map: KernelMap = ctx.kernel_map
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = gather_matmul_scatter(grad_out, weight.transpose(1, 2), kernel_map.transposed(),
                                               ctx.workspace, ctx.batched)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            identity = kernel_map.identity_offset
            if identity is not None:
                torch.mm(feats.T, grad_out, out=grad_weight[identity])
            if kernel_map.segments:
                offsets, sizes, segment_rows_in, segment_rows_out = kernel_map.segment_rows()
                inputs, grads = ctx.workspace.take(feats, (max(sizes), feats.shape[1]), (max(sizes), grad_out.shape[1]))
                for offset, size, rows_in, rows_out in zip(offsets, sizes, segment_rows_in, segment_rows_out,
                                                           strict=True):
                    torch.mm(torch.index_select(feats, 0, rows_in, out=inputs[:size]).T,
                             torch.index_select(grad_out, 0, rows_out, out=grads[:size]), out=grad_weight[offset])
        return grad_feats, grad_weight, None, None, None


def _torchsparse_conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    kernel_size: int,
    stride: int,
    transposed: bool,
    bias: torch.Tensor | None,
) -> SparseTensor:
    """The same convolution through torchsparse (>= 2.1, coordinates [batch, x, y, z]) on CUDA.

    torchsparse keeps its own kernel maps and per-stride coordinates in a cache object; it is kept in our
    CoordinateCache so that every layer of one pass shares it, as with torchsparse's own modules.
    """
    import torchsparse
    from torchsparse.nn import functional as ts_functional

    ts_input = torchsparse.SparseTensor(feats=x.feats, coords=x.coords.int(), stride=x.stride)
    if x.cache.torchsparse_caches is None:
        x.cache.torchsparse_caches = ts_input._caches
    else:
        ts_input._caches = x.cache.torchsparse_caches
    ts_output = ts_functional.conv3d(
        ts_input,
        weight,
        kernel_size=kernel_size,
        bias=bias,
        stride=stride,
        transposed=transposed,
        training=torch.is_grad_enabled(),
    )
    out_stride = ts_output.stride[0] if isinstance(ts_output.stride, tuple) else int(ts_output.stride)
    return SparseTensor(feats=ts_output.feats, coords=ts_output.coords.long(), stride=out_stride, cache=x.cache)
