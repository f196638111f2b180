"""Typed training configuration: dataclasses, loaded from YAML with ``--set key=value`` overrides (OmegaConf).

Every setting of a run lives here, with its default; a YAML file under ``config/train/`` overrides some of
them, the command line overrides the file. A misspelt key or a value of the wrong type is an error that
names the key. The resolved config is saved with each run (``config.yaml``) and in each checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clip_seg3d_ros.datasets.semantickitti import SEMANTICKITTI_UNSEEN
from clip_seg3d_ros.files import write_text_atomically
from clip_seg3d_ros.models.network import ModelConfig
from clip_seg3d_ros.runtime.settings import Setting
from clip_seg3d_ros.sparse.conv import CPU_MATMULS
from clip_seg3d_ros.teacher.pseudo_labels import PseudoLabelSettings
from clip_seg3d_ros.teacher.synthetic import SyntheticTeacherConfig

SETTINGS = ("zero_shot", "annotation_free")
DATASETS = ("synthetic", "semantickitti", "nuscenes", "folder")
TEACHERS = ("synthetic", "open_clip")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


@dataclass
class ModelSettings:
    """What a config chooses of the 3D network's :class:`~clip_seg3d_ros.models.ModelConfig`, with ModelConfig's
    defaults; the rest follows from the preset (widths, depths) and the teacher (the embedding size)."""

    preset: str = ModelConfig.preset
    voxel_size: float = ModelConfig.voxel_size
    use_intensity: bool = ModelConfig.use_intensity
    intensity_scale: float = ModelConfig.intensity_scale  # 1 for SemanticKITTI's [0, 1] remission, 255 for nuScenes
    temperature: float = ModelConfig.temperature


@dataclass
class DataSettings:
    """Where the sweeps come from and which classes are unseen.

    - synthetic: scenes [0, synthetic_train_scenes) of the world with ``synthetic_seed`` train, the next
      ``synthetic_val_scenes`` validate, seen by ``synthetic_cameras`` cameras;
    - semantickitti: ``train_split`` / ``val_split`` are sequence numbers under ``root``;
    - nuscenes: ``train_split`` / ``val_split`` are scene names (empty: every scene of ``version``) ;
    - folder: ``train_split`` / ``val_split`` are sub-folders of ``root`` in the folder format.
    ``unseen_classes``: the classes without 3D labels in the zero-shot setting (ignored by annotation-free
    training, which has none, but still reported separately in the metrics).
    """

    dataset: str = "synthetic"
    root: str = ""
    train_split: list[str] = field(default_factory=list)
    val_split: list[str] = field(default_factory=list)
    version: str = "v1.0-trainval"
    cameras: list[str] = field(default_factory=list)  # nuScenes cameras; empty: all six
    synthetic_seed: int = 0
    synthetic_train_scenes: int = 12
    synthetic_val_scenes: int = 4
    synthetic_cameras: int = 1  # 90-degree cameras evenly spaced in yaw: 1 = front only (KITTI), 4 = all around
    unseen_classes: list[str] = field(default_factory=lambda: list(SEMANTICKITTI_UNSEEN))
    max_range: float = 0.0  # drop points farther than this from the sensor (metres); 0: keep all
    cache_in_memory: bool = True  # keep prepared training sweeps (and teacher outputs) in RAM


@dataclass
class TeacherSettings:
    """The 2D teacher and its pseudo labels (see :mod:`clip_seg3d_ros.teacher`).

    ``kind``: ``open_clip`` is CLIP itself (``model_name``, ..., ``cache_dir``), with weights ``pretrained`` (an
    open_clip tag already in the Hugging Face cache, or a local file); ``synthetic`` simulates CLIP on the
    synthetic world only, with the knobs in ``synthetic``. ``pseudo_labels``: how dense features become 2D
    pseudo labels, for either kind.
    """

    kind: str = "synthetic"
    model_name: str = "ViT-B-16"
    pretrained: str | None = "openai"  # None: random weights (tests only)
    quick_gelu: bool | None = None
    resolution: int | None = None
    cache_dir: str = ""  # fp16 cache of text embeddings and dense features; empty: none
    pseudo_labels: PseudoLabelSettings = field(default_factory=PseudoLabelSettings)
    synthetic: SyntheticTeacherConfig = field(default_factory=SyntheticTeacherConfig)


@dataclass
class LossSettings:
    """Weights and temperatures of the losses in :mod:`clip_seg3d_ros.training.losses`."""

    use_pseudo_labels: bool = True  # CE on projected 2D pseudo labels of unseen (zero-shot) / all classes
    class_balance: float = 0.5  # CE class weights (frequency in the sweep) ^ -class_balance; 0: plain mean
    semantic_weight: float = 0.1  # MCFA semantic: class prototypes, 3D vs 2D
    semantic_temperature: float = 0.07
    spatial_weight: float = 0.1  # MCFA spatial: pooled 3D feature per image patch vs the patch's CLIP feature
    spatial_temperature: float = 0.07
    spatial_max_patches: int = 512
    spatial_min_points: int = 3


@dataclass
class ScheduleSettings:
    """CLIP-guided epochs, then ``self_training_rounds`` rounds of ``self_training_epochs`` epochs each.

    At the start of every round the model labels the training sweeps: per class, the most confident
    ``self_training_top_fraction`` of its predicted points with score >= ``self_training_min_score`` become
    labels (a per-class quantile, so rare classes keep their share). In the zero-shot setting those labels and
    the teacher's are then spread over segments (connected components of ``self_training_segment_voxel``
    voxels; 0: off) of the points above the ground without annotation, where the segment's majority label
    covers at least ``self_training_segment_support`` of its points (see clip_seg3d_ros/training/self_training.py).
    """

    epochs: int = 8
    self_training_rounds: int = 0
    self_training_epochs: int = 4
    self_training_top_fraction: float = 0.6
    self_training_min_score: float = 0.5
    self_training_segment_voxel: float = 0.5
    self_training_segment_support: float = 0.3
    eval_every: int = 0  # epochs between validations during training; 0: only at the end


@dataclass
class OptimSettings:
    """AdamW with a cosine learning-rate decay over the whole run."""

    lr: float = 0.002
    weight_decay: float = 0.0001
    samples_per_step: int = 2  # sweeps per optimiser step, over all processes together
    min_lr_ratio: float = 0.05


@dataclass
class AugmentSettings:
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # random mirror across x and/or y
    scale: tuple[float, float] = (0.95, 1.05)


@dataclass
class EvalSettings:
    num_bev: int = 3  # bird's-eye-view PNGs of predictions next to ground truth
    calibration_bias: float = 0.0


@dataclass
class ComputeSettings:
    """How the CPU computes: part of a run's numerics, so part of its config (saved in config.yaml).

    ``num_threads``: torch's CPU threads (set at the start of the run). The thread count decides the order in
    which a matmul sums its float32 products; runs that differ only in it drift apart step by step and end as
    different models, often farther apart than the effect of a setting one wants to measure. Fixed here, the
    same config and seed train the same model byte for byte on one machine, however busy it is. Default 1: a
    count every machine has (a run can be repeated elsewhere with it), and the one that does not collapse when
    the CPU is shared (threads beyond the free cores wait on each other at every operator, and a step then
    takes several times longer). On a machine of your own, more threads train faster, reproducibly with that
    count. ``cpu_matmul``: where large CPU float32
    matmuls of the sparse convolutions run, one of :data:`~clip_seg3d_ros.sparse.conv.CPU_MATMULS` (by a
    readable rule, never a timing; see :func:`~clip_seg3d_ros.sparse.conv.set_cpu_matmul`).
    """

    num_threads: int = 1
    cpu_matmul: str = "auto"


@dataclass
class TrainConfig:
    setting: str = "zero_shot"  # zero_shot | annotation_free
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    @property
    def total_epochs(self) -> int:
        return self.schedule.epochs + self.schedule.self_training_rounds * self.schedule.self_training_epochs

    def to_dict(self) -> dict:
        """Plain dicts, lists and scalars (no tuples): what config.yaml and the checkpoints hold."""
        return json.loads(json.dumps(asdict(self)))


NUMBER_RULES: dict[str, tuple[float, float, str]] = {
    "seed": (0, 2**32 - 1, ""),
    "model.voxel_size": (0.001, 10.0, "metres"),
    "model.intensity_scale": (1e-6, 1e6, ""),
    "model.temperature": (1e-4, 10.0, ""),
    "data.synthetic_seed": (0, 2**32 - 1, ""),
    "data.synthetic_train_scenes": (1, 100_000, "scenes"),
    "data.synthetic_val_scenes": (1, 100_000, "scenes"),
    "data.synthetic_cameras": (1, 16, "cameras"),
    "data.max_range": (0.0, 10_000.0, "metres"),
    "teacher.pseudo_labels.temperature": (1e-4, 10.0, ""),
    "teacher.pseudo_labels.prompt_score_threshold": (0.0, 1.0, ""),
    "teacher.pseudo_labels.confidence_threshold": (0.0, 1.0, ""),
    "loss.class_balance": (0.0, 4.0, ""),
    "loss.semantic_weight": (0.0, 1000.0, ""),
    "loss.semantic_temperature": (1e-4, 10.0, ""),
    "loss.spatial_weight": (0.0, 1000.0, ""),
    "loss.spatial_temperature": (1e-4, 10.0, ""),
    "loss.spatial_max_patches": (1, 1_000_000, "patches"),
    "loss.spatial_min_points": (1, 1_000_000, "points"),
    "schedule.epochs": (0, 100_000, "epochs"),
    "schedule.self_training_rounds": (0, 1000, "rounds"),
    "schedule.self_training_epochs": (1, 100_000, "epochs"),
    "schedule.self_training_top_fraction": (1e-6, 1.0, ""),
    "schedule.self_training_min_score": (0.0, 1.0, ""),
    "schedule.self_training_segment_voxel": (0.0, 100.0, "metres"),
    "schedule.self_training_segment_support": (1e-6, 1.0, ""),
    "schedule.eval_every": (0, 100_000, "epochs"),
    "optim.lr": (1e-9, 10.0, ""),
    "optim.weight_decay": (0.0, 10.0, ""),
    "optim.samples_per_step": (1, 65_536, "sweeps"),
    "optim.min_lr_ratio": (0.0, 1.0, ""),
    "eval.num_bev": (0, 1000, "pictures"),
    "eval.calibration_bias": (-2.0, 2.0, ""),
    "compute.num_threads": (1, 256, "threads"),
}
"""The range of every number of a training config, checked by the settings schema's one rule
(:meth:`clip_seg3d_ros.runtime.settings.Setting.check`: finite, in range): a zero, NaN or inf where a positive
finite number is needed is one line naming the key, before any folder is made. Every other float in the config
(the synthetic teacher's, the augmentation's) must at least be finite."""


def validate(config: TrainConfig) -> TrainConfig:
    """Checks that the types alone cannot express; returns the config."""
    numbers = dict(flat_numbers(config.to_dict()))
    for key, (minimum, maximum, unit) in NUMBER_RULES.items():
        value = numbers[key]
        rule = Setting(name=key, default=type(minimum)(0), description="", unit=unit, minimum=minimum,
                       maximum=maximum)
        try:
            rule.check(float(value) if isinstance(minimum, float) else value)
        except ValueError as error:
            raise ConfigError(str(error).replace("parameter ", "", 1)) from error
    for key, value in numbers.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key!r} must be a finite number, got {value}")
    choices = {"setting": (config.setting, SETTINGS), "data.dataset": (config.data.dataset, DATASETS),
               "teacher.kind": (config.teacher.kind, TEACHERS),
               "compute.cpu_matmul": (config.compute.cpu_matmul, CPU_MATMULS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
    if config.teacher.kind == "synthetic" and config.data.dataset != "synthetic":
        raise ConfigError("teacher.kind: the synthetic teacher only works on the synthetic world; use open_clip")
    if config.teacher.kind == "open_clip" and config.teacher.model_name not in open_clip.list_models():
        raise ConfigError(f"teacher.model_name: {config.teacher.model_name!r} is not an open_clip model "
                          "(e.g. ViT-B-16; open_clip.list_models() has them all)")
    if config.total_epochs < 1:
        raise ConfigError("schedule: the run has no epoch")
    return config


def flat_numbers(tree, prefix: str = ""):
    """(dotted key, value) of every number in a nested dict / list (bools excluded)."""
    yield from ((key, value) for key, value in flat_values(tree, prefix)
                if isinstance(value, int | float) and not isinstance(value, bool))


def flat_values(tree, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested dict / list: ``optim.lr``, ``augment.scale[0]``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flat_values(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from flat_values(value, f"{prefix}[{index}]")
    else:
        yield prefix, tree


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The defaults, then the YAML file at ``path`` (if any), then ``overrides`` ("key.sub=value")."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    return _resolve(lambda: OmegaConf.load(path) if path is not None else OmegaConf.create(), overrides,
                    str(path or "config"))


def _resolve(layer, overrides: list[str] | None, where: str) -> TrainConfig:
    """The defaults, then ``layer()`` (a file's or a saved config), then "key=value" ``overrides``, validated;
    every OmegaConf error becomes a ConfigError naming ``where`` and the key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), layer())
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        refuse_interpolations(OmegaConf.to_container(merged, resolve=False), where)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{where}: {str(error).splitlines()[0]} ({getattr(error, 'full_key', '')})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(error).split())}") from error
    return validate(config)


