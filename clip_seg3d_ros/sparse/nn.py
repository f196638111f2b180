"""Sparse layers as ``nn.Module``s, with torchsparse's parameter names and shapes."""

from __future__ import annotations

import math

import torch
from torch import nn

from clip_seg3d_ros.sparse.conv import sparse_conv3d
from clip_seg3d_ros.sparse.tensor import SparseTensor


class SparseConv3d(nn.Module):
    """Sparse 3D convolution with a cubic kernel; see :func:`sparse_conv3d` for the three kinds.

    The parameter is called ``kernel`` and shaped (K, C_in, C_out), or (C_in, C_out) for a 1x1x1 kernel at
    stride 1, exactly like ``torchsparse.nn.Conv3d``, so state dicts are interchangeable.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        transposed: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.transposed = transposed
        kernel_volume = kernel_size**3
        if kernel_volume == 1 and stride == 1:
            self.kernel = nn.Parameter(torch.empty(in_channels, out_channels))
        else:
            self.kernel = nn.Parameter(torch.empty(kernel_volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_size**3
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"transposed={self.transposed}, bias={self.bias is not None}"
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_conv3d(x, self.kernel, self.kernel_size, self.stride, self.transposed, self.bias)


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active voxels' features."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))


class SparseReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))


def cat_features(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """Concatenate the features of two tensors on the same voxels (a UNet skip connection)."""
    if a.stride != b.stride or a.coords.shape != b.coords.shape:
        raise ValueError(f"cannot concatenate tensors at strides {a.stride} and {b.stride} with different voxels")
    return a.with_feats(torch.cat([a.feats, b.feats], dim=1))
