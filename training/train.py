"""Train the 3D network by distilling CLIP: ``python training/train.py [--config FILE] [--out DIR] [--set k=v ...]``.

With no arguments it trains on the synthetic world (config/train/synthetic.yaml) with the small network,
a few minutes on a laptop CPU. Under ``torchrun --nproc_per_node N`` the same command trains with
DistributedDataParallel. ``--resume`` continues the run in ``--out`` after its last finished epoch.

A run, top to bottom in :func:`train`: device and process group; the last.pt a resume continues (checked
before anything expensive); data (splits, teacher, vocabulary); model, optimiser and schedule; resume; the run
folder (made only now); the epochs (self-training labels at the start of each round, the steps, TensorBoard,
train_log.json, last.pt); the final evaluation and model.pt. The pieces it calls are in clip_seg3d_ros/training/
(steps.py: one sweep's losses, the schedule, self-training labels, checkpoints).

Every expected failure (see EXPECTED_ERRORS) is one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from clip_seg3d_ros.checkpoint import save_checkpoint
from clip_seg3d_ros.evaluation.summary import format_metrics_table
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.sample import DatasetError
from clip_seg3d_ros.teacher import TeacherWeightsError
from clip_seg3d_ros.training.config import ConfigError, TrainConfig, load_config, save_config
from clip_seg3d_ros.training.data import RunData, prepare_data
from clip_seg3d_ros.training.distributed import all_reduce_sum, barrier, init_process_group, process_device
from clip_seg3d_ros.training.steps import (
    FINAL_CHECKPOINT,
    LAST_CHECKPOINT,
    LOSS_NAMES,
    ResumeError,
    branch_checkpoint,
    combine_targets,
    epoch_order,
    evaluate,
    kept_checkpoint,
    learning_rate_factor,
    make_self_training_labels,
    resumable_checkpoint,
    resume_from,
    run_checkpoint,
    sample_losses,
    self_training_dir,
    self_training_labels,
    self_training_round,
    starts_a_round,
    steps_per_epoch,
    training_state,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train" / "synthetic.yaml"
VAL_METRICS = ("miou", "miou_seen", "miou_unseen", "hiou")


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, data: RunData | None = None,
          progress: bool = True, start_from: Path | None = None, keep_after_epochs: int | None = None) -> dict:
    """Train, checkpoint every epoch, evaluate at the end; returns the final metrics (rank 0; other ranks: {}).

    Writes to ``out_dir``: config.yaml, last.pt (every epoch), model.pt (final), tensorboard/, self_training/
    (labels per round), eval/ (metrics.json, metrics.md, PNGs), train_log.json. ``data``: prepared by
    :func:`prepare_data` for this config's data and teacher (the benchmark shares it between runs). For the
    benchmark: ``keep_after_epochs`` keeps a copy of last.pt after that many epochs, and ``start_from`` starts
    from another run's such copy (see :func:`~clip_seg3d_ros.training.steps.branch_checkpoint`).
    """
    out_dir = Path(out_dir)

    # Device and process group. Under torchrun each process is one rank of a DistributedDataParallel run, on its
    # own GPU (LOCAL_RANK); alone, it is a group of one and every collective below does nothing. A step's sweeps
    # are dealt out to the processes, so they must divide evenly for every process to take the same steps.
    device = process_device(config.device)
    group = init_process_group(device)
    if config.optim.samples_per_step % group.world_size:
        raise ConfigError(f"optim.samples_per_step={config.optim.samples_per_step} must be a multiple of the "
                          f"{group.world_size} processes")

    # What --resume continues, checked before the data and CLIP load: a folder without a usable last.pt, or
    # one trained with another config, is one clear error at once.
    saved = resumable_checkpoint(out_dir / LAST_CHECKPOINT, config) if resume else None
    if saved is None and start_from is not None:
        saved = branch_checkpoint(Path(start_from), config)

    # Data. The splits come first (finding the sweeps is cheap, loading CLIP is not). The teacher embeds the class
    # names once (its text embeddings are the classifier of the 3D head, as of the 2D one); the training sweeps
    # get their dense CLIP features and projected pseudo labels on first use.
    data = data or prepare_data(config, device)
    text = data.vocabulary.text_embeddings.to(device)

    # Model, optimiser, schedule. The network's output lives in CLIP's space, so its width is the teacher's.
    # Seeding here gives every process the same initial weights (DDP would broadcast rank 0's anyway). The
    # learning rate decays over the whole run, CLIP-guided and self-training epochs together.
    model_config = ModelConfig.from_preset(**asdict(config.model), embed_dim=data.vocabulary.embed_dim)
    torch.manual_seed(config.seed)
    model = PointSegmentationNet(model_config).to(device)
    trained = DistributedDataParallel(model) if group.distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    steps = steps_per_epoch(config, len(data.train))
    total_steps = config.total_epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda step: learning_rate_factor(config, step, total_steps))

    # Resume: last.pt holds the model, optimiser and scheduler after the last finished epoch, and the run goes on
    # with the next one. Nothing else needs restoring: every random choice comes from (seed, epoch, sweep), and
    # the self-training labels of the current round are on disk. The log keeps the epochs before that one.
    start_epoch = 0 if saved is None else resume_from(saved, model, optimizer, scheduler)
    log_path = out_dir / "train_log.json"
    log = json.loads(log_path.read_text()) if resume and log_path.exists() else []
    log = [entry for entry in log if entry["epoch"] < start_epoch]

    # The run folder, made only now: a run that fails before its first epoch leaves nothing behind.
    writer = None
    if group.is_main:  # one process writes the run folder
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
        writer = SummaryWriter(str(out_dir / "tensorboard"))

    for epoch in range(start_epoch, config.total_epochs):
        started = time.perf_counter()
        # Self-training: at the start of each round the model labels every training sweep, also where no camera
        # looks; during the round those labels fill the points that have neither an annotation nor a pseudo label.
        round_index = self_training_round(config, epoch)
        labels_dir = None if round_index is None else self_training_dir(out_dir, round_index)
        if starts_a_round(config, epoch):
            make_self_training_labels(out_dir, round_index, model, data.vocabulary, data.train, config, group,
                                      device, progress)
        model.train()

        # The steps. Every process walks the same order of sweeps (seeded by the epoch) and takes every
        # world_size-th sweep of each step, as DistributedSampler deals them, so one process and N processes see
        # the same sweeps with the same augmentations (seeded by epoch and sweep) in each step.
        order = epoch_order(config, epoch, len(data.train))
        per_step = config.optim.samples_per_step
        totals = np.zeros(len(LOSS_NAMES))
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.total_epochs}", unit="step",
                   disable=not (progress and group.is_main))
        for step in bar:
            mine = order[step * per_step + group.rank:(step + 1) * per_step:group.world_size]
            optimizer.zero_grad(set_to_none=True)
            step_losses = np.zeros(len(LOSS_NAMES))
            for position, index in enumerate(mine):
                index = int(index)
                sample = data.train[index]
                # Targets: annotations, then the teacher's projected pseudo labels, then (self-training) the
                # model's own labels on the points still without one: mostly those no camera sees.
                targets = combine_targets(sample.labels, sample.pseudo_labels if config.loss.use_pseudo_labels
                                          else None)
                if labels_dir is not None:
                    targets = combine_targets(targets, self_training_labels(labels_dir, index))
                rng = np.random.default_rng([config.seed, epoch, index, 1])
                # DDP all-reduces gradients on every backward; only the step's last sweep needs it.
                last = position == len(mine) - 1
                with contextlib.nullcontext() if last or not group.distributed else trained.no_sync():
                    losses = sample_losses(trained, sample, targets, text, config, model_config, rng, device)
                    # DDP averages gradients over processes, so each sweep counts 1 / samples_per_step.
                    (losses["total"] * group.world_size / per_step).backward()
                step_losses += [losses[name].item() for name in LOSS_NAMES]
            optimizer.step()
            scheduler.step()
            step_losses = all_reduce_sum(step_losses, group) / per_step
            totals += step_losses
            if writer is not None:
                global_step = epoch * steps + step
                for name, value in zip(LOSS_NAMES, step_losses, strict=True):
                    writer.add_scalar(f"loss/{name}", value, global_step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], global_step)
            bar.set_postfix(loss=f"{step_losses[0]:.3f}")

        # The epoch's record: mean losses, time and (every eval_every epochs) the validation metrics, in
        # train_log.json and TensorBoard; then last.pt, written atomically, which is what --resume continues from.
        seconds = time.perf_counter() - started
        entry = {"epoch": epoch, "phase": "clip_guided" if round_index is None else "self_training",
                 "seconds": seconds,
                 **{f"loss_{name}": float(value / max(steps, 1)) for name, value in zip(LOSS_NAMES, totals,
                                                                                          strict=True)}}
        if config.schedule.eval_every and (epoch + 1) % config.schedule.eval_every == 0 and group.is_main:
            metrics = evaluate(model, data, config, device, progress).metrics
            entry.update({key: metrics[key] for key in VAL_METRICS})
        log.append(entry)
        if group.is_main:
            writer.add_scalar("time/epoch_seconds", seconds, epoch)
            for key in VAL_METRICS:
                if key in entry and not math.isnan(entry[key]):
                    writer.add_scalar(f"val/{key}", entry[key], epoch)
            save_checkpoint(run_checkpoint(model, model_config, data, config,
                                           training_state=training_state(epoch, optimizer, scheduler)),
                            out_dir / LAST_CHECKPOINT)
            if keep_after_epochs == epoch + 1:
                shutil.copyfile(out_dir / LAST_CHECKPOINT, out_dir / kept_checkpoint(epoch + 1))
            log_path.write_text(json.dumps(log, indent=1))
        barrier(group)

    # The end: the model on the validation split (metrics and plots in eval/), and model.pt, which carries its
    # metrics, vocabulary and config: everything the Segmenter and the node need.
    if not group.is_main:
        return {}
    result = evaluate(model, data, config, device, progress, out_dir / "eval")
    save_checkpoint(run_checkpoint(model, model_config, data, config, metrics=result.metrics),
                    out_dir / FINAL_CHECKPOINT)
    writer.close()
    if progress:
        print(format_metrics_table(result.metrics, result.seen))
    return result.metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic"), help="run folder (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set schedule.epochs=4 optim.lr=0.001")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


# What a user can get wrong, each reported as one "error: ..." line: the config (and the device and data it
# names), data folders without the sweeps, CLIP weights not on this machine, a run folder --resume cannot
# continue. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ConfigError, DatasetError, FileNotFoundError, TeacherWeightsError, ResumeError)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        metrics = train(config, args.out, resume=args.resume, progress=not args.quiet)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if metrics:
        print(f"\nmodel: {args.out / 'model.pt'}\nmetrics and plots: {args.out / 'eval'}\n"
              f"TensorBoard: tensorboard --logdir {args.out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
