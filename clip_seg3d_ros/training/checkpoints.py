"""A run's checkpoints: last.pt after every epoch (what --resume continues from) and model.pt at the end.

Both describe themselves (model config, vocabulary, teacher, the run's config; see
:class:`~clip_seg3d_ros.checkpoint.Checkpoint`); last.pt also holds the training state. Nothing else needs
saving to resume: every random choice comes from (seed, epoch, sweep), and the self-training labels of the
current round are on disk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clip_seg3d_ros.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from clip_seg3d_ros.models import ModelConfig
from clip_seg3d_ros.training.config import TrainConfig, config_from_dict
from clip_seg3d_ros.training.data import RunData

LAST_CHECKPOINT = "last.pt"  # model + training state, rewritten every epoch: what --resume reads
FINAL_CHECKPOINT = "model.pt"  # the trained model, for the Segmenter and the node


class ResumeError(RuntimeError):
    """--resume on a run folder that cannot be continued (no checkpoint, another config)."""


def run_checkpoint(model: torch.nn.Module, model_config: ModelConfig, data: RunData, config: TrainConfig,
                   metrics: dict | None = None, training_state: dict | None = None) -> Checkpoint:
    """A checkpoint that describes itself: the model, its vocabulary and teacher, the run's config, and (last.pt)
    the ``training_state`` a resumed run continues from."""
    return Checkpoint(model_config=model_config, model_state=model.state_dict(), vocabulary=data.vocabulary,
                      clip_model=data.clip_model, train_config=config.to_dict(), metrics=metrics or {},
                      training_state=training_state)


def training_state(epoch: int, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """What last.pt holds besides the model: the last finished epoch, the optimiser and the scheduler."""
    return {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def checkpoint_with_training_state(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` if it loads and holds a training state, else a ResumeError."""
    try:
        saved = load_checkpoint(path)
    except CheckpointError as error:
        raise ResumeError(f"cannot resume: {error}") from error
    if saved.training_state is None:
        raise ResumeError(f"cannot resume: {path} holds no training state")
    return saved


def resumable_checkpoint(path: Path, config: TrainConfig) -> Checkpoint:
    """The last.pt at ``path`` that --resume continues, checked (cheap) before the run loads data and CLIP: it
    must load, hold a training state and come from the same config (a run continued with another one would
    be neither of the two). Anything else is a ResumeError.
    """
    saved = checkpoint_with_training_state(path)
    if config_from_dict(saved.train_config) != config:
        raise ResumeError(f"cannot resume: {path} was trained with another config (compare "
                          f"{path.parent / 'config.yaml'}); start a new run folder instead")
    return saved


def resume_from(saved: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> int:
    """Load ``saved`` (a checkpoint with a training state) into the model, optimiser and scheduler; returns the
    epoch to continue with."""
    model.load_state_dict(saved.model_state)
    optimizer.load_state_dict(saved.training_state["optimizer"])
    scheduler.load_state_dict(saved.training_state["scheduler"])
    return int(saved.training_state["epoch"]) + 1
