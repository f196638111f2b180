"""Shared fixtures: the real sample frames in ../shared/data (see each folder's SOURCE.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CLIP_SEG3D_SAMPLE_DATA", REPO_ROOT.parent / "shared" / "data"))


def sample_folder(name: str) -> Path:
    folder = DATA_DIR / name
    if not folder.is_dir():
        pytest.skip(f"sample data {folder} is not here (set CLIP_SEG3D_SAMPLE_DATA to the shared/data folder)")
    return folder


@pytest.fixture(scope="session")
def kitti_scan() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The real SemanticKITTI scan: points (N, 4), labels (N,) in 0..19 (0 = unlabelled), class names."""
    folder = sample_folder("semantickitti_spvnas_000000")
    points = np.fromfile(folder / "000000.bin", dtype=np.float32).reshape(-1, 4)
    raw_labels = np.fromfile(folder / "000000.label", dtype=np.uint32) & 0xFFFF  # low 16 bits: semantic id
    config = yaml.safe_load((folder / "semantic-kitti.yaml").read_text())
    lookup = np.zeros(max(config["learning_map"]) + 1, dtype=np.int64)
    for raw, learned in config["learning_map"].items():
        lookup[raw] = learned
    names = [config["labels"][config["learning_map_inv"][i]] for i in range(20)]
    return points, lookup[raw_labels], names


@pytest.fixture(scope="session")
def kitti_crop(kitti_scan) -> np.ndarray:
    """The scan's points within 15 m: enough structure, quick on CPU."""
    points, _, _ = kitti_scan
    return points[np.linalg.norm(points[:, :2], axis=1) < 15.0]


@pytest.fixture()
def small_model():
    """A randomly initialised small network and a 5-class vocabulary (2 unseen), in eval mode."""
    import torch

    from clip_seg3d_ros import Vocabulary
    from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet

    torch.manual_seed(0)
    config = ModelConfig.from_preset("small", embed_dim=32, voxel_size=0.1)
    vocabulary = Vocabulary(
        names=["road", "car", "vegetation", "truck", "motorcycle"],
        text_embeddings=torch.randn(5, 32),
        seen=[True, True, True, False, False],
        prompt_templates=["a photo of a {}."],
    )
    return PointSegmentationNet(config).eval(), vocabulary


def write_random_checkpoint(path: Path, class_names: list[str], seen: list[bool] | None = None, *,
                            text_embeddings=None, embed_dim: int = 16, voxel_size: float = 0.2, seed: int = 0) -> Path:
    """A checkpoint of a randomly initialised small network (what node, replay and evaluator tests load).

    ``text_embeddings``: (C, D) class embeddings (e.g. a teacher's); default random, D = ``embed_dim``.
    """
    import torch

    from clip_seg3d_ros import Checkpoint, Vocabulary, save_checkpoint
    from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet

    torch.manual_seed(seed)
    if text_embeddings is None:
        text_embeddings = torch.randn(len(class_names), embed_dim)
    config = ModelConfig.from_preset("small", embed_dim=text_embeddings.shape[1], voxel_size=voxel_size)
    vocabulary = Vocabulary(list(class_names), text_embeddings, seen=list(seen or []))
    return save_checkpoint(Checkpoint(config, PointSegmentationNet(config).state_dict(), vocabulary), path)


@pytest.fixture(scope="session")
def synthetic_sweep() -> np.ndarray:
    """A small synthetic sweep (128 azimuth steps, about 7,500 points): quick, but sparse far out."""
    from clip_seg3d_ros.synthetic import LidarConfig, SyntheticWorld, WorldConfig

    return SyntheticWorld(WorldConfig(lidar=LidarConfig(azimuth_steps=128))).scene(0).points


@pytest.fixture()
def segmenter(small_model):
    """A Segmenter of the randomly initialised small network (:func:`small_model`)."""
    from clip_seg3d_ros import Segmenter

    return Segmenter(*small_model)
