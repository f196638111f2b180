"""Sparse 3D convolution: submanifold, strided (downsampling) and transposed (upsampling).

The native kernel is one gather of the input rows of every kernel offset, a matmul per offset, and one
scatter-add into the output, all vectorised over voxels, so it runs on CPU and CUDA and autograd
differentiates it. The loop is over the (at most 27) offsets' matmuls only.
"""

from __future__ import annotations

import torch

from clip_seg3d_ros.sparse.tensor import KernelMap, SparseTensor


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
        feats = _apply_kernel_map(x.feats, weight, kernel_map)
        out = SparseTensor(feats=feats, coords=x.cache.coords[out_stride], stride=out_stride, cache=x.cache)
    else:
        out_stride = x.stride * stride
        kernel_map = x.cache.kernel_map(x.stride, out_stride, kernel_size)
        feats = _apply_kernel_map(x.feats, weight, kernel_map)
        out = SparseTensor(feats=feats, coords=x.cache.coords_at(out_stride), stride=out_stride, cache=x.cache)
    if bias is not None:
        out = out.with_feats(out.feats + bias)
    return out


def _apply_kernel_map(feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    identity = kernel_map.identity_offset
    if identity is not None:
        out = feats @ weight[identity]
    else:
        out = feats.new_zeros(kernel_map.num_outputs, weight.shape[-1])
    offsets, counts, rows_in, rows_out = kernel_map.flattened()
    if offsets:
        gathered = feats[rows_in].split(counts)
        products = torch.cat([part @ weight[offset] for part, offset in zip(gathered, offsets, strict=True)])
        out = out.index_add(0, rows_out, products)
    return out


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
