"""The training run: CLIP-guided epochs, then self-training rounds, checkpoints, resume and evaluation.

Reads top to bottom as :func:`train`. Everything random is derived from (seed, epoch, sample index), never
from a process-wide generator, so that a resumed run, a run on two processes and a run on one process see
the same sweeps in the same augmentations and end with the same model.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from clip_seg3d_ros.device import resolve_device
from clip_seg3d_ros.evaluation.report import EvaluationResult, evaluate_segmenter, write_report
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.segmenter import Segmenter, point_features
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor, select_backend
from clip_seg3d_ros.training import self_training
from clip_seg3d_ros.training.config import TrainConfig, config_from_dict, save_config
from clip_seg3d_ros.training.data import (
    PreparedSplit,
    SamplePreparer,
    TrainingSample,
    augment_points,
    build_split,
    build_teacher,
    class_flags,
)
from clip_seg3d_ros.training.distributed import (
    all_reduce_sum,
    barrier,
    init_process_group,
)
from clip_seg3d_ros.training.losses import mcfa_semantic_loss, mcfa_spatial_loss, text_head_cross_entropy
from clip_seg3d_ros.vocabulary import Vocabulary
from clip_seg3d_ros.voxelize import voxelize

LAST_CHECKPOINT = "last.pt"  # model + training state, rewritten every epoch: what --resume reads
FINAL_CHECKPOINT = "model.pt"  # the trained model, for the Segmenter and the node
LOSS_NAMES = ("total", "ce", "semantic", "spatial")


class ResumeError(RuntimeError):
    """--resume on a run folder that cannot be continued (no checkpoint, another config)."""


@dataclass
class RunData:
    """What a run trains and validates on; the benchmark shares one between runs with the same data."""

    train: PreparedSplit
    val: object  # a sequence of Samples with ground truth
    vocabulary: Vocabulary
    clip_model: str


def prepare_data(config: TrainConfig, device: torch.device) -> RunData:
    """The teacher, the class vocabulary (CLIP text embeddings) and the train / validation splits."""
    teacher = build_teacher(config.teacher, device)
    train_samples = build_split(config.data, "train")
    preparer = SamplePreparer(teacher, config, train_samples.class_names)
    vocabulary = Vocabulary(
        names=preparer.class_names,
        text_embeddings=preparer.text_embeddings,
        seen=list(preparer.seen) if config.setting == "zero_shot" else [True] * len(preparer.seen),
        prompt_templates=list(getattr(teacher, "templates", [])),
    )
    clip_model = "synthetic" if config.teacher.kind == "synthetic" else f"{config.teacher.model_name}/" \
                                                                         f"{config.teacher.pretrained}"
    return RunData(train=PreparedSplit(train_samples, preparer, config.data.cache_in_memory),
                   val=build_split(config.data, "val", with_images=False), vocabulary=vocabulary,
                   clip_model=clip_model)


def voxel_targets(point_targets: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int,
                  num_classes: int) -> torch.Tensor:
    """(V,) the most frequent target among each voxel's points (-1 when none of them has one)."""
    labelled = point_targets >= 0
    flat = point_to_voxel[labelled] * num_classes + point_targets[labelled]
    counts = torch.bincount(flat, minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    best = counts.argmax(dim=1)
    return torch.where(counts.sum(dim=1) > 0, best, torch.full_like(best, -1))


def sample_losses(model: torch.nn.Module, sample: TrainingSample, targets: np.ndarray, text: torch.Tensor,
                  config: TrainConfig, model_config: ModelConfig, rng: np.random.Generator,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The losses of one sweep (see :mod:`clip_seg3d_ros.training.losses`), ``total`` their weighted sum."""
    points = torch.from_numpy(augment_points(sample.points, config.augment, rng)).to(device)
    voxels = voxelize(points[:, :3], point_features(points, model_config), model_config.voxel_size)
    sparse = SparseTensor(feats=voxels.feats, coords=voxels.coords,
                          cache=CoordinateCache(select_backend(device, "auto")))
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


def combine_targets(labels: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """Annotations first; pseudo or self-training labels only where a point has none."""
    return labels if extra is None else np.where(labels >= 0, labels, extra)


def epoch_order(config: TrainConfig, epoch: int, num_samples: int) -> np.ndarray:
    """The sweeps of ``epoch`` in step order, truncated to whole optimiser steps (same on every process)."""
    order = np.random.default_rng([config.seed, epoch, 0]).permutation(num_samples)
    steps = num_samples // config.optim.samples_per_step
    return order[: steps * config.optim.samples_per_step]


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


class Run:
    """One training run in ``out_dir``; :func:`train` drives it."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, data: RunData | None = None,
                 progress: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = resolve_device(config.device)
        self.group = init_process_group(self.device)
        if self.group.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        if config.optim.samples_per_step % self.group.world_size:
            raise ValueError(f"optim.samples_per_step={config.optim.samples_per_step} must be a multiple of the "
                             f"{self.group.world_size} processes")
        self.data = data or prepare_data(config, self.device)
        self.vocabulary = self.data.vocabulary
        self.text = self.vocabulary.text_embeddings.to(self.device)
        self.model_config = ModelConfig.from_preset(
            config.model.preset, embed_dim=self.vocabulary.embed_dim, voxel_size=config.model.voxel_size,
            use_intensity=config.model.use_intensity, intensity_scale=config.model.intensity_scale,
            temperature=config.model.temperature)
        torch.manual_seed(config.seed)  # the initial weights: the same on every process
        self.model = PointSegmentationNet(self.model_config).to(self.device)
        self.trained = DistributedDataParallel(self.model) if self.group.distributed else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.optim.lr,
                                           weight_decay=config.optim.weight_decay)
        self.total_steps = config.total_epochs * steps_per_epoch(config, len(self.data.train))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(config, step, self.total_steps))
        self.start_epoch = 0
        self.writer = SummaryWriter(str(self.out_dir / "tensorboard")) if self.group.is_main else None

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint(self, metrics: dict | None = None, with_state: bool = False, epoch: int = -1) -> Checkpoint:
        state = None
        if with_state:
            state = {"epoch": epoch, "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict()}
        return Checkpoint(model_config=self.model_config, model_state=self.model.state_dict(),
                          vocabulary=self.vocabulary, clip_model=self.data.clip_model,
                          train_config=self.config.to_dict(), metrics=metrics or {}, training_state=state)

    def resume(self) -> None:
        """Continue from ``last.pt``: same config required; the run goes on after the last finished epoch."""
        path = self.out_dir / LAST_CHECKPOINT
        try:
            saved = load_checkpoint(path)
        except CheckpointError as error:
            raise ResumeError(f"cannot resume: {error}") from error
        if saved.training_state is None:
            raise ResumeError(f"cannot resume: {path} holds no training state")
        if config_from_dict(saved.train_config) != self.config:
            raise ResumeError(f"cannot resume: {path} was trained with another config (compare "
                              f"{self.out_dir / 'config.yaml'}); start a new run folder instead")
        self.model.load_state_dict(saved.model_state)
        self.optimizer.load_state_dict(saved.training_state["optimizer"])
        self.scheduler.load_state_dict(saved.training_state["scheduler"])
        self.start_epoch = int(saved.training_state["epoch"]) + 1

    # -- self-training labels --------------------------------------------------------------------------------
    def self_label_dir(self, round_index: int) -> Path:
        return self.out_dir / "self_training" / f"round_{round_index}"

    def make_self_training_labels(self, round_index: int) -> None:
        """Label every training sweep with the current model (see :mod:`.self_training`), once per round.

        Each process labels its share of the sweeps; the per-class score histograms are summed over all of
        them before the thresholds are set. Labels go to files, so a resumed run reuses them.
        """
        folder = self.self_label_dir(round_index)
        if (folder / "done").exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.group.distributed:  # label with one model everywhere: rank 0's BatchNorm statistics
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        segmenter = Segmenter(self.model, self.vocabulary, self.device, calibration_bias=0.0)
        allowed = ~np.array(self.vocabulary.seen) if self.config.setting == "zero_shot" else \
            np.ones(len(self.vocabulary), dtype=bool)
        mine = range(self.group.rank, len(self.data.train), self.group.world_size)
        histogram = np.zeros((len(self.vocabulary), self_training.SCORE_BINS), dtype=np.int64)
        predictions = {}
        for index in tqdm(mine, desc=f"self-training labels, round {round_index}", unit="sweep",
                          disable=not (self.progress and self.group.is_main)):
            sample = self.data.train[index]
            predicted, scores = segmenter(sample.points)
            is_candidate = self_training.candidates(sample.labels, predicted, scores, allowed,
                                                    self.config.schedule.self_training_min_score)
            histogram += self_training.score_histogram(predicted, scores, is_candidate, len(self.vocabulary))
            predictions[index] = (predicted, scores, is_candidate)
        thresholds = self_training.class_thresholds(all_reduce_sum(histogram, self.group),
                                                    self.config.schedule.self_training_top_fraction)
        for index, (predicted, scores, is_candidate) in predictions.items():
            labels = self_training.select(self.data.train[index].labels, predicted, scores, is_candidate, thresholds)
            np.save(folder / f"{index:06d}.npy", labels.astype(np.int16))
        self.model.train()
        barrier(self.group)
        if self.group.is_main:
            (folder / "thresholds.json").write_text(json.dumps(
                {name: (None if np.isinf(t) else float(t)) for name, t in zip(self.vocabulary.names, thresholds,
                                                                              strict=True)}, indent=1))
            (folder / "done").touch()
        barrier(self.group)

    def targets(self, index: int, sample: TrainingSample, round_index: int | None) -> np.ndarray:
        """Annotations, then the teacher's projected pseudo labels, then (self-training) the model's own labels
        on the points still without one: mostly those no camera sees."""
        targets = combine_targets(sample.labels, sample.pseudo_labels if self.config.loss.use_pseudo_labels else None)
        if round_index is not None:
            own = np.load(self.self_label_dir(round_index) / f"{index:06d}.npy").astype(np.int64)
            targets = combine_targets(targets, own)
        return targets

    # -- one epoch -----------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        config, group = self.config, self.group
        round_index = self_training_round(config, epoch)
        if round_index is not None and (epoch - config.schedule.epochs) % config.schedule.self_training_epochs == 0:
            self.make_self_training_labels(round_index)
        self.model.train()
        order = epoch_order(config, epoch, len(self.data.train))
        per_step = config.optim.samples_per_step
        totals = np.zeros(len(LOSS_NAMES))
        steps = len(order) // per_step
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.total_epochs}", unit="step",
                   disable=not (self.progress and group.is_main))
        for step in bar:
            # This process's sweeps of the step: every world_size-th one, as DistributedSampler deals them.
            mine = order[step * per_step + group.rank:(step + 1) * per_step:group.world_size]
            self.optimizer.zero_grad(set_to_none=True)
            step_losses = np.zeros(len(LOSS_NAMES))
            for position, index in enumerate(mine):
                sample = self.data.train[int(index)]
                rng = np.random.default_rng([config.seed, epoch, int(index), 1])
                last = position == len(mine) - 1
                sync = contextlib.nullcontext() if last or not group.distributed else self.trained.no_sync()
                with sync:
                    losses = sample_losses(self.trained, sample, self.targets(int(index), sample, round_index),
                                           self.text, config, self.model_config, rng, self.device)
                    # DDP averages gradients over processes, so each sweep counts 1 / samples_per_step.
                    (losses["total"] * group.world_size / per_step).backward()
                step_losses += [losses[name].item() for name in LOSS_NAMES]
            self.optimizer.step()
            self.scheduler.step()
            step_losses = all_reduce_sum(step_losses, group) / per_step
            totals += step_losses
            global_step = epoch * steps + step
            if self.writer is not None:
                for name, value in zip(LOSS_NAMES, step_losses, strict=True):
                    self.writer.add_scalar(f"loss/{name}", value, global_step)
                self.writer.add_scalar("lr", self.scheduler.get_last_lr()[0], global_step)
            bar.set_postfix(loss=f"{step_losses[0]:.3f}")
        return {name: float(value / max(steps, 1)) for name, value in zip(LOSS_NAMES, totals, strict=True)}

    def evaluate(self, out_dir: Path | None = None) -> EvaluationResult:
        segmenter = Segmenter(self.model, self.vocabulary, self.device,
                              calibration_bias=self.config.eval.calibration_bias)
        # Seen / unseen as the data split says, also for annotation-free runs (which saw no label at all).
        seen = class_flags(self.data.val.class_names, self.config.data.unseen_classes)
        result = evaluate_segmenter(segmenter, self.data.val, seen, num_bev=self.config.eval.num_bev,
                                    progress=self.progress)
        self.model.train()
        if out_dir is not None:
            write_report(result, out_dir)
        return result


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, data: RunData | None = None,
          progress: bool = True, stop_after_epoch: int | None = None) -> dict:
    """Train, checkpoint every epoch, evaluate at the end; returns the final metrics (rank 0; others: {}).

    ``stop_after_epoch`` ends the process after that epoch's checkpoint, as if it had been killed there (for
    the resume test). Writes to ``out_dir``: config.yaml, last.pt (every epoch), model.pt (final),
    tensorboard/, self_training/ (labels per round), eval/ (metrics.json, metrics.md, PNGs), train_log.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, out_dir, data, progress)
    if resume:
        run.resume()
    if run.group.is_main:
        save_config(config, out_dir / "config.yaml")
    log_path = out_dir / "train_log.json"
    log = json.loads(log_path.read_text()) if resume and log_path.exists() else []
    log = [entry for entry in log if entry["epoch"] < run.start_epoch]
    for epoch in range(run.start_epoch, config.total_epochs):
        started = time.perf_counter()
        losses = run.train_epoch(epoch)
        seconds = time.perf_counter() - started
        entry = {"epoch": epoch, "phase": "clip_guided" if self_training_round(config, epoch) is None
                 else "self_training", "seconds": seconds, **{f"loss_{k}": v for k, v in losses.items()}}
        if config.schedule.eval_every and (epoch + 1) % config.schedule.eval_every == 0 and run.group.is_main:
            metrics = run.evaluate().metrics
            entry.update({key: metrics[key] for key in ("miou", "miou_seen", "miou_unseen", "hiou")})
        log.append(entry)
        if run.group.is_main:
            run.writer.add_scalar("time/epoch_seconds", seconds, epoch)
            for key in ("miou", "miou_seen", "miou_unseen", "hiou"):
                if key in entry and not math.isnan(entry[key]):
                    run.writer.add_scalar(f"val/{key}", entry[key], epoch)
            save_checkpoint(run.checkpoint(with_state=True, epoch=epoch), out_dir / LAST_CHECKPOINT)
            log_path.write_text(json.dumps(log, indent=1))
        barrier(run.group)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {}
    if not run.group.is_main:
        return {}
    result = run.evaluate(out_dir / "eval")
    save_checkpoint(run.checkpoint(metrics=result.metrics), out_dir / FINAL_CHECKPOINT)
    run.writer.close()
    if progress:
        print(format_metrics_table(result.metrics, result.seen))
    return result.metrics
