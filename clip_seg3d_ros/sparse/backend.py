"""Choice of the sparse-convolution kernel: the native PyTorch one, its batched form, or torchsparse.

- ``native``: one matmul per kernel offset (the fastest on a CPU);
- ``batched``: the native engine with each convolution's matmuls in one call, a grouped GEMM in bf16 or a
  padded ``bmm`` (:func:`clip_seg3d_ros.sparse.conv.batched_products`): two kernel launches per convolution
  instead of two per offset, meant for GPUs; on the CPU it runs, but slower than ``native`` (padding, and
  ``bmm`` slower than ``mm`` there);
- ``torchsparse``: torchsparse's CUDA kernels.

All compute the same convolution with the same weight tensor (torchsparse's layout and kernel-offset
order), so a checkpoint trained with one runs with the others. torchsparse is only used on CUDA: it has no
CPU kernels worth using, and it is not on PyPI, so it is never a hard dependency.
"""

from __future__ import annotations

import importlib.util

import torch

from clip_seg3d_ros.compute_choices import SPARSE_BACKENDS as BACKENDS


def torchsparse_available() -> bool:
    return importlib.util.find_spec("torchsparse") is not None


def select_backend(device: torch.device | str, requested: str = "auto") -> str:
    """Resolve ``requested`` (one of :data:`BACKENDS`) for tensors on ``device``; "auto" is torchsparse on CUDA
    when installed, else native."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown sparse backend {requested!r}; choose one of {BACKENDS}")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "torchsparse" and not (on_cuda and torchsparse_available()):
        raise ValueError("the torchsparse backend needs the torchsparse package and a CUDA device")
    if requested == "auto":
        return "torchsparse" if on_cuda and torchsparse_available() else "native"
    return requested
