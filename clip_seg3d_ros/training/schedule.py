"""The schedule of a run: which sweeps each step takes, the learning rate, and the self-training rounds.

A run is ``schedule.epochs`` CLIP-guided epochs, then ``schedule.self_training_rounds`` rounds of
``schedule.self_training_epochs`` epochs each. The order of the sweeps comes from (seed, epoch) alone, never
from a process-wide generator, so that a resumed run, one process and N processes take the same steps.
"""

from __future__ import annotations

import math

import numpy as np

from clip_seg3d_ros.training.config import TrainConfig


def steps_per_epoch(config: TrainConfig, num_samples: int) -> int:
    """Whole optimiser steps in an epoch: a last, incomplete step would weigh its few sweeps more."""
    return num_samples // config.optim.samples_per_step


def epoch_order(config: TrainConfig, epoch: int, num_samples: int) -> np.ndarray:
    """The sweeps of ``epoch`` in step order, truncated to whole optimiser steps (same on every process)."""
    order = np.random.default_rng([config.seed, epoch, 0]).permutation(num_samples)
    return order[: steps_per_epoch(config, num_samples) * config.optim.samples_per_step]


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
