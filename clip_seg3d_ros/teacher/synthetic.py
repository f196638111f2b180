"""SyntheticTeacher: a SIMULATION of a dense CLIP teacher, for the synthetic world only.

It is not CLIP and has learned nothing. It reads the class-id image that the synthetic world renders along
with each camera image (:mod:`clip_seg3d_ros.synthetic`) and turns it into CLIP-like dense features, so
that the distillation pipeline can be run and tested end to end without CLIP weights or real data. It can
say nothing about a real image (it never looks at pixels) and must never stand in for CLIP on real data.

What it imitates, each with a knob in :class:`SyntheticTeacherConfig`:

- a joint embedding space: one unit text vector per class name, deterministic by seed; like CLIP's, all
  class embeddings are similar to each other (``class_similarity``), confusable pairs more so;
- coarse dense features: one vector per ``patch_size`` patch, the area-weighted mix of the embeddings of the
  classes in the patch (sky / unlabelled pixels have a background embedding of their own), blurred over
  neighbouring patches (``blur_sigma``), so small objects fade into their surroundings;
- CLIP's semantic confusions: in a region confused for a pair (a, b) (probability ``p`` per region of
  ``confusion_block`` x ``confusion_block`` patches), a fraction ``confusion_strength`` of a's area counts as
  b and the other way round; with the default strength above 1/2 the patch's argmax flips to the partner;
- noise: gaussian, ``noise_std`` times a random unit vector in expectation, before the final L2 norm.

The same label image always gives the same features (the noise is seeded by the seed and the image), as a
real frozen teacher would.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clip_seg3d_ros.geometry.camera import pixel_cells
from clip_seg3d_ros.sample import IGNORE_INDEX, CameraFrame
from clip_seg3d_ros.synthetic.classes import CLASS_NAMES

DEFAULT_CONFUSIONS: tuple[tuple[str, str, float], ...] = (
    ("car", "truck", 0.1),
    ("bicycle", "motorcycle", 0.15),
    ("person", "bicyclist", 0.15),
    ("pole", "traffic-sign", 0.1),
)


@dataclass(frozen=True)
class SyntheticTeacherConfig:
    """Knobs of the simulation; the defaults give CLIP-like scores, not CLIP's accuracy on any dataset.

    - ``embed_dim``: D (512 as ViT-B/16); at least 2 + classes + confusion pairs, for orthogonal components.
    - ``patch_size``: pixels per feature cell side; the grid is round(H / patch) x round(W / patch). 8 gives the
      synthetic 640-px, 90-degree camera ~1.1 degrees per cell, as ViT-B/16's 16-px patches on SemanticKITTI's
      native 1241-px images (~1.05 degrees; nuScenes' 1600-px images: ~0.7). 16 px here would be a teacher
      twice as coarse as CLIP on real images, which hides most small objects (signs) from it.
    - ``class_similarity`` 0.8: cosine between two unrelated class embeddings (CLIP's class-name embeddings
      are all alike); ``partner_similarity`` 0.9: between the two classes of a confusion pair.
    - ``confusions``: (class a, class b, probability) per pair; ``confusion_strength`` 0.7: the share of the
      area that changes sides in a confused region; ``confusion_block`` 4: confusion regions are blocks of
      4 x 4 patches (about one object), 1 makes every patch independent.
    - ``blur_sigma`` 0.5: gaussian blur over patches (standard deviation in patches; 0: none). With 0.5 a
      patch keeps more than half of its own weight, so a patch of one class keeps its argmax.
    - ``noise_std`` 2.0: the expected norm of the noise added to the (unit-norm) mix. It sets the cosine
      between a clean patch's feature and its class text to about 1 / sqrt(1 + noise_std^2) (0.45 here, unrelated
      classes about 0.8 of that). At D = 512 it rarely flips the argmax, errors come from confusions and blur; its
      component along a class difference shrinks as 1 / sqrt(D), so at small D (e.g. 64) it flips many patches.
    - ``class_names``: what the label images' indices 0..C-1 mean (the synthetic world's classes).
    """

    embed_dim: int = 512
    patch_size: int = 8
    seed: int = 0
    class_similarity: float = 0.8
    partner_similarity: float = 0.9
    confusions: tuple[tuple[str, str, float], ...] = DEFAULT_CONFUSIONS
    confusion_strength: float = 0.7
    confusion_block: int = 4
    blur_sigma: float = 0.5
    noise_std: float = 2.0
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        # A config read back from YAML (a training config, a checkpoint) has lists where these have tuples:
        # tuples again, so that it equals the config it was saved from.
        object.__setattr__(self, "confusions", tuple(tuple(confusion) for confusion in self.confusions))
        object.__setattr__(self, "class_names", tuple(self.class_names))


class SyntheticTeacher:
    """A :class:`~clip_seg3d_ros.teacher.base.DenseTeacher` for synthetic scenes: see the module docstring.

    ``encode_frames`` takes what the synthetic world gives: :class:`CameraFrame` s, whose ``label_image`` it
    reads; ``encode_label_images`` takes (H, W) integer class-id images. An RGB image is refused, because
    this teacher cannot see pixels.
    """

    def __init__(self, config: SyntheticTeacherConfig | None = None) -> None:
        self.config = config or SyntheticTeacherConfig()
        self._check(self.config)
        self.embed_dim = self.config.embed_dim
        self.class_names = list(self.config.class_names)
        self._pairs = [(self.class_names.index(a), self.class_names.index(b), p) for a, b, p in self.config.confusions]
        # Row 0: the background (label -1); row 1 + c: class c. So a label image plus one indexes this table.
        self._table = self._embeddings()

    @staticmethod
    def _check(config: SyntheticTeacherConfig) -> None:
        names = list(config.class_names)
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"class names must be unique and not empty, got {names}")
        needed = 2 + len(names) + len(config.confusions)
        if config.embed_dim < needed:
            raise ValueError(f"embed_dim must be at least {needed} for {len(names)} classes, got {config.embed_dim}")
        if not 0.0 <= config.class_similarity <= config.partner_similarity < 1.0:
            raise ValueError("need 0 <= class_similarity <= partner_similarity < 1, got "
                             f"{config.class_similarity} and {config.partner_similarity}")
        for a, b, probability in config.confusions:
            if a not in names or b not in names or a == b:
                raise ValueError(f"confusion ({a!r}, {b!r}) needs two different known classes: {names}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"confusion ({a!r}, {b!r}): probability must be in [0, 1], got {probability}")
        if config.patch_size < 1 or config.confusion_block < 1:
            raise ValueError("patch_size and confusion_block must be at least 1")
        if not 0.0 <= config.confusion_strength <= 1.0 or config.blur_sigma < 0 or config.noise_std < 0:
            raise ValueError("need confusion_strength in [0, 1], blur_sigma >= 0 and noise_std >= 0")

    def _embeddings(self) -> np.ndarray:
        """(1 + C, D) unit rows built from orthonormal components, which fixes their cosines exactly:
        a shared one (weight^2 = class_similarity), one per confusion pair (shared by the pair) and one per row.
        """
        config, classes = self.config, len(self.class_names)
        rng = np.random.default_rng(config.seed)
        basis, _ = np.linalg.qr(rng.standard_normal((config.embed_dim, 2 + classes + len(self._pairs))))
        shared, unique, pair_parts = basis[:, 0], basis[:, 1 : 2 + classes].T, basis[:, 2 + classes :].T
        pairs_of = [[j for j, (a, b, _) in enumerate(self._pairs) if c in (a, b)] for c in range(classes)]
        rows = [np.sqrt(config.class_similarity) * shared + np.sqrt(1 - config.class_similarity) * unique[0]]
        for c in range(classes):
            row = np.sqrt(config.class_similarity) * shared
            if pairs_of[c]:
                # A class in k pairs shares 1/k of the pair weight with each partner.
                extra = (config.partner_similarity - config.class_similarity) / len(pairs_of[c])
                row = row + sum(np.sqrt(extra) * pair_parts[j] for j in pairs_of[c])
                row = row + np.sqrt(1 - config.partner_similarity) * unique[1 + c]
            else:
                row = row + np.sqrt(1 - config.class_similarity) * unique[1 + c]
            rows.append(row)
        table = np.stack(rows)
        return table / np.linalg.norm(table, axis=1, keepdims=True)

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """(C, D) float32 unit rows, one per name; an unknown name is a ValueError that lists the known ones."""
        names = list(class_names)
        if not names:
            raise ValueError("encode_text needs at least one class name")
        unknown = [name for name in names if name not in self.class_names]
        if unknown:
            raise ValueError(f"unknown class names {unknown}; the synthetic teacher knows {self.class_names}")
        rows = [1 + self.class_names.index(name) for name in names]
        return torch.from_numpy(self._table[rows]).float()

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) feature cells of an H x W image."""
        return max(1, round(height / self.config.patch_size)), max(1, round(width / self.config.patch_size))

    def encode_frames(self, frames: Sequence[CameraFrame]) -> list[torch.Tensor]:
        """The DenseTeacher call: features of each frame's ``label_image`` (the synthetic world renders one)."""
        for index, frame in enumerate(frames):
            if frame.label_image is None:
                raise ValueError(f"frame {index}: camera {frame.camera.name} has no label_image; the synthetic "
                                 "teacher needs the class-id image the synthetic world renders")
        return self.encode_label_images([frame.label_image for frame in frames])

    def encode_label_images(self, label_images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One (D, h, w) float32 tensor per (H, W) class-id image (-1: sky / nothing), unit-norm along D."""
        return [self._encode(index, np.asarray(labels)) for index, labels in enumerate(label_images)]

    def _encode(self, index: int, labels: np.ndarray) -> torch.Tensor:
        config, classes = self.config, len(self.class_names)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"image {index}: expected an (H, W) integer class-id image, got {labels.shape} "
                             f"{labels.dtype}; the synthetic teacher does not see RGB images, pass the CameraFrame "
                             "or its label_image")
        labels = labels.astype(np.int64)
        if labels.size == 0 or labels.min() < IGNORE_INDEX or labels.max() >= classes:
            raise ValueError(f"image {index}: class ids must be in [{IGNORE_INDEX}, {classes - 1}]")
        height, width = labels.shape
        rng = np.random.default_rng([config.seed, zlib.crc32(labels.tobytes()), height, width])

        # Share of each class (column 0: background) in each cell; cell (i, j) holds rows [i H/h, (i+1) H/h).
        h, w = self.patch_grid(height, width)
        cell = pixel_cells(np.arange(height)[:, None], np.arange(width)[None, :], (height, width), (h, w))
        counts = np.bincount((cell * (classes + 1) + labels + 1).ravel(), minlength=h * w * (classes + 1))
        weights = counts.reshape(h * w, classes + 1).astype(np.float64)
        weights /= weights.sum(axis=1, keepdims=True)

        block, strength = config.confusion_block, config.confusion_strength
        for a, b, probability in self._pairs:
            coarse = rng.random((-(-h // block), -(-w // block)))
            confused = (np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:h, :w] < probability).ravel()
            share_a, share_b = weights[confused, 1 + a], weights[confused, 1 + b]
            weights[confused, 1 + a] = (1 - strength) * share_a + strength * share_b
            weights[confused, 1 + b] = (1 - strength) * share_b + strength * share_a

        features = _blur((weights @ self._table).reshape(h, w, -1), config.blur_sigma)
        features += config.noise_std / np.sqrt(self.embed_dim) * rng.standard_normal(features.shape)
        features /= np.linalg.norm(features, axis=2, keepdims=True)
        return torch.from_numpy(np.ascontiguousarray(features.transpose(2, 0, 1))).float()


def _blur(grid: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of an (h, w, D) grid over h and w, repeating the edge cells beyond the border."""
    if sigma == 0:
        return grid
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        padding = [(0, 0)] * 3
        padding[axis] = (radius, radius)
        padded = np.pad(grid, padding, mode="edge")
        size = grid.shape[axis]
        grid = sum(tap * np.take(padded, np.arange(k, k + size), axis=axis) for k, tap in enumerate(taps))
    return grid
