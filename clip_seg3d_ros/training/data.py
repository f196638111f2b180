"""From a dataset sweep to what one training step needs: the layout of :class:`TrainingSample` is documented once.

The teacher runs once per sweep (its features are cacheable on disk, see TeacherSettings.cache_dir), its
dense features and labels are mapped to the points through the cameras, and the result is kept in memory
when the data set is small enough (the synthetic world).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clip_seg3d_ros.geometry.camera import project_points, projection_cells
from clip_seg3d_ros.sample import IGNORE_INDEX, DatasetError, Sample
from clip_seg3d_ros.teacher import DenseTeacher, OpenClipTeacher, SyntheticTeacher
from clip_seg3d_ros.teacher.pseudo_labels import dense_pseudo_labels
from clip_seg3d_ros.training.config import AugmentSettings, ConfigError, DataSettings, TeacherSettings, TrainConfig
from clip_seg3d_ros.vocabulary import Vocabulary


@dataclass
class TrainingSample:
    """One sweep, ready for a training step. N points, P teacher feature cells over all cameras.

    - ``points`` (N, 4) float32: x, y, z, intensity (within ``data.max_range``);
    - ``labels`` (N,) int64: the annotations training may use: seen-class ground truth in the zero-shot
      setting (unseen classes already -1), all -1 in the annotation-free setting;
    - ``pseudo_labels`` (N,) int64: the teacher's label of the cell a point falls in, kept only for the
      classes the setting lets pseudo labels teach (unseen / all), -1 elsewhere and outside every camera;
    - ``point_cell`` (N,) int64: the cell each point falls in (-1: no camera sees it); a point seen by two
      cameras takes the cell where the teacher is more confident;
    - ``cell_features`` (P, D) float16: the teacher's dense features (unit rows);
    - ``cell_labels`` (P,) int64: the teacher's own label of every cell over ALL classes (after prompt
      denoising and the confidence threshold), for the 2D class prototypes of MCFA;
    - ``truth`` (N,) int64 or None: the complete ground truth, for evaluation only; training never reads it.
    """

    name: str
    points: np.ndarray
    labels: np.ndarray
    pseudo_labels: np.ndarray
    point_cell: np.ndarray
    cell_features: torch.Tensor
    cell_labels: np.ndarray
    truth: np.ndarray | None


class SyntheticScenes:
    """Scenes ``indices`` of a synthetic world as a sequence of Samples, seen by ``cameras`` 90-degree cameras
    evenly spaced in yaw (the first looks forward)."""

    def __init__(self, seed: int, indices: Sequence[int], cameras: int = 1) -> None:
        from clip_seg3d_ros.synthetic import CameraConfig, SyntheticWorld, WorldConfig  # only needed here

        if cameras < 1:
            raise ValueError(f"data.synthetic_cameras must be at least 1, got {cameras}")
        rig = (CameraConfig(),) if cameras == 1 else tuple(
            CameraConfig(name=f"camera_{k}", yaw_deg=360.0 * k / cameras) for k in range(cameras))
        self.world = SyntheticWorld(WorldConfig(seed=seed, cameras=rig))
        self.indices = list(indices)
        self.class_names = self.world.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.world.scene(self.indices[index])


def build_split(data: DataSettings, split: str, with_images: bool = True) -> Sequence[Sample]:
    """The sweeps of ``split`` ("train" or "val"): a sequence of Samples with a ``class_names`` attribute.

    Only finds the sweeps, which is cheap; a root that is missing or lacks them is a ConfigError.
    """
    names = data.train_split if split == "train" else data.val_split
    if data.dataset == "synthetic":
        start = 0 if split == "train" else data.synthetic_train_scenes
        count = data.synthetic_train_scenes if split == "train" else data.synthetic_val_scenes
        return SyntheticScenes(data.synthetic_seed, range(start, start + count), data.synthetic_cameras)
    if not data.root:
        raise ConfigError(f"data.root: the {data.dataset} data set needs its root folder")
    if not Path(data.root).is_dir():
        raise ConfigError(f"data.root: {data.root} is not a folder")
    scenes = nuscenes_scene_names(names) if data.dataset == "nuscenes" else []
    try:
        if data.dataset == "semantickitti":
            from clip_seg3d_ros.datasets.semantickitti import SemanticKITTI

            return SemanticKITTI(data.root, names, with_images=with_images)
        if data.dataset == "nuscenes":
            from clip_seg3d_ros.datasets.nuscenes import CAMERAS, NuScenes

            return NuScenes(data.root, data.version, scenes=scenes or None, cameras=data.cameras or CAMERAS,
                            with_images=with_images)
        from clip_seg3d_ros.datasets.folder import FolderDataset

        return ConcatSamples([FolderDataset(f"{data.root}/{name}") for name in names] or [FolderDataset(data.root)])
    except (FileNotFoundError, ValueError) as error:  # the data sets' words for a folder without these sweeps
        raise ConfigError(f"data ({data.dataset} {split} split): {error}") from error


def nuscenes_scene_names(names: Sequence[str]) -> list[str]:
    """Scene names; an entry "split:NAME" (e.g. "split:train", "split:val") expands to the official scene
    list of that split, which the nuScenes devkit holds (``pip install nuscenes-devkit``)."""
    scenes = []
    for name in names:
        if not name.startswith("split:"):
            scenes.append(name)
            continue
        try:
            from nuscenes.utils.splits import create_splits_scenes
        except ImportError as error:
            raise ConfigError(f"data split {name!r} needs the nuScenes devkit: pip install nuscenes-devkit") from error
        splits = create_splits_scenes()
        if name[6:] not in splits:
            raise ConfigError(f"unknown nuScenes split {name[6:]!r}; the devkit knows {sorted(splits)}")
        scenes.extend(splits[name[6:]])
    return scenes


class ConcatSamples:
    """Several sample sequences with the same classes, one after the other."""

    def __init__(self, parts: Sequence[Sequence[Sample]]) -> None:
        self.parts = list(parts)
        self.class_names = list(self.parts[0].class_names)
        if any(list(part.class_names) != self.class_names for part in self.parts):
            raise DatasetError("all folders of a split must have the same classes")
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> Sample:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


def build_teacher(settings: TeacherSettings, device: str | torch.device = "cpu") -> DenseTeacher:
    if settings.kind == "synthetic":
        return SyntheticTeacher(settings.synthetic)
    return OpenClipTeacher(settings.model_name, settings.pretrained, device=device, resolution=settings.resolution,
                           cache_dir=settings.cache_dir or None, quick_gelu=settings.quick_gelu)


def class_flags(class_names: Sequence[str], unseen: Sequence[str]) -> np.ndarray:
    """(C,) bool, True for seen classes; an unknown unseen class is a ConfigError listing the known ones."""
    unknown = sorted(set(unseen) - set(class_names))
    if unknown:
        raise ConfigError(f"data.unseen_classes: unknown classes {unknown}; this data set has {list(class_names)}")
    return np.array([name not in unseen for name in class_names])


def training_labels(truth: np.ndarray | None, seen: np.ndarray, setting: str) -> np.ndarray:
    """What training may know of the ground truth: seen classes (zero-shot) or nothing (annotation-free)."""
    if truth is None or setting == "annotation_free":
        return np.full(0 if truth is None else len(truth), IGNORE_INDEX, dtype=np.int64)
    truth = truth.astype(np.int64)
    known = (truth >= 0) & seen[np.maximum(truth, 0)]
    return np.where(known, truth, IGNORE_INDEX)


class SamplePreparer:
    """Turns Samples into TrainingSamples with one teacher: text embeddings once, dense features per sweep."""

    def __init__(self, teacher: DenseTeacher, config: TrainConfig, class_names: Sequence[str]) -> None:
        self.teacher = teacher
        self.config = config
        self.class_names = list(class_names)
        self.seen = class_flags(self.class_names, config.data.unseen_classes)
        self.text_embeddings = teacher.encode_text(self.class_names)
        # Which classes pseudo labels may teach: the unseen ones in the zero-shot setting, all otherwise.
        self.pseudo_allowed = ~self.seen if config.setting == "zero_shot" else np.ones(len(self.seen), dtype=bool)

    def __call__(self, sample: Sample) -> TrainingSample:
        if list(sample.class_names) != self.class_names:
            raise DatasetError(f"sample {sample.name}: classes {sample.class_names} differ from {self.class_names}")
        points, truth = sample.points, sample.labels
        if self.config.data.max_range > 0:
            kept = np.linalg.norm(points[:, :3], axis=1) <= self.config.data.max_range
            points, truth = points[kept], None if truth is None else truth[kept]
        num_points, settings = len(points), self.config.teacher
        labels = training_labels(truth, self.seen, self.config.setting)
        if len(labels) == 0:
            labels = np.full(num_points, IGNORE_INDEX, dtype=np.int64)

        cell_features, cell_labels = [], []
        point_cell = np.full(num_points, IGNORE_INDEX, dtype=np.int64)
        best = np.full(num_points, -np.inf)
        offset = 0
        features = self.teacher.encode_frames(sample.cameras) if sample.cameras else []
        for frame, dense in zip(sample.cameras, features, strict=True):
            cells, confidence = dense_pseudo_labels(dense, self.text_embeddings, None, **asdict(settings.pseudo_labels))
            grid_h, grid_w = cells.shape
            image_h, image_w = frame.image.shape[:2]
            projection = project_points(points[:, :3], frame.camera)
            cell = offset + projection_cells(projection, (image_h, image_w), (grid_h, grid_w))
            score = confidence.numpy().ravel()[cell - offset]
            better = score > best[projection.point_indices]
            point_cell[projection.point_indices[better]] = cell[better]
            best[projection.point_indices[better]] = score[better]
            cell_features.append(dense.flatten(1).T.half())
            cell_labels.append(cells.numpy().ravel())
            offset += grid_h * grid_w

        embed_dim = self.text_embeddings.shape[1]
        cell_features = torch.cat(cell_features) if cell_features else torch.empty(0, embed_dim, dtype=torch.half)
        cell_labels = np.concatenate(cell_labels) if cell_labels else np.empty(0, dtype=np.int64)
        pseudo = np.full(num_points, IGNORE_INDEX, dtype=np.int64)
        visible = point_cell >= 0
        teacher_label = cell_labels[point_cell[visible]]
        allowed = teacher_label >= 0
        allowed[allowed] = self.pseudo_allowed[teacher_label[allowed]]
        pseudo[np.flatnonzero(visible)[allowed]] = teacher_label[allowed]
        return TrainingSample(name=sample.name, points=points.astype(np.float32), labels=labels, pseudo_labels=pseudo,
                              point_cell=point_cell, cell_features=cell_features, cell_labels=cell_labels,
                              truth=None if truth is None else truth.astype(np.int64))


class PreparedSplit:
    """A split's TrainingSamples, prepared on first use and kept in memory when ``cache_in_memory``."""

    def __init__(self, samples: Sequence[Sample], preparer: SamplePreparer, cache_in_memory: bool) -> None:
        self.samples = samples
        self.preparer = preparer
        self.cache: dict[int, TrainingSample] | None = {} if cache_in_memory else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> TrainingSample:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        prepared = self.preparer(self.samples[index])
        if self.cache is not None:
            self.cache[index] = prepared
        return prepared


