"""A training run, top to bottom: :func:`train` and, below it in the order it calls them, its phases.

``train(config, out_dir, resume=False)``: the process (threads, CPU matmul path, device, torchrun group); the
last.pt a resume continues (checked before anything expensive); the data (splits, teacher, vocabulary); the
model, optimiser and learning-rate schedule; the run folder (made only now); the epochs; the final evaluation
and model.pt. What the phases use has a module each beside this one: data, losses, schedule, self_training,
checkpoints, validation, distributed. Other drivers (benchmarks/ablation.py) compose the same phases.

Everything random comes from (seed, epoch, sweep index), never from a process-wide generator, and the thread
count is the config's (``compute.num_threads``): a resumed run, a run on one process and one on N processes
end with the same model, and the same config and seed train the same model byte for byte however busy the
machine is.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import Checkpoint, save_checkpoint
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.files import write_text_atomically
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.sample import DatasetError
from clip_seg3d_ros.sparse.conv import set_cpu_matmul
from clip_seg3d_ros.teacher import TeacherWeightsError
from clip_seg3d_ros.training import self_training
from clip_seg3d_ros.training.checkpoints import (
    FINAL_CHECKPOINT,
    LAST_CHECKPOINT,
    ResumeError,
    resumable_checkpoint,
    resume_from,
    run_checkpoint,
    training_state,
)
from clip_seg3d_ros.training.config import ConfigError, TrainConfig, save_config
from clip_seg3d_ros.training.data import RunData, prepare_data
from clip_seg3d_ros.training.distributed import (
    ProcessGroup,
    all_reduce_sum,
    barrier,
    init_process_group,
    process_device,
)
from clip_seg3d_ros.training.losses import LOSS_NAMES, combine_targets, sample_losses
from clip_seg3d_ros.training.schedule import (
    epoch_order,
    learning_rate_factor,
    self_training_round,
    starts_a_round,
    steps_per_epoch,
)
from clip_seg3d_ros.training.validation import VAL_METRICS, evaluate


# What a user can get wrong, which the entry points report as one "error: ..." line: the config (and the device
# and data it names), data folders without the sweeps, CLIP weights not on this machine, a run folder --resume
# cannot continue. Anything else is a bug and keeps its traceback.
class RunFolderError(RuntimeError):
    """``--out`` holds another run, and no ``--resume`` says to continue it."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf: the run stops there, and no model.pt is written."""


EXPECTED_ERRORS = (ConfigError, DatasetError, FileNotFoundError, TeacherWeightsError, ResumeError, RunFolderError,
                   NonFiniteLossError)
