"""The text-embedding classifier shared by the 2D teacher and the 3D network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clip_seg3d_ros.vocabulary import Vocabulary


class TextClassifier(nn.Module):
    """logits = (normalize(f) @ normalize(T).T - calibration_bias * seen) / temperature.

    ``T`` (C, D) are the class text embeddings, so new classes are new text and no retraining. The
    calibration bias (calibrated stacking, Chao et al. 2016) is in cosine-similarity units, so its meaning
    does not depend on the temperature: at zero-shot inference a positive bias counters the network's
    preference for the classes it saw labels of. Embeddings are buffers, not parameters, and are not saved
    in the state dict: the checkpoint's vocabulary is their one home.
    """

    def __init__(self, vocabulary: Vocabulary, temperature: float, calibration_bias: float = 0.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.calibration_bias = calibration_bias
        self.register_buffer("text_embeddings", torch.empty(0), persistent=False)
        self.register_buffer("seen_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        device = self.text_embeddings.device
        self.text_embeddings = F.normalize(vocabulary.text_embeddings, dim=1).to(device)
        self.seen_mask = torch.tensor(vocabulary.seen, dtype=torch.bool, device=device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        text = self.text_embeddings.to(features.dtype)
        similarity = F.normalize(features, dim=1) @ text.T
        if self.calibration_bias:
            similarity = similarity - self.calibration_bias * self.seen_mask.to(similarity.dtype)
        return similarity / self.temperature
