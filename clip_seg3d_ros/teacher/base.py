"""What a dense vision-language teacher offers: text and image in one embedding space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from clip_seg3d_ros.sample import CameraFrame


class DenseTeacher(Protocol):
    """A 2D teacher for distillation: CLIP (:class:`OpenClipTeacher`) or its simulation (:class:`SyntheticTeacher`).

    - ``embed_dim``: D, the joint embedding dimension;
    - ``encode_text(names)``: (C, D) float32 unit rows, one per class name;
    - ``encode_frames(frames)``: one (D, h, w) float32 tensor per camera frame (image sizes may differ),
      unit-norm along D, on the teacher's patch grid (cell (i, j) covers rows [i H/h, (i+1) H/h) and columns
      [j W/w, (j+1) W/w) of its image: :func:`clip_seg3d_ros.geometry.camera.pixel_cells`). CLIP reads
      ``frame.image``; the simulation reads ``frame.label_image``.
    """

    embed_dim: int

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor: ...

    def encode_frames(self, frames: Sequence[CameraFrame]) -> list[torch.Tensor]: ...

