"""Validation: the model of a run in progress (:func:`evaluate`), or a saved checkpoint (:func:`evaluate_checkpoint`,
what training/evaluate.py runs), on the validation split, with the same report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clip_seg3d_ros.checkpoint import load_checkpoint
from clip_seg3d_ros.evaluation.report import EvaluationResult, evaluate_segmenter, write_report
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.training.config import TrainConfig, config_from_dict, load_config
from clip_seg3d_ros.training.data import RunData, build_split, class_flags
from clip_seg3d_ros.training.distributed import process_device

VAL_METRICS = ("miou", "miou_seen", "miou_unseen", "hiou")  # what train_log.json and TensorBoard follow per epoch


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


def evaluate_checkpoint(checkpoint_path: Path, out_dir: Path, config_path: Path | None = None,
                        overrides: Sequence[str] = (), device: str = "auto", calibration_bias: float | None = None,
                        progress: bool = True) -> EvaluationResult:
    """A checkpoint on the validation split of its training config (or of ``config_path``), plus ``overrides``
    (e.g. ``data.root`` on this machine); writes the report to ``out_dir``. ``calibration_bias``: default the
    config's ``eval.calibration_bias``.

    Cheap before expensive: the device, the checkpoint's fields and config, the validation sweeps; only then
    the model is built and run, so a wrong device, file or data root fails at once (CheckpointError,
    ConfigError, DatasetError, FileNotFoundError).
    """
    resolved_device = process_device(device)
    checkpoint = load_checkpoint(checkpoint_path)
    if config_path is not None:
        config = load_config(config_path, list(overrides))
    else:
        config = config_from_dict(checkpoint.train_config, list(overrides))
    samples = build_split(config.data, "val")  # with the images: their cameras split the metrics by view
    seen = class_flags(samples.class_names, config.data.unseen_classes)
    bias = config.eval.calibration_bias if calibration_bias is None else calibration_bias
    segmenter = Segmenter.from_checkpoint(checkpoint_path, device=resolved_device, calibration_bias=bias)
    result = evaluate_segmenter(segmenter, samples, seen, num_bev=config.eval.num_bev, progress=progress)
    write_report(result, out_dir)
    return result
