"""An on-disk cache of teacher outputs, so that training epochs after the first never run CLIP again.

One fp16 ``.pt`` file per entry, named by a SHA-256 key that the caller derives from everything the entry
depends on (weights, preprocessing, input bytes). Files are read with ``torch.load(weights_only=True)``: a
cache file can hold tensors only, never code. Writes go to a temporary file that is renamed into place,
so concurrent data-loader workers never see half-written entries.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch


def cache_key(*parts: str | bytes) -> str:
    """SHA-256 hex digest of ``parts``; each part is length-prefixed, so ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class FeatureCache:
    """Tensors stored as fp16 under ``directory/<key[:2]>/<key>.pt`` (two-level: folders stay small)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.pt"

    def load(self, key: str) -> torch.Tensor | None:
        """The stored fp16 tensor, or None when ``key`` has no entry."""
        path = self.path(key)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """Store ``tensor`` as fp16 and return what was stored, so a fresh result equals a later cached one."""
        stored = tensor.detach().to("cpu", torch.float16).contiguous()
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(stored, file)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return stored
