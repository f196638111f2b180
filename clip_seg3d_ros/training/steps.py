"""The pieces of a training run; ``training/train.py`` puts them together and reads top to bottom.

- one sweep's losses (:func:`sample_losses`) and the per-voxel targets they are taken against;
- the order of the sweeps and the learning-rate schedule (:func:`epoch_order`, :func:`learning_rate_factor`);
- self-training: which round an epoch belongs to, and the labels the model gives itself at a round's start;
- checkpoints (:func:`run_checkpoint`, :func:`resumable_checkpoint`, :func:`resume_from`) and the validation
  (:func:`evaluate`).

Everything random is derived from (seed, epoch, sample index), never from a process-wide generator, so that a
resumed run, a run on two processes and a run on one process see the same sweeps in the same augmentations
and end with the same model.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from clip_seg3d_ros.evaluation.report import EvaluationResult, evaluate_segmenter, write_report
from clip_seg3d_ros.models import ModelConfig
from clip_seg3d_ros.segmenter import Segmenter, network_input
from clip_seg3d_ros.sparse import select_backend
from clip_seg3d_ros.training import self_training
from clip_seg3d_ros.training.config import TrainConfig, config_from_dict
from clip_seg3d_ros.training.data import PreparedSplit, RunData, TrainingSample, augment_points, class_flags
from clip_seg3d_ros.training.distributed import ProcessGroup, all_reduce_sum, barrier
from clip_seg3d_ros.training.losses import mcfa_semantic_loss, mcfa_spatial_loss, text_head_cross_entropy
from clip_seg3d_ros.vocabulary import Vocabulary

LAST_CHECKPOINT = "last.pt"  # model + training state, rewritten every epoch: what --resume reads
FINAL_CHECKPOINT = "model.pt"  # the trained model, for the Segmenter and the node
LOSS_NAMES = ("total", "ce", "semantic", "spatial")  # what sample_losses returns


def kept_checkpoint(epochs: int) -> str:
    """The name of the copy of last.pt after ``epochs`` epochs that a run keeps on request (the benchmark branches
    its self-training variants from (d)'s)."""
    return f"after_{epochs}_epochs.pt"


class ResumeError(RuntimeError):
    """--resume on a run folder that cannot be continued (no checkpoint, another config)."""


# -- one sweep -----------------------------------------------------------------------------------------------------
def voxel_targets(point_targets: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int,
                  num_classes: int) -> torch.Tensor:
    """(V,) the most frequent target among each voxel's points (-1 when none of them has one)."""
    labelled = point_targets >= 0
    flat = point_to_voxel[labelled] * num_classes + point_targets[labelled]
    counts = torch.bincount(flat, minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    best = counts.argmax(dim=1)
    return torch.where(counts.sum(dim=1) > 0, best, torch.full_like(best, -1))


def combine_targets(labels: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """Annotations first; pseudo or self-training labels only where a point has none."""
    return labels if extra is None else np.where(labels >= 0, labels, extra)


def sample_losses(model: torch.nn.Module, sample: TrainingSample, targets: np.ndarray, text: torch.Tensor,
                  config: TrainConfig, model_config: ModelConfig, rng: np.random.Generator,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The losses of one sweep (see :mod:`clip_seg3d_ros.training.losses`), ``total`` their weighted sum."""
    points = torch.from_numpy(augment_points(sample.points, config.augment, rng)).to(device)
    voxels, sparse = network_input(points, model_config, select_backend(device, "auto"))
    features = model(sparse)
    num_voxels, num_classes = len(voxels.coords), len(text)
    per_voxel = voxel_targets(torch.from_numpy(targets).to(device), voxels.point_to_voxel, num_voxels, num_classes)
    settings = config.loss
    losses = {"ce": text_head_cross_entropy(features, text, per_voxel, model_config.temperature,
                                            settings.class_balance)}
    zero = features.sum() * 0.0
    cell_features = sample.cell_features.to(device)
    losses["semantic"] = zero
    if settings.semantic_weight > 0:
        losses["semantic"] = mcfa_semantic_loss(features, per_voxel, cell_features,
                                                torch.from_numpy(sample.cell_labels).to(device), num_classes,
                                                settings.semantic_temperature)
    losses["spatial"] = zero
    if settings.spatial_weight > 0:
        # One row per (voxel, cell) pair weighted by its points: the per-point pooling, without per-point rows.
        seen_by_camera = torch.from_numpy(np.flatnonzero(sample.point_cell >= 0)).to(device)
        num_cells = max(len(sample.cell_labels), 1)
        pairs = voxels.point_to_voxel[seen_by_camera] * num_cells + torch.from_numpy(sample.point_cell).to(
            device)[seen_by_camera]
        pairs, points_per_pair = torch.unique(pairs, return_counts=True)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        losses["spatial"] = mcfa_spatial_loss(
            features, pairs % num_cells, cell_features, settings.spatial_temperature, settings.spatial_max_patches,
            settings.spatial_min_points, generator, weights=points_per_pair, feature_rows=pairs // num_cells)
    losses["total"] = (losses["ce"] + settings.semantic_weight * losses["semantic"]
                       + settings.spatial_weight * losses["spatial"])
    return losses


# -- the schedule --------------------------------------------------------------------------------------------------
def epoch_order(config: TrainConfig, epoch: int, num_samples: int) -> np.ndarray:
    """The sweeps of ``epoch`` in step order, truncated to whole optimiser steps (same on every process)."""
    order = np.random.default_rng([config.seed, epoch, 0]).permutation(num_samples)
    return order[: steps_per_epoch(config, num_samples) * config.optim.samples_per_step]


def steps_per_epoch(config: TrainConfig, num_samples: int) -> int:
    return num_samples // config.optim.samples_per_step


def learning_rate_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """Cosine decay from 1 to ``min_lr_ratio`` over the whole run (CLIP-guided and self-training together)."""
    progress = min(step / max(total_steps, 1), 1.0)
    floor = config.optim.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def self_training_round(config: TrainConfig, epoch: int) -> int | None:
    """The self-training round ``epoch`` belongs to, or None in the CLIP-guided phase."""
    if epoch < config.schedule.epochs:
        return None
    return (epoch - config.schedule.epochs) // config.schedule.self_training_epochs


def starts_a_round(config: TrainConfig, epoch: int) -> bool:
    """Whether ``epoch`` is the first of a self-training round (when its labels are made)."""
    schedule = config.schedule
    return epoch >= schedule.epochs and (epoch - schedule.epochs) % schedule.self_training_epochs == 0


# -- self-training labels -------------------------------------------------------------------------------------------
def self_training_dir(out_dir: Path, round_index: int) -> Path:
    """Where round ``round_index``'s labels are: one .npy per training sweep, thresholds.json, and ``done``."""
    return Path(out_dir) / "self_training" / f"round_{round_index}"


def make_self_training_labels(out_dir: Path, round_index: int, model: torch.nn.Module, vocabulary: Vocabulary,
                              samples: PreparedSplit, config: TrainConfig, group: ProcessGroup, device: torch.device,
                              progress: bool = True) -> None:
    """Label every training sweep with the current model (see :mod:`.self_training`) into
    :func:`self_training_dir`, once per round.

    Each process labels its share of the sweeps; the per-class score histograms are summed over all of
    them before the thresholds are set. Labels go to files, so a resumed run reuses them (``folder/done``),
    with thresholds.json and, where the sweeps have ground truth (never used for training),
    label_quality.json: how right the labels are, in and out of the cameras' view. Leaves the model in training
    mode.
    """
    folder = self_training_dir(out_dir, round_index)
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    if group.distributed:  # label with one model everywhere: rank 0's BatchNorm statistics
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
    segmenter = Segmenter(model, vocabulary, device, calibration_bias=0.0)
    allowed = ~np.array(vocabulary.seen) if config.setting == "zero_shot" else np.ones(len(vocabulary), dtype=bool)
    mine = range(group.rank, len(samples), group.world_size)
    histogram = np.zeros((len(vocabulary), self_training.SCORE_BINS), dtype=np.int64)
    predictions = {}
    for index in tqdm(mine, desc=f"self-training labels, {folder.name}", unit="sweep",
                      disable=not (progress and group.is_main)):
        sample = samples[index]
        predicted, scores = segmenter(sample.points)
        is_candidate = self_training.candidates(sample.labels, predicted, scores, allowed,
                                                config.schedule.self_training_min_score)
        histogram += self_training.score_histogram(predicted, scores, is_candidate, len(vocabulary))
        predictions[index] = (predicted, scores, is_candidate)
    thresholds = self_training.class_thresholds(all_reduce_sum(histogram, group),
                                                config.schedule.self_training_top_fraction)
    schedule = config.schedule
    quality = np.zeros((2, 3, len(vocabulary)), dtype=np.int64)
    for index, (predicted, scores, is_candidate) in predictions.items():
        sample = samples[index]
        labels = self_training.select(sample.labels, predicted, scores, is_candidate, thresholds)
        if schedule.self_training_segment_voxel > 0 and config.setting == "zero_shot":
            # Segments of the unannotated points above the ground vote (annotation-free: every point is
            # unannotated, and segments would join objects to each other and to the vegetation: no spreading).
            xyz = sample.points[:, :3]
            segment = self_training.segments(xyz, (sample.labels < 0) & self_training.above_ground(xyz),
                                             schedule.self_training_segment_voxel)
            votes = combine_targets(sample.pseudo_labels, labels)
            labels = self_training.spread_over_segments(votes, segment, len(vocabulary),
                                                        schedule.self_training_segment_support)
        np.save(folder / f"{index:06d}.npy", labels.astype(np.int16))
        if sample.truth is not None:
            quality += self_training.label_counts(labels, sample.pseudo_labels, sample.truth, sample.point_cell >= 0,
                                                  len(vocabulary))
    model.train()
    quality = all_reduce_sum(quality, group)
    barrier(group)
    if group.is_main:
        (folder / "label_quality.json").write_text(json.dumps(
            self_training.label_quality(quality, vocabulary.names, allowed), indent=1))
        (folder / "thresholds.json").write_text(json.dumps(
            {name: (None if np.isinf(t) else float(t)) for name, t in zip(vocabulary.names, thresholds, strict=True)},
            indent=1))
        (folder / "done").touch()
    barrier(group)


def self_training_labels(folder: Path, index: int) -> np.ndarray:
    """(N,) int64 the labels :func:`make_self_training_labels` gave training sweep ``index``."""
    return np.load(folder / f"{index:06d}.npy").astype(np.int64)


# -- checkpoints and validation -------------------------------------------------------------------------------------
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


def resumable_checkpoint_file(path: Path) -> Checkpoint:
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
    saved = resumable_checkpoint_file(path)
    if config_from_dict(saved.train_config) != config:
        raise ResumeError(f"cannot resume: {path} was trained with another config (compare "
                          f"{path.parent / 'config.yaml'}); start a new run folder instead")
    return saved


def branch_checkpoint(path: Path, config: TrainConfig) -> Checkpoint:
    """A last.pt of ANOTHER run that this one may start from, as if it had trained those epochs itself.

    That holds when the other run had the same config but for the schedule, the same number of epochs in all
    (the learning rate decays over the whole run) and was saved within this run's CLIP-guided epochs: up to
    there the two runs take the same steps (every random choice comes from (seed, epoch, sweep)). So a
    self-training variant can start from (d)'s model after the CLIP-guided epochs instead of training them
    again; a test checks that it ends with the model it would have trained from scratch.
    """
    saved = resumable_checkpoint_file(path)
    other = config_from_dict(saved.train_config)
    if replace(other, schedule=config.schedule) != config or other.total_epochs != config.total_epochs:
        raise ResumeError(f"cannot start from {path}: its run had another config or another number of epochs")
    if saved.training_state["epoch"] + 1 > config.schedule.epochs:
        raise ResumeError(f"cannot start from {path}: saved after epoch {saved.training_state['epoch'] + 1}, "
                          f"past this run's {config.schedule.epochs} CLIP-guided epochs")
    return saved


def resume_from(saved: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> int:
    """Load ``saved`` (see :func:`resumable_checkpoint`) into the model, optimiser and scheduler; returns the
    epoch to continue with."""
    model.load_state_dict(saved.model_state)
    optimizer.load_state_dict(saved.training_state["optimizer"])
    scheduler.load_state_dict(saved.training_state["scheduler"])
    return int(saved.training_state["epoch"]) + 1


def evaluate(model: torch.nn.Module, data: RunData, config: TrainConfig, device: torch.device,
             progress: bool = True, out_dir: Path | None = None) -> EvaluationResult:
    """The model on the validation split (and, with ``out_dir``, the report there); leaves it in training mode."""
    segmenter = Segmenter(model, data.vocabulary, device, calibration_bias=config.eval.calibration_bias)
    # Seen / unseen as the data split says, also for annotation-free runs (which saw no label at all).
    seen = class_flags(data.val.class_names, config.data.unseen_classes)
    result = evaluate_segmenter(segmenter, data.val, seen, num_bev=config.eval.num_bev, progress=progress)
    model.train()
    if out_dir is not None:
        write_report(result, out_dir)
    return result
