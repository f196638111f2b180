"""Choice of the sparse-convolution kernel: the native PyTorch one or torchsparse.

Both compute the same convolution with the same weight tensor (torchsparse's layout and kernel-offset
order), so a checkpoint trained with one runs with the other. torchsparse is only used on CUDA: it has no
CPU kernels worth using, and it is not on PyPI, so it is never a hard dependency.
"""

from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("auto", "native", "torchsparse")


def torchsparse_available() -> bool:
    return importlib.util.find_spec("torchsparse") is not None


def select_backend(device: torch.device | str, requested: str = "auto") -> str:
    """Resolve ``requested`` ("auto", "native" or "torchsparse") for tensors on ``device``."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown sparse backend {requested!r}; choose one of {BACKENDS}")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "torchsparse" and not (on_cuda and torchsparse_available()):
        raise ValueError("the torchsparse backend needs the torchsparse package and a CUDA device")
    if requested == "auto":
        return "torchsparse" if on_cuda and torchsparse_available() else "native"
    return requested