@dataclass
class RunData:
    """What a run trains and validates on; the benchmark shares one between runs with the same data."""

    train: PreparedSplit
    val: Sequence[Sample]  # with ground truth and a ``class_names`` attribute
    vocabulary: Vocabulary
    clip_model: str  # the teacher, as checkpoints name it


def prepare_data(config: TrainConfig, device: torch.device) -> RunData:
    """The train / validation splits, the teacher and the class vocabulary (CLIP text embeddings).

    Cheap before expensive: the splits only find the sweeps and the unseen classes are checked against the
    data set's, so a wrong data root or class name is reported before CLIP loads.
    """
    train_samples = build_split(config.data, "train")
    val_samples = build_split(config.data, "val")  # with the images: their cameras split the metrics by view
    class_flags(train_samples.class_names, config.data.unseen_classes)
    teacher = build_teacher(config.teacher, device)
    preparer = SamplePreparer(teacher, config, train_samples.class_names)
    vocabulary = Vocabulary(
        names=preparer.class_names,
        text_embeddings=preparer.text_embeddings,
        seen=list(preparer.seen) if config.setting == "zero_shot" else [True] * len(preparer.seen),
        prompt_templates=list(getattr(teacher, "templates", [])),
    )
    clip_model = "synthetic" if config.teacher.kind == "synthetic" else f"{config.teacher.model_name}/" \
                                                                         f"{config.teacher.pretrained}"
    return RunData(train=PreparedSplit(train_samples, preparer, config.data.cache_in_memory), val=val_samples,
                   vocabulary=vocabulary, clip_model=clip_model)


def augment_points(points: np.ndarray, settings: AugmentSettings, rng: np.random.Generator) -> np.ndarray:
    """Random rotation about z, mirror and scale of x, y, z (intensity unchanged); returns a new array."""
    xyz = points[:, :3].astype(np.float64)
    transform = np.eye(3)
    if settings.rotate:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        transform = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    if settings.flip:
        transform = transform @ np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0])
    transform = transform * rng.uniform(*settings.scale)
    augmented = points.astype(np.float32, copy=True)
    augmented[:, :3] = xyz @ transform.T
    return augmented
