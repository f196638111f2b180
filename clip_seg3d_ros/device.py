"""Device names as users write them (node parameter, config key, command-line option) -> ``torch.device``.

One rule everywhere: ``auto`` is CUDA when available, else the CPU; asking for CUDA where there is none is an
error, never a silent CPU run.
"""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> the device; a ValueError that says why for anything unusable.

    ``local_rank``: the GPU a bare 'cuda' (or 'auto') means for this process under torchrun.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available here (use 'auto' or 'cpu')")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return device
