"""The text-embedding classifier shared by the 2D teacher and the 3D network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clip_seg3d_ros.vocabulary import Vocabulary

CLIP_TEMPERATURE = 0.01
"""CLIP's own softmax temperature (its logit scale is 100), and MaskCLIP's: the default of the 3D head
(:class:`~clip_seg3d_ros.models.network.ModelConfig`), of the 2D pseudo labels and of camera fusion. CLIP's class
texts lie close together, so a larger temperature would leave every class nearly equally likely."""


def dense_text_logits(features: torch.Tensor, text: torch.Tensor,
                      temperature: float = CLIP_TEMPERATURE) -> torch.Tensor:
    """(h * w, C) float32 cosine / temperature between every cell of (D, h, w) dense features (row-major cells)
    and (C, D) class text embeddings: the 2D side's one text classifier (pseudo labels and camera fusion)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if features.ndim != 3 or features.shape[0] != text.shape[1]:
        raise ValueError(f"dense features must be (D={text.shape[1]}, h, w), got {tuple(features.shape)}")
    cells = F.normalize(features.float().flatten(1), dim=0)  # (D, h*w)
    text = F.normalize(text.float(), dim=1).to(cells.device)
    return (text @ cells).T / temperature


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
        return self._logits(F.normalize(features, dim=1) @ text.T)

    def forward_projected(self, hidden: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        """``forward(projection(hidden))`` (float32) without the (N, D) CLIP-space features.

        For inference, where only the logits are wanted. With ``f = [hidden, 1] @ M`` (``M`` the projection's
        weight and bias, (H + 1, D)) and ``M = L @ Q`` (an LQ factorisation in float64 of that small matrix:
        ``Q`` has orthonormal rows), ``f = z @ Q`` with ``z = [hidden, 1] @ L``: so ``|f| = |z|`` and
        ``f @ T.T = z @ (Q @ T.T)``. A sweep's (V, 512) float32 features would be written, normalised (read,
        written) and read again, hundreds of megabytes on a dense scan; here the work is two matmuls with H + 1
        columns.
        """
        weight = projection.weight  # (D, H)
        bias = projection.bias if projection.bias is not None else weight.new_zeros(weight.shape[0])
        q, r = torch.linalg.qr(torch.cat([weight.T, bias[None]]).double().T)  # M.T = q r: L = r.T, Q = q.T
        lower = r.T.float()
        z = torch.addmm(lower[-1], hidden.float(), lower[:-1])  # [hidden, 1] @ L
        dots = z @ (q.T @ self.text_embeddings.double().T).float()
        return self._logits(dots / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12))

    def _logits(self, similarity: torch.Tensor) -> torch.Tensor:
        if self.calibration_bias:
            similarity = similarity - self.calibration_bias * self.seen_mask.to(similarity.dtype)
        return similarity / self.temperature