LOG_FILE = "train_log.json"  # one entry per finished epoch: mean losses, seconds, validation metrics


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, checkpoint every epoch, evaluate at the end; returns the final metrics (rank 0; other ranks: {}).

    Writes to ``out_dir``: config.yaml, last.pt (every epoch), model.pt (final), tensorboard/, self_training/
    (labels per round), eval/ (metrics.json, metrics.md, PNGs), train_log.json. ``resume``: continue the run
    in ``out_dir`` after its last finished epoch.
    """
    out_dir = Path(out_dir)

    # A folder with another run in it is never written over: its model, checkpoints and self-training labels
    # would be replaced or, worse, reused. --resume continues it; anything else wants an empty or new folder.
    if not resume and out_dir.exists() and any(out_dir.iterdir()):
        raise RunFolderError(f"{out_dir} holds another run ({', '.join(sorted(p.name for p in out_dir.iterdir()))});"
                             " continue it with --resume, or choose an empty or new --out")

    # The process: threads and CPU matmul path first (they decide the numerics), then the device and, under
    # torchrun, the process group.
    device, group = set_up_process(config)

    # What --resume continues, checked before the data and CLIP load: a folder without a usable last.pt, or
    # one trained with another config, is one clear error at once.
    saved = resumable_checkpoint(out_dir / LAST_CHECKPOINT, config) if resume else None

    # Data. The splits come first (finding the sweeps is cheap, loading CLIP is not). The teacher embeds the
    # class names once (its text embeddings are the classifier of the 3D head, as of the 2D one); the training
    # sweeps get their dense CLIP features and projected pseudo labels on first use.
    data = prepare_data(config, device)

    # Model, optimiser, schedule; then, resuming, their state after the last finished epoch, and the log of the
    # epochs before the one the run goes on with.
    run = start_run(config, out_dir, data, device, group, progress)
    if saved is not None:
        continue_from(run, saved)
        run.log = read_log(out_dir, before_epoch=run.epoch)

    # The run folder, made only now: a run that fails before its first epoch leaves nothing behind.
    open_run_folder(run)

    # The epochs: CLIP-guided, then the self-training rounds; last.pt after each.
    train_epochs(run, until=config.total_epochs)

    # The end: the model on the validation split (metrics and plots in eval/), and model.pt.
    return finish(run)


def set_up_process(config: TrainConfig) -> tuple[torch.device, ProcessGroup]:
    """Apply ``config.compute`` to this process, then its device and process group.

    Under torchrun each process is one rank of a DistributedDataParallel run, on its own GPU (LOCAL_RANK);
    alone, it is a group of one and every collective does nothing. A step's sweeps are dealt out to the
    processes, so they must divide evenly for every process to take the same steps.
    """
    torch.set_num_threads(config.compute.num_threads)
    set_cpu_matmul(config.compute.cpu_matmul)
    device = process_device(config.device)
    group = init_process_group(device)
    if config.optim.samples_per_step % group.world_size:
        raise ConfigError(f"optim.samples_per_step={config.optim.samples_per_step} must be a multiple of the "
                          f"{group.world_size} processes")
    return device, group


@dataclass
class Run:
    """A run in progress: what its epochs read and what they change."""

    config: TrainConfig
    out_dir: Path
    data: RunData
    device: torch.device
    group: ProcessGroup
    model_config: ModelConfig
    model: PointSegmentationNet
    trained: torch.nn.Module  # the model, wrapped in DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    progress: bool = True
    epoch: int = 0  # the next epoch to train
    log: list[dict] = field(default_factory=list)  # what train_log.json holds: one entry per finished epoch
    writer: SummaryWriter | None = None  # TensorBoard, on the main process once the run folder is open


def start_run(config: TrainConfig, out_dir: Path, data: RunData, device: torch.device, group: ProcessGroup,
              progress: bool = True) -> Run:
    """The model, optimiser and learning-rate schedule of a new run, at epoch 0.

    The network's output lives in CLIP's space, so its width is the teacher's. Seeding here gives every process
    the same initial weights (DDP would broadcast rank 0's anyway). The learning rate decays over the whole run,
    CLIP-guided and self-training epochs together.
    """
    model_config = ModelConfig.from_preset(**asdict(config.model), embed_dim=data.vocabulary.embed_dim)
    torch.manual_seed(config.seed)
    model = PointSegmentationNet(model_config).to(device)
    trained = DistributedDataParallel(model) if group.distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    steps = steps_per_epoch(config, len(data.train))
    total_steps = config.total_epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda step: learning_rate_factor(config, step, total_steps))
    return Run(config=config, out_dir=Path(out_dir), data=data, device=device, group=group, model_config=model_config,
               model=model, trained=trained, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps,
               progress=progress)


def continue_from(run: Run, saved: Checkpoint) -> None:
    """Load a checkpoint with a training state into the run: it goes on with the epoch after the saved one.

    Nothing else needs restoring: every random choice comes from (seed, epoch, sweep), and the self-training
    labels of the current round are on disk.
    """
    run.epoch = resume_from(saved, run.model, run.optimizer, run.scheduler)


def read_log(out_dir: Path, before_epoch: int) -> list[dict]:
    """The entries of ``out_dir``'s train_log.json for the epochs before ``before_epoch`` (none: [])."""
    path = Path(out_dir) / LOG_FILE
    log = json.loads(path.read_text()) if path.exists() else []
    return [entry for entry in log if entry["epoch"] < before_epoch]


def open_run_folder(run: Run) -> None:
    """The run folder with its config.yaml (the resolved config, compute settings included) and TensorBoard; one
    process writes it."""
    if run.group.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run.out_dir)
        save_config(run.config, run.out_dir / "config.yaml")
        run.writer = SummaryWriter(str(run.out_dir / "tensorboard"))