def refuse_interpolations(tree: dict, where: str) -> None:
    """ConfigError at the first ``${...}`` value: a training config holds plain values.

    An interpolation such as ``${oc.env:DATA_ROOT}`` would make a run depend on the shell it was started from,
    be resolved into config.yaml and the checkpoint (copying whatever the variable held, a secret included), and
    resolved again, against another machine's environment, when the checkpoint is evaluated. Refused in the file,
    in ``--set`` and in a saved config alike; pass the value itself (``--set data.root=$DATA_ROOT`` lets the shell
    do it, visibly)."""
    for key, value in flat_values(tree):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{where}: {key}: interpolations ({value!r}) are not allowed in a training config; "
                              "give the value itself")


# Keys that moved, for configs saved before (checkpoints, run folders): old dotted key -> new one.
MOVED_KEYS = {
    "teacher.synthetic_patch_size": "teacher.synthetic.patch_size",
    "teacher.synthetic_noise_std": "teacher.synthetic.noise_std",
    "teacher.synthetic_blur_sigma": "teacher.synthetic.blur_sigma",
    "teacher.temperature": "teacher.pseudo_labels.temperature",
    "teacher.prompt_score_threshold": "teacher.pseudo_labels.prompt_score_threshold",
    "teacher.confidence_threshold": "teacher.pseudo_labels.confidence_threshold",
}


def config_from_dict(data: dict, overrides: list[str] | None = None) -> TrainConfig:
    """The config saved in a checkpoint or run folder, back as a TrainConfig (plus "key=value" overrides)."""

    def saved_config():
        saved = OmegaConf.create(data)
        for old, new in MOVED_KEYS.items():
            if OmegaConf.select(saved, old) is not None:
                OmegaConf.update(saved, new, OmegaConf.select(saved, old))
                section, key = old.rsplit(".", 1)
                del saved[section][key]
        return saved

    return _resolve(saved_config, overrides, "saved training config")


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    write_text_atomically(path, OmegaConf.to_yaml(OmegaConf.create(config.to_dict())))


__all__ = [
    "AugmentSettings",
    "ComputeSettings",
    "ConfigError",
    "DataSettings",
    "EvalSettings",
    "LossSettings",
    "ModelSettings",
    "OptimSettings",
    "ScheduleSettings",
    "TeacherSettings",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "save_config",
]
