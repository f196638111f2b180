"""Self-describing checkpoints, loaded with ``torch.load(weights_only=True)`` so that a file cannot run code.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts:

    format            "clip_seg3d_ros.checkpoint"
    format_version    CHECKPOINT_VERSION
    model_config      ModelConfig.to_dict(): network widths, embedding dim, voxel size, input features
    model_state       the PointSegmentationNet state dict
    vocabulary        Vocabulary.to_dict(): class names, text embeddings, seen flags, prompt templates
    clip_model        the CLIP model that made the text embeddings (e.g. "ViT-B-16/openai"), "" if none
    train_config      the training configuration as a dict
    metrics           evaluation results as a dict
    training_state    optional, written by training for ``--resume``: optimiser and scheduler state, epoch;
                      ignored by everything that only runs the model
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clip_seg3d_ros.models.network import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.vocabulary import Vocabulary

CHECKPOINT_FORMAT = "clip_seg3d_ros.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_FIELDS = ("model_config", "model_state", "vocabulary")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    vocabulary: Vocabulary
    clip_model: str = ""
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training_state: dict | None = None

    def build_model(self) -> PointSegmentationNet:
        """The network with these weights (on the CPU, in eval mode)."""
        model = PointSegmentationNet(self.model_config)
        model.load_state_dict(self.model_state)
        return model.eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": checkpoint.model_config.to_dict(),
        "model_state": {name: tensor.detach().cpu() for name, tensor in checkpoint.model_state.items()},
        "vocabulary": checkpoint.vocabulary.to_dict(),
        "clip_model": checkpoint.clip_model,
        "train_config": checkpoint.train_config,
        "metrics": checkpoint.metrics,
    }
    if checkpoint.training_state is not None:
        payload["training_state"] = checkpoint.training_state
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and validate its description; every failure is a CheckpointError naming ``path``.

    The weights are checked against the model config by :func:`load_model`, which builds the network.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated, corrupt or unsafe): {reason}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a clip_seg3d_ros checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported (this clip_seg3d_ros reads "
            f"versions 1 to {CHECKPOINT_VERSION}; a newer file needs a newer clip_seg3d_ros)"
        )
    missing = [name for name in _REQUIRED_FIELDS if name not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {missing}")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        vocabulary = Vocabulary.from_dict(payload["vocabulary"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid model config or vocabulary: {error}") from error
    if vocabulary.embed_dim != config.embed_dim:
        raise CheckpointError(
            f"{path}: vocabulary embeddings have dimension {vocabulary.embed_dim}, the model {config.embed_dim}"
        )
    return Checkpoint(
        model_config=config,
        model_state=payload["model_state"],
        vocabulary=vocabulary,
        clip_model=str(payload.get("clip_model", "")),
        train_config=dict(payload.get("train_config", {})),
        metrics=dict(payload.get("metrics", {})),
        training_state=payload.get("training_state"),
    )


def load_model(path: str | os.PathLike) -> tuple[Checkpoint, PointSegmentationNet]:
    """:func:`load_checkpoint` plus the network built from it; weights that do not fit are a CheckpointError."""
    checkpoint = load_checkpoint(path)
    try:
        model = checkpoint.build_model()
    except (RuntimeError, TypeError) as error:  # load_state_dict: missing or unexpected keys, wrong shapes
        raise CheckpointError(f"{path}: weights do not fit the model config: {error}") from error
    return checkpoint, model