def remove_stale_temporaries(out_dir: Path) -> None:
    """The temporary files of a run killed while it wrote a checkpoint or log (SIGKILL leaves them; an error,
    Ctrl-C and SIGTERM do not): nothing else of a run folder starts with a dot and ends in .tmp."""
    for temporary in out_dir.glob(".*.tmp"):
        temporary.unlink(missing_ok=True)


def train_epochs(run: Run, until: int) -> None:
    """Train the epochs from ``run.epoch`` up to ``until`` (exclusive); after each, its record and last.pt."""
    config = run.config
    while run.epoch < until:
        epoch, started = run.epoch, time.perf_counter()
        # Self-training: at the start of each round the model labels every training sweep, also where no camera
        # looks; during the round those labels fill the points that have neither an annotation nor a pseudo label.
        round_index = self_training_round(config, epoch)
        labels_dir = None if round_index is None else self_training.labels_dir(run.out_dir, round_index)
        if starts_a_round(config, epoch):
            self_training.make_labels(labels_dir, run.model, run.data.vocabulary, run.data.train, config, run.group,
                                      run.device, run.progress)
        mean_losses = train_epoch(run, labels_dir)
        record_epoch(run, mean_losses, seconds=time.perf_counter() - started,
                     phase="clip_guided" if round_index is None else "self_training")
        run.epoch += 1


def train_epoch(run: Run, labels_dir: Path | None) -> np.ndarray:
    """The optimiser steps of epoch ``run.epoch``; returns the mean of each of LOSS_NAMES over its steps.

    Every process walks the same order of sweeps (seeded by the epoch) and takes every world_size-th sweep of
    each step, as DistributedSampler deals them, so one process and N processes see the same sweeps with the
    same augmentations (seeded by epoch and sweep) in each step.
    """
    config, group, epoch = run.config, run.group, run.epoch
    text = run.data.vocabulary.text_embeddings.to(run.device)
    run.model.train()
    order = epoch_order(config, epoch, len(run.data.train))
    per_step = config.optim.samples_per_step
    totals = np.zeros(len(LOSS_NAMES))
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.total_epochs}", unit="step",
               disable=not (run.progress and group.is_main))
    for step in bar:
        mine = order[step * per_step + group.rank:(step + 1) * per_step:group.world_size]
        run.optimizer.zero_grad(set_to_none=True)
        step_losses = np.zeros(len(LOSS_NAMES))
        for position, index in enumerate(mine):
            index = int(index)
            sample = run.data.train[index]
            # Targets: annotations, then the teacher's projected pseudo labels, then (self-training) the model's
            # own labels on the points still without one: mostly those no camera sees.
            targets = combine_targets(sample.labels, sample.pseudo_labels if config.loss.use_pseudo_labels else None)
            if labels_dir is not None:
                targets = combine_targets(targets, self_training.read_labels(labels_dir, index))
            rng = np.random.default_rng([config.seed, epoch, index, 1])
            # DDP all-reduces gradients on every backward; only the step's last sweep needs it.
            last = position == len(mine) - 1
            with contextlib.nullcontext() if last or not group.distributed else run.trained.no_sync():
                losses = sample_losses(run.trained, sample, targets, text, config, run.model_config, rng, run.device)
                values = [losses[name].item() for name in LOSS_NAMES]
                check_finite_losses(values, epoch, step, index)
                # DDP averages gradients over processes, so each sweep counts 1 / samples_per_step.
                (losses["total"] * group.world_size / per_step).backward()
            step_losses += values
        run.optimizer.step()
        run.scheduler.step()
        step_losses = all_reduce_sum(step_losses, group) / per_step
        totals += step_losses
        if run.writer is not None:
            global_step = epoch * run.steps_per_epoch + step
            for name, value in zip(LOSS_NAMES, step_losses, strict=True):
                run.writer.add_scalar(f"loss/{name}", value, global_step)
            run.writer.add_scalar("lr", run.scheduler.get_last_lr()[0], global_step)
        bar.set_postfix(loss=f"{step_losses[0]:.3f}")
    return totals / max(run.steps_per_epoch, 1)


