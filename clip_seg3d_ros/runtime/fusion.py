"""Camera fusion: for the points a camera sees, mix the 3D network's class probabilities with CLIP's 2D ones.

The 3D network is a student of CLIP; where a camera sees a point, the teacher itself can be asked too. For
such a point, with p3d its 3D class probabilities and p2d the 2D ones:

    p = (1 - w) * p3d + w * p2d,    w = ``weight`` in [0, 1]

and its label and score are the argmax and max of p. w = 0 is the 3D network alone, w = 1 the 2D teacher
alone on the points it sees. Points no camera sees keep their 3D result. OpenScene (Peng et al., CVPR 2023)
reports that its 2D-3D ensemble beats both of its parts, the 2D features doing better on small objects and
the 3D ones on large, geometrically distinct surfaces. (OpenScene picks, per point, whichever of its 2D and
3D features is more confident; a weighted mean of probabilities is our choice: one knob, smooth between the
two extremes. The default weight, 0.5, is ours, not a published value.)

The 2D probabilities: the teacher's dense features (``encode_frames``: (D, h, w) per frame, unit along D)
against the SAME text embeddings as the 3D classifier (the segmenter's vocabulary), as cosine / temperature
with CLIP's own temperature (:data:`~clip_seg3d_ros.models.classifier.CLIP_TEMPERATURE`, as the pseudo labels;
:func:`~clip_seg3d_ros.models.classifier.dense_text_logits`), softmax over the classes. A point takes the
feature cell its pixel falls in (:func:`~clip_seg3d_ros.geometry.camera.projection_cells`, as training does).
A point seen by several cameras takes the mean of their 2D probabilities. The 3D classifier's calibration
bias does not apply to the 2D side: CLIP saw no 3D labels, so it has no bias towards the seen classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from clip_seg3d_ros.geometry.camera import project_points, projection_cells
from clip_seg3d_ros.models.classifier import CLIP_TEMPERATURE, dense_text_logits
from clip_seg3d_ros.runtime.settings import check_unit_interval
from clip_seg3d_ros.sample import CameraFrame
from clip_seg3d_ros.vocabulary import Vocabulary

if TYPE_CHECKING:  # the teacher package imports open_clip, which the 3D-only path never needs
    from clip_seg3d_ros.teacher.base import DenseTeacher

DEFAULT_FUSION_WEIGHT = 0.5


def fuse_probabilities(probabilities_3d: torch.Tensor, probabilities_2d: torch.Tensor, weight: float) -> torch.Tensor:
    """(M, C) ``(1 - weight) * probabilities_3d + weight * probabilities_2d`` (on the 3D tensor's device)."""
    if probabilities_3d.shape != probabilities_2d.shape:
        raise ValueError(f"3D probabilities {tuple(probabilities_3d.shape)} and 2D {tuple(probabilities_2d.shape)}")
    probabilities_2d = probabilities_2d.to(probabilities_3d.device, probabilities_3d.dtype)
    return torch.lerp(probabilities_3d, probabilities_2d, float(weight))


class CameraFusion:
    """The 2D side of fusion: a dense teacher and the class text embeddings it is compared with.

    - ``teacher``: a :class:`~clip_seg3d_ros.teacher.base.DenseTeacher` (``OpenClipTeacher`` on real images;
      ``SyntheticTeacher`` in tests on the synthetic world). Its embedding dimension must equal the
      vocabulary's: the text embeddings are the teacher's own, so both sides live in one space.
    - ``vocabulary``: the classes, normally the segmenter's (:class:`~clip_seg3d_ros.runtime.runtime.SegmentRuntime`
      keeps the two in step when the vocabulary changes at runtime).
    - ``weight``: w above; ``temperature``: of the 2D softmax; ``min_depth``: metres, nearer points are not
      projected (as :func:`~clip_seg3d_ros.geometry.camera.project_points`).
    """

    def __init__(
        self,
        teacher: DenseTeacher,
        vocabulary: Vocabulary,
        *,
        weight: float = DEFAULT_FUSION_WEIGHT,
        temperature: float = CLIP_TEMPERATURE,
        min_depth: float = 0.1,
    ) -> None:
        if temperature <= 0:  # refused here, not at the first sweep
            raise ValueError(f"fusion temperature must be positive, got {temperature}")
        self.teacher = teacher
        self.temperature = float(temperature)
        self.min_depth = float(min_depth)
        self.weight = weight
        self.set_vocabulary(vocabulary)

    @property
    def weight(self) -> float:
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        self._weight = check_unit_interval("fusion_weight", value)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if vocabulary.embed_dim != self.teacher.embed_dim:
            raise ValueError(
                f"the vocabulary's text embeddings have dimension {vocabulary.embed_dim}, the camera teacher's "
                f"features {self.teacher.embed_dim}: fusion needs text embeddings of the teacher's own CLIP model"
            )
        self.vocabulary = vocabulary
        self._text = F.normalize(vocabulary.text_embeddings.float(), dim=1)

    def cell_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(h * w, C) class probabilities of every cell of one frame's (D, h, w) features (row-major cells)."""
        return torch.softmax(dense_text_logits(features, self._text, self.temperature), dim=1)

    def image_probabilities(self, xyz: np.ndarray, frames: Sequence[CameraFrame]) -> tuple[np.ndarray, torch.Tensor]:
        """The points of ``xyz`` (N, 3) that a camera sees, and their 2D class probabilities.

        Returns (M,) sorted point indices and (M, C) float32 probabilities on the CPU, averaged over the
        cameras that see each point. Non-finite points are never seen. Frames whose camera sees no point are
        not encoded at all (the teacher is the expensive part).
        """
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] < 3:
            raise ValueError(f"xyz must be (N, >=3), got {xyz.shape}")
        num_classes = len(self.vocabulary)
        projections = [project_points(xyz[:, :3], frame.camera, self.min_depth) for frame in frames]
        seeing = [index for index, projection in enumerate(projections) if len(projection.point_indices)]
        if not seeing:
            return np.empty(0, dtype=np.int64), torch.empty(0, num_classes)
        features = self.teacher.encode_frames([frames[index] for index in seeing])
        if len(features) != len(seeing):
            raise ValueError(f"the teacher returned {len(features)} feature maps for {len(seeing)} frames")

        total = torch.zeros(len(xyz), num_classes)
        views = torch.zeros(len(xyz))
        for index, frame_features in zip(seeing, features, strict=True):
            camera, projection = frames[index].camera, projections[index]
            probabilities = self.cell_probabilities(frame_features).cpu()
            height, width = frame_features.shape[1:]
            cell = projection_cells(projection, (camera.height, camera.width), (height, width))
            points = torch.from_numpy(projection.point_indices)
            total.index_add_(0, points, probabilities[torch.from_numpy(cell)])
            views.index_add_(0, points, torch.ones(len(points)))
        seen = torch.nonzero(views > 0).squeeze(1)
        return seen.numpy(), total[seen] / views[seen, None]

    def fuse(self, probabilities_3d: torch.Tensor, probabilities_2d: torch.Tensor) -> torch.Tensor:
        """:func:`fuse_probabilities` with this fusion's weight."""
        return fuse_probabilities(probabilities_3d, probabilities_2d, self.weight)
