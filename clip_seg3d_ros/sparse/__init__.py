"""Sparse voxel tensors and convolutions (native PyTorch, or torchsparse on CUDA)."""

from clip_seg3d_ros.sparse.backend import select_backend, torchsparse_available
from clip_seg3d_ros.sparse.conv import sparse_conv3d
from clip_seg3d_ros.sparse.coords import kernel_offsets
from clip_seg3d_ros.sparse.nn import SparseBatchNorm, SparseConv3d, SparseReLU, cat_features
from clip_seg3d_ros.sparse.tensor import CoordinateCache, SparseTensor, Workspace

__all__ = [
    "CoordinateCache",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseReLU",
    "SparseTensor",
    "cat_features",
    "kernel_offsets",
    "select_backend",
    "sparse_conv3d",
    "torchsparse_available",
    "Workspace",
]