def check_finite_losses(values: list[float], epoch: int, step: int, index: int) -> None:
    """NonFiniteLossError naming the epoch, step, sweep and loss term when a loss is NaN or inf: a run that went
    on would train to the end and write a model the loader refuses."""
    for name, value in zip(LOSS_NAMES, values, strict=True):
        if name != "total" and not math.isfinite(value):
            raise NonFiniteLossError(f"the loss term {name!r} is {value} at epoch {epoch + 1}, step {step + 1} "
                                     f"(training sweep {index}); the run stops with no model written (a learning "
                                     "rate or loss weight too large?)")
    if not math.isfinite(values[LOSS_NAMES.index("total")]):
        raise NonFiniteLossError(f"the total loss is {values[LOSS_NAMES.index('total')]} at epoch {epoch + 1}, "
                                 f"step {step + 1} (training sweep {index}); the run stops with no model written")


def record_epoch(run: Run, mean_losses: np.ndarray, seconds: float, phase: str) -> None:
    """The epoch's record: mean losses, time and (every ``eval_every`` epochs) the validation metrics, in
    train_log.json and TensorBoard; then last.pt, written atomically, which is what --resume continues from."""
    config, group, epoch = run.config, run.group, run.epoch
    entry = {"epoch": epoch, "phase": phase, "seconds": seconds,
             **{f"loss_{name}": float(value) for name, value in zip(LOSS_NAMES, mean_losses, strict=True)}}
    if config.schedule.eval_every and (epoch + 1) % config.schedule.eval_every == 0 and group.is_main:
        metrics = evaluate(run.model, run.data, config, run.device, run.progress).metrics
        entry.update({key: metrics[key] for key in VAL_METRICS})
    run.log.append(entry)
    if group.is_main:
        run.writer.add_scalar("time/epoch_seconds", seconds, epoch)
        for key in VAL_METRICS:
            if key in entry and not math.isnan(entry[key]):
                run.writer.add_scalar(f"val/{key}", entry[key], epoch)
        save_checkpoint(run_checkpoint(run.model, run.model_config, run.data, config,
                                       training_state=training_state(epoch, run.optimizer, run.scheduler)),
                        run.out_dir / LAST_CHECKPOINT)
        write_text_atomically(run.out_dir / LOG_FILE, json.dumps(run.log, indent=1))
    barrier(group)


def finish(run: Run) -> dict:
    """The trained model on the validation split (eval/: metrics and plots) and model.pt, which carries its
    metrics, vocabulary and config: everything the Segmenter and the node need. Returns the metrics on the
    main process, {} on the others."""
    if not run.group.is_main:
        return {}
    result = evaluate(run.model, run.data, run.config, run.device, run.progress, run.out_dir / "eval")
    save_checkpoint(run_checkpoint(run.model, run.model_config, run.data, run.config, metrics=result.metrics),
                    run.out_dir / FINAL_CHECKPOINT)
    run.writer.close()
    if run.progress:
        print(format_metrics_table(result.metrics, result.seen))
    return result.metrics
