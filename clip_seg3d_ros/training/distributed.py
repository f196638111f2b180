"""One process or many: the same training code under ``torchrun`` (DistributedDataParallel).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and every
collective below is a no-op. The backend is nccl on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.training.config import ConfigError


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def local_rank() -> int:
    """This process's index on its machine under torchrun (its GPU), 0 for a single process."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_device(name: str) -> torch.device:
    """This process's device for ``name`` (auto, cpu, cuda, cuda:N): under torchrun a bare 'cuda' is the GPU of
    its LOCAL_RANK. An unusable device is a ConfigError, which the training scripts report in one line."""
    try:
        return resolve_device(name, local_rank())
    except ValueError as error:
        raise ConfigError(str(error)) from error


def init_process_group(device: torch.device) -> ProcessGroup:
    """Join the torchrun group if there is one (and pin this process's GPU, ``device``), else a single-process
    group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank())


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def all_reduce_sum(values: np.ndarray | torch.Tensor, group: ProcessGroup) -> np.ndarray:
    """Element-wise sum over processes (float64 for floats, int64 for integers), returned as numpy."""
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    if not group.distributed:
        return array
    dtype = torch.float64 if np.issubdtype(array.dtype, np.floating) else torch.int64
    tensor = torch.as_tensor(array, dtype=dtype)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def shutdown(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()
